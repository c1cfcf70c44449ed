//! A sink task that dies is restarted and shown, never silent: a sink that
//! panics inside the daemon (real fixture camera, real HTTP status and
//! metrics on 127.0.0.1), and one that panics on every still (on tokio's
//! paused clock, to check the restart backoff exactly).

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::*;
use futures::future::BoxFuture;
use rtsnap::config::{DirSinkConfig, HttpConfig};
use rtsnap::sink::{supervise_sink, Sink, SinkError, SinkExit, SinkLimits, SinkState, SinkStatus};
use rtsnap::{CameraConfig, Config, Daemon, Snapshot, Store};
use serde_json::Value;

/// Panics on its first `panics` writes, then records what it is given.
struct Panicky {
    panics: u32,
    calls: AtomicU32,
    stored: Mutex<Vec<(String, u64)>>,
}

impl Panicky {
    fn new(panics: u32) -> Arc<Panicky> {
        Arc::new(Panicky {
            panics,
            calls: AtomicU32::new(0),
            stored: Mutex::new(Vec::new()),
        })
    }
}

impl Sink for Panicky {
    fn name(&self) -> &str {
        "panicky"
    }

    fn write<'a>(&'a self, batch: &'a [Snapshot]) -> BoxFuture<'a, Vec<(Arc<str>, SinkError)>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.panics {
                panic!("panicky sink: write number {n} fails");
            }
            let mut stored = self.stored.lock().unwrap();
            stored.extend(batch.iter().map(|s| (s.camera.to_string(), s.seq)));
            Vec::new()
        })
    }
}

async fn get_text(url: &str) -> String {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn sink<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no sink {name} in {doc}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_sink_is_restarted_and_shown_while_other_sinks_go_on() {
    let server = serve(&[SUB]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::with_cameras(vec![CameraConfig {
        name: "porch".into(),
        url: server.url("/ch1").parse().unwrap(),
        credentials: None,
        interval: Duration::from_secs(1),
        transport: Default::default(),
    }]);
    config.sinks.dir = Some(DirSinkConfig {
        path: dir.path().to_owned(),
        history: 0,
    });
    config.http = Some(HttpConfig::open("127.0.0.1:0".parse().unwrap()));
    // Two deaths: restarts after 1 s, then 2 s.
    let panicky = Panicky::new(2);
    let d = Daemon::start_with_sinks(config, vec![panicky.clone() as Arc<dyn Sink>]);
    let base = format!("http://{}", d.http_addr().unwrap());

    // Between the deaths it shows as restarting, with when and why.
    let doc = {
        let mut seen = None;
        for _ in 0..400 {
            let doc: Value =
                serde_json::from_str(&get_text(&format!("{base}/api/status")).await).unwrap();
            if sink(&doc, "panicky")["state"] == "restarting" {
                seen = Some(doc);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen.expect("the panicky sink never showed as restarting within 20 s")
    };
    let p = sink(&doc, "panicky");
    assert!(p["restarts"].as_u64().unwrap() >= 1, "{p}");
    assert_eq!(p["last_restart"]["cause"], "panicked", "{p}");
    assert!(
        p["last_restart"]["detail"]
            .as_str()
            .unwrap()
            .contains("panicky sink: write number"),
        "{p}"
    );
    let restart_in = p["restart_at_ms"].as_i64().unwrap() - doc["now_ms"].as_i64().unwrap();
    assert!((0..=2_000).contains(&restart_in), "{p}");

    // Then it comes back and stores the camera's newest still.
    wait_for(
        Duration::from_secs(20),
        "the sink to store after restarts",
        || (!panicky.stored.lock().unwrap().is_empty()).then_some(()),
    )
    .await;
    let st: SinkStatus = d
        .sink_status()
        .into_iter()
        .find(|s| s.name == "panicky")
        .unwrap();
    assert_eq!(st.restarts, 2, "{st:?}");
    assert_eq!(st.state, SinkState::Running);
    assert!(matches!(
        st.last_restart.as_ref().unwrap().cause,
        SinkExit::Panicked(ref m) if m == "panicky sink: write number 1 fails"
    ));
    let metrics = get_text(&format!("{base}/metrics")).await;
    assert!(
        metrics.contains("rtsnap_sink_restarts_total{sink=\"panicky\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rtsnap_sink_restarts_total{sink=\"dir\"} 0"),
        "{metrics}"
    );
    // The dir sink never noticed.
    let dir_status = &d.sink_status()[0];
    assert_eq!(dir_status.name, "dir");
    assert!(dir_status.writes >= 2, "{dir_status:?}");
    assert!(dir.path().join("porch.jpg").exists());
    d.shutdown().await;
}

/// A sink that panics on every still is restarted after 1, 2, 4 ... 60 s,
/// never in a loop; it is stopped cleanly at shutdown even while waiting.
#[tokio::test(start_paused = true)]
async fn a_sink_that_always_panics_backs_off_up_to_a_minute() {
    let panicky = Panicky::new(u32::MAX);
    let store = Store::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (status_tx, status) = tokio::sync::watch::channel(SinkStatus::default());
    let task = tokio::spawn(supervise_sink(
        panicky.clone(),
        store.clone(),
        stop_rx,
        status_tx,
        SinkLimits::default(),
    ));
    store.publish(Snapshot {
        camera: "a".into(),
        captured_at: SystemTime::now(),
        width: 1,
        height: 1,
        jpeg: bytes::Bytes::from_static(b"x"),
        seq: 1,
        fingerprint: None,
        interval: Duration::from_secs(5),
    });
    // Deaths at 0, 1, 3, 7, 15, 31, 63, 123 s (waits 1, 2, ... 32, 60, 60).
    tokio::time::sleep(Duration::from_secs(150)).await;
    let st = status.borrow().clone();
    assert_eq!(panicky.calls.load(Ordering::SeqCst), 8, "{st:?}");
    assert_eq!(st.restarts, 8);
    match st.state {
        SinkState::Restarting { until } => {
            let left = until.duration_since(SystemTime::now()).unwrap_or_default();
            assert!(left <= Duration::from_secs(60), "{left:?}");
        }
        other => panic!("{other:?}"),
    }
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("stops at once while waiting to restart")
        .unwrap();
    assert_eq!(status.borrow().state, SinkState::Stopped);
    assert_eq!(panicky.calls.load(Ordering::SeqCst), 8);
}
