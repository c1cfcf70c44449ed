//! Embedding rtsnap in another program: open two cameras, receive their
//! stills, print their size and age.
//!
//! ```text
//! cargo run --example embed -- rtsp://127.0.0.1:8554/cam1 rtsp://127.0.0.1:8554/cam2
//! ```
//!
//! Without arguments it starts the built-in fixture server and uses two of
//! its channels, so it runs anywhere.

use std::time::Duration;

use rtsnap::{CameraConfig, Config, Daemon};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut urls: Vec<String> = std::env::args().skip(1).collect();
    // Keep the fixture server alive as long as the daemon runs.
    let _server = if urls.is_empty() {
        let server =
            rtsnap::fixture::demo::start_demo_server(&rtsnap::fixture::default_dir(), 2).await?;
        urls = (1..=2)
            .map(|c| {
                server.url(
                    &rtsnap::fixture::demo::DEMO_PATH_TEMPLATE.replace("{channel}", &c.to_string()),
                )
            })
            .collect();
        Some(server)
    } else {
        None
    };

    let cameras = urls
        .iter()
        .enumerate()
        .map(|(i, u)| {
            Ok(CameraConfig {
                name: format!("cam{}", i + 1),
                url: u.parse()?,
                credentials: None,
                interval: Duration::from_secs(2),
                transport: Default::default(),
            })
        })
        .collect::<Result<Vec<_>, url::ParseError>>()?;
    let wanted = cameras.len() * 2;
    let daemon = Daemon::start(Config::with_cameras(cameras));

    // Each `next()` returns the newest still of every camera that has a new
    // one; slow consumers skip stills rather than queue them.
    let mut stills = daemon.store().subscribe();
    let mut seen = 0;
    while seen < wanted {
        let batch = tokio::time::timeout(Duration::from_secs(20), stills.next()).await?;
        for s in batch {
            let img = s.to_rgb()?;
            println!(
                "{}: still #{} {}x{} ({} JPEG bytes, first pixel {:?}), {} ms old",
                s.camera,
                s.seq,
                s.width,
                s.height,
                s.jpeg.len(),
                img.get_pixel(0, 0).0,
                s.age().as_millis()
            );
            seen += 1;
        }
    }
    daemon.shutdown().await;
    Ok(())
}
