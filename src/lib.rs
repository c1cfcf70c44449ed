//! # rtsnap
//!
//! JPEG stills from RTSP cameras and NVRs, made in process from keyframes only.
//!
//! The data path reads top to bottom as a pipeline, one module per stage:
//!
//! ```text
//!  source      one task per camera: persistent retina session, TCP interleaved,
//!    |         keeps the newest complete IDR access unit, reconnects forever
//!  keyframe    checks the access unit (SPS, PPS, IDR slices; interlaced? full range?)
//!    |
//!  decode      shared pool of openh264 decoders, only when a still is due
//!    |
//!  encode      YUV 4:2:0 planes straight to JPEG, range-expanded
//!    |
//!  Store       newest Snapshot per camera in memory (latest wins)
//!    |
//!  sink        dir (atomic <camera>.jpg + history), your own Sink
//! ```
//!
//! Embedding it takes a [`Config`] and a tokio runtime:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rtsnap::{CameraConfig, Config, Daemon};
//! let cam = CameraConfig {
//!     name: "porch".into(),
//!     url: "rtsp://192.168.1.20:554/unicast/c1/s0/live".parse()?,
//!     credentials: None,
//!     interval: std::time::Duration::from_secs(5),
//!     transport: Default::default(),
//! };
//! let daemon = Daemon::start(Config::with_cameras(vec![cam]));
//! let mut stills = daemon.store().subscribe();
//! for s in stills.next().await {
//!     println!("{}: {}x{}, {} bytes", s.camera, s.width, s.height, s.jpeg.len());
//! }
//! daemon.shutdown().await;
//! # Ok(()) }
//! ```

pub mod config;
pub mod daemon;
pub mod decode;
pub mod encode;
#[cfg(feature = "fixture")]
pub mod fixture;
pub mod http;
pub mod keyframe;
pub mod pipeline;
pub mod probe;
pub mod redact;
pub mod sink;
pub mod snap;
mod snapshot;
pub mod source;
mod store;

pub use config::{
    CameraConfig, Config, ConfigError, Credentials, HttpConfig, RtspTransport, Secret,
};
pub use daemon::Daemon;
pub use snapshot::Snapshot;
pub use source::{CameraState, CameraStatus};
pub use store::{Store, Subscription};

/// Resolves once the shutdown flag is set (or its sender is gone).
pub(crate) async fn stopping(rx: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it right here.
    let _ = rx.wait_for(|&s| s).await.is_ok();
}
