//! The cloud path end to end, offline: 8 fixture cameras -> rtsnap's KV sink
//! -> a fake Cloudflare REST API that stores into a real (miniflare/workerd)
//! KV namespace -> the Worker in `worker/` -> headless Chromium, which must
//! show 8 loaded stills. The screenshot is kept in
//! `target/test-artifacts/cloud-viewer.png`.
//!
//! Needs `node` with `worker/node_modules` (`cd worker && npm ci`) and
//! Debian's `chromium`; scripts/test installs both. Outside CI a missing
//! one skips the test with a message; in CI it fails.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use rtsnap::config::KvSinkConfig;
use rtsnap::{CameraConfig, Config, Daemon, Secret};

const ACCOUNT: &str = "0123456789abcdef0123456789abcdef";
const NAMESPACE: &str = "fedcba9876543210fedcba9876543210";
const TOKEN: &str = "e2e-token";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn prerequisites() -> bool {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let modules = root().join("worker/node_modules/miniflare").exists();
    let chromium = Command::new("chromium")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if node && modules && chromium {
        return true;
    }
    let why = format!("node {node}, worker/node_modules {modules}, chromium {chromium}");
    if std::env::var_os("CI").is_some() {
        panic!("the cloud end-to-end test must run in CI: {why}");
    }
    eprintln!("skipping: {why} (run `cd worker && npm ci` and apt-get install chromium)");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_stills_reach_the_browser_through_kv_and_the_worker() {
    if !prerequisites() {
        return;
    }
    let mut api = Command::new("node")
        .arg(root().join("worker/test/fake-cf-api.mjs"))
        .args([
            "--port",
            "0",
            "--worker-port",
            "0",
            "--account",
            ACCOUNT,
            "--namespace",
            NAMESPACE,
        ])
        .args(["--token", TOKEN, "--exit-on-stdin-eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = api.stdout.take().unwrap();
    let api = Killed(api);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut api_base = None;
    let mut worker = None;
    while api_base.is_none() || worker.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("fake API did not start in 30 s");
        if let Some(u) = line.strip_prefix("READY ") {
            api_base = Some(u.trim().to_owned());
        } else if let Some(u) = line.strip_prefix("WORKER ") {
            worker = Some(u.trim().trim_end_matches('/').to_owned());
        }
    }
    let (api_base, worker) = (api_base.unwrap(), worker.unwrap());

    let server = serve(&[SUB; 8]).await;
    let cams = (1..=8)
        .map(|i| CameraConfig {
            name: format!("cam{i}"),
            url: server.url(&format!("/ch{i}")).parse().unwrap(),
            credentials: None,
            interval: Duration::from_secs(2),
            transport: Default::default(),
        })
        .collect();
    let mut config = Config::with_cameras(cams);
    config.sinks.cloudflare_kv = Some(KvSinkConfig {
        account_id: ACCOUNT.into(),
        namespace_id: NAMESPACE.into(),
        api_token: Secret::new(TOKEN),
        token_source: "test".into(),
        api_base: api_base.parse().unwrap(),
        history_ttl: None,
        max_quiet: Duration::from_secs(60),
        upload_interval: None,
        change_threshold: 2.0,
    });
    let daemon = Daemon::start(config);

    // The Worker's own API says when all 8 are in KV.
    let client = reqwest::Client::new();
    let mut listed = 0;
    for _ in 0..150 {
        if let Ok(r) = client.get(format!("{worker}/api/cameras")).send().await {
            let body = r.bytes().await.unwrap_or_default();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            listed = v["cameras"].as_array().map_or(0, |a| a.len());
            if listed == 8 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(listed, 8, "sink status: {:?}", daemon.sink_status());
    let kv_status = &daemon.sink_status()[0];
    assert_eq!(kv_status.name, "cloudflare_kv");
    assert!(kv_status.failing.is_empty(), "{kv_status:?}");

    // A still the Worker serves is the JPEG the daemon made.
    let served = client
        .get(format!("{worker}/img/cam3"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.headers()["content-type"], "image/jpeg");
    let bytes = served.bytes().await.unwrap();
    assert_matches_reference(&bytes, "cam3 via the Worker");

    let page = format!("{worker}/");
    let dom = dump_dom(&page).await;
    let loaded = dom.matches("data-loaded=\"1\"").count();
    assert_eq!(loaded, 8, "DOM:\n{dom}");
    let shot = tokio::task::spawn_blocking(move || screenshot(&page, "cloud-viewer.png"))
        .await
        .unwrap();
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "screenshot too small"
    );

    daemon.shutdown().await;
    drop(api);
}
