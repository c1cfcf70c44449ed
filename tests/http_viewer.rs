//! The built-in HTTP server: viewer page in a real browser, stills with
//! their caching headers, status JSON, Prometheus metrics, health check and
//! authentication. Everything listens on 127.0.0.1; every wait is bounded.
//!
//! The browser test runs `rtsnap demo` and Debian's headless `chromium`;
//! without chromium it is skipped with a message, except in CI (env `CI`),
//! where it fails. Its screenshot is `target/test-artifacts/local-viewer.png`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use rtsnap::fixture::Pacing;
use rtsnap::{Config, Daemon};

const BIN: &str = env!("CARGO_BIN_EXE_rtsnap");

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .unwrap()
}

fn config(text: &str) -> Config {
    Config::from_toml(Path::new("test.toml"), text).unwrap_or_else(|e| panic!("{e}"))
}

/// A daemon with the given camera tables and `[http]` on an ephemeral port.
fn start_daemon(cameras: &str, http_extra: &str, dir: &Path) -> (Daemon, String) {
    let text = format!(
        "interval = \"1s\"\ntimeout = \"3s\"\n{cameras}\n[sink.dir]\npath = \"{}\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n{http_extra}\n",
        dir.display()
    );
    let daemon = Daemon::try_start(config(&text), Vec::new()).unwrap();
    let base = format!("http://{}", daemon.http_addr().unwrap());
    (daemon, base)
}

fn camera(name: &str, url: &str) -> String {
    format!("[[camera]]\nname = \"{name}\"\nurl = \"{url}\"\n")
}

async fn get(url: &str) -> reqwest::Response {
    client().get(url).send().await.unwrap()
}

async fn status_json(base: &str) -> serde_json::Value {
    let text = get(&format!("{base}/api/status"))
        .await
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn cam<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no camera {name} in {doc}"))
}

/// The value of a metric line `name{labels} value`.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_metrics_and_health_show_a_failing_camera() {
    let server = start(&["/a", "/c"], Pacing::Live).await;
    let faults = server.faults();
    faults.lose_keyframe_packets(Some("/c"), true);
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("RTSNAP_HTTP_TEST_CAM_PW", "cam-secret-pw-0451");
    let cameras = format!(
        "{}{}{}username = \"admin\"\npassword_env = \"RTSNAP_HTTP_TEST_CAM_PW\"\n",
        camera("good", &server.url("/a")),
        camera("lossy", &server.url("/c")),
        camera("bad", &server.url("/nope")),
    );
    let (daemon, base) = start_daemon(&cameras, "", dir.path());

    wait_for(Duration::from_secs(20), "a still from good", || {
        daemon.status()[0].stills.checked_sub(1)
    })
    .await;
    // Drop good's connection once: it must count a reconnect.
    faults.drop_connections(Some("/a"));
    wait_for(Duration::from_secs(20), "good to reconnect", || {
        let s = &daemon.status()[0];
        (s.reconnects >= 1 && s.state == rtsnap::CameraState::Streaming).then_some(())
    })
    .await;
    wait_for(Duration::from_secs(20), "lossy to skip a keyframe", || {
        (daemon.status()[1].keyframes_skipped >= 1).then_some(())
    })
    .await;
    // Byte counts are published every couple of seconds.
    wait_for(Duration::from_secs(20), "good to count its bytes", || {
        (daemon.status()[0].bytes_received > 0).then_some(())
    })
    .await;
    wait_for(Duration::from_secs(20), "bad to back off", || {
        matches!(
            daemon.status()[2].state,
            rtsnap::CameraState::BackingOff { .. }
        )
        .then_some(())
    })
    .await;

    let r = get(&format!("{base}/api/status")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let text = r.text().await.unwrap();
    assert!(!text.contains("cam-secret-pw-0451"), "{text}");
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let bad = cam(&doc, "bad");
    assert_eq!(bad["state"], "backing_off", "{bad}");
    assert!(
        bad["state_detail"].as_str().unwrap().contains("404"),
        "{bad}"
    );
    assert!(bad["last_error"].as_str().unwrap().contains("404"), "{bad}");
    assert_eq!(bad["stills"], 0);
    assert!(bad["seq"].is_null());
    let good = cam(&doc, "good");
    assert_eq!(good["state"], "streaming", "{good}");
    assert!(good["stills"].as_u64().unwrap() >= 1, "{good}");
    assert!(good["reconnects"].as_u64().unwrap() >= 1, "{good}");
    assert_eq!(good["width"], 640);
    assert_eq!(good["height"], 360);
    assert!(good["last_still_age_s"].as_f64().unwrap() < 30.0, "{good}");
    assert!(good["keyframes_seen"].as_u64().unwrap() >= 1, "{good}");
    assert!(good["keyframes_decoded"].as_u64().unwrap() >= 1, "{good}");
    assert!(
        cam(&doc, "lossy")["keyframes_skipped"].as_u64().unwrap() >= 1,
        "{doc}"
    );
    let sink = &doc["sinks"][0];
    assert_eq!(sink["name"], "dir", "{doc}");
    assert!(sink["writes"].as_u64().unwrap() >= 1, "{doc}");
    assert!(sink["failing"].as_array().unwrap().is_empty(), "{doc}");

    let r = get(&format!("{base}/metrics")).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let m = r.text().await.unwrap();
    assert!(!m.contains("cam-secret-pw-0451"));
    assert_eq!(metric(&m, "rtsnap_camera_up{camera=\"bad\"}"), 0.0, "{m}");
    assert_eq!(metric(&m, "rtsnap_camera_up{camera=\"good\"}"), 1.0, "{m}");
    assert!(metric(&m, "rtsnap_reconnects_total{camera=\"good\"}") >= 1.0);
    assert!(metric(&m, "rtsnap_keyframes_skipped_total{camera=\"lossy\"}") >= 1.0);
    assert!(metric(&m, "rtsnap_stills_total{camera=\"good\"}") >= 1.0);
    assert_eq!(metric(&m, "rtsnap_stills_total{camera=\"bad\"}"), 0.0);
    assert!(metric(&m, "rtsnap_bytes_received_total{camera=\"good\"}") > 0.0);
    assert!(metric(&m, "rtsnap_still_age_seconds{camera=\"good\"}") < 30.0);
    assert!(
        !m.contains("rtsnap_still_age_seconds{camera=\"bad\"}"),
        "{m}"
    );
    let decodes = metric(&m, "rtsnap_decode_seconds_count{camera=\"good\"}");
    assert!(decodes >= 1.0, "{m}");
    assert_eq!(
        metric(
            &m,
            "rtsnap_decode_seconds_bucket{camera=\"good\",le=\"+Inf\"}"
        ),
        decodes
    );
    assert!(metric(&m, "rtsnap_encode_seconds_sum{camera=\"good\"}") > 0.0);
    assert!(metric(&m, "rtsnap_sink_writes_total{sink=\"dir\"}") >= 1.0);
    assert_eq!(metric(&m, "rtsnap_sink_errors_total{sink=\"dir\"}"), 0.0);
    assert!(m.contains("# TYPE rtsnap_decode_seconds histogram"));

    let r = get(&format!("{base}/healthz")).await;
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(body.contains("bad: no still yet (backing_off:"), "{body}");
    assert!(body.contains("404"), "{body}");
    assert!(body.contains("lossy: no still yet"), "{body}");
    assert!(!body.contains("good:"), "{body}");

    daemon.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_headers_revalidation_max_age_and_health() {
    let server = start(&["/a", "/b"], Pacing::Live).await;
    let dir = tempfile::tempdir().unwrap();
    let cameras = format!(
        "{}{}",
        camera("one", &server.url("/a")),
        camera("two", &server.url("/b"))
    );
    let (daemon, base) = start_daemon(&cameras, "", dir.path());
    // Before any still: 404, and unhealthy.
    let r = get(&format!("{base}/snapshot/one.jpg")).await;
    if daemon.store().latest("one").is_none() {
        assert_eq!(r.status(), 404);
        assert_eq!(get(&format!("{base}/healthz")).await.status(), 503);
    }
    wait_for(Duration::from_secs(20), "stills from both", || {
        daemon.status().iter().all(|s| s.stills >= 1).then_some(())
    })
    .await;

    let url = format!("{base}/snapshot/one.jpg");
    let r = get(&url).await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "image/jpeg");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with("\"one-") && etag.ends_with('"'), "{etag}");
    let captured = humantime::parse_rfc3339(h["x-capture-time"].to_str().unwrap()).unwrap();
    let modified = httpdate::parse_http_date(h["last-modified"].to_str().unwrap()).unwrap();
    let diff = captured
        .duration_since(modified)
        .unwrap_or_else(|e| e.duration());
    assert!(diff < Duration::from_secs(1), "{h:?}");
    let jpeg = r.bytes().await.unwrap();
    assert_matches_reference(&jpeg, "/snapshot/one.jpg");

    // Revalidation: same tag -> 304 without a body (unless a new still came).
    let r = client()
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    let now_tag = r.headers()["etag"].to_str().unwrap().to_owned();
    if now_tag == etag {
        assert_eq!(r.status(), 304);
        assert!(r.bytes().await.unwrap().is_empty());
    } else {
        assert_eq!(r.status(), 200, "a new still has a new tag");
    }
    let r = client()
        .get(&url)
        .header("if-none-match", "\"one-0-0\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // max_age: generous passes, zero (after a moment) does not.
    assert_eq!(get(&format!("{url}?max_age=3600")).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = get(&format!("{url}?max_age=0")).await;
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("older than max_age"));
    assert_eq!(get(&format!("{url}?max_age=-1")).await.status(), 400);

    // Unknown camera, wrong extension, unknown route.
    assert_eq!(
        get(&format!("{base}/snapshot/three.jpg")).await.status(),
        404
    );
    assert_eq!(get(&format!("{base}/snapshot/one.png")).await.status(), 404);
    assert_eq!(get(&format!("{base}/nothing")).await.status(), 404);

    // Both cameras fresh: healthy.
    let r = get(&format!("{base}/healthz")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok\n");

    // The page lists both, with a CSP nonce on its inline code.
    let r = get(&format!("{base}/")).await;
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let page = r.text().await.unwrap();
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    assert!(page.contains(&format!("<script nonce=\"{nonce}\">")));
    assert!(page.contains("data-name=\"one\"") && page.contains("data-name=\"two\""));
    assert!(page.contains("/snapshot/one.jpg?v="), "{page}");

    daemon.shutdown().await;
    server.shutdown().await;
}

#[test]
fn non_loopback_listen_without_auth_is_refused() {
    let text = "[[camera]]\nname = \"a\"\nurl = \"rtsp://127.0.0.1/x\"\n\n[http]\nlisten = \"0.0.0.0:8080\"\n";
    let e = Config::from_toml(Path::new("/etc/rtsnap/rtsnap.toml"), text).unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.line, Some(6), "{msg}");
    assert!(msg.starts_with("/etc/rtsnap/rtsnap.toml:6: "), "{msg}");
    assert!(msg.contains("0.0.0.0:8080"), "{msg}");
    assert!(msg.contains("no authentication"), "{msg}");
    assert!(
        msg.contains("help: ") && msg.contains("bearer_token_env"),
        "{msg}"
    );
    assert!(msg.contains("hash-password"), "{msg}");

    // With a token it is accepted.
    std::env::set_var("RTSNAP_HTTP_TEST_OPEN_TOKEN", "0123456789abcdef0123");
    let ok = format!("{text}bearer_token_env = \"RTSNAP_HTTP_TEST_OPEN_TOKEN\"\n");
    let c = Config::from_toml(Path::new("x.toml"), &ok).unwrap();
    assert!(c.http.unwrap().requires_auth());
    // A short token is not.
    std::env::set_var("RTSNAP_HTTP_TEST_SHORT_TOKEN", "short");
    let short = format!("{text}bearer_token_env = \"RTSNAP_HTTP_TEST_SHORT_TOKEN\"\n");
    let e = Config::from_toml(Path::new("x.toml"), &short).unwrap_err();
    assert!(e.message.contains("too short"), "{e}");
    assert!(
        !e.to_string().contains("short\""),
        "the token is not printed: {e}"
    );
}

const NOWHERE: &str = "rtsp://127.0.0.1:9/x";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_is_required_even_on_loopback() {
    const TOKEN: &str = "test-token-0123456789abcdef";
    std::env::set_var("RTSNAP_HTTP_TEST_TOKEN", TOKEN);
    let dir = tempfile::tempdir().unwrap();
    let (daemon, base) = start_daemon(
        &camera("cam", NOWHERE),
        "bearer_token_env = \"RTSNAP_HTTP_TEST_TOKEN\"",
        dir.path(),
    );
    for path in [
        "/",
        "/api/status",
        "/metrics",
        "/healthz",
        "/snapshot/cam.jpg",
    ] {
        let url = format!("{base}{path}");
        let r = get(&url).await;
        assert_eq!(r.status(), 401, "{path} without a token");
        assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"rtsnap\"");
        let r = client()
            .get(&url)
            .bearer_auth("test-token-0123456789abcdeX")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} with a wrong token");
        let r = client()
            .get(&url)
            .bearer_auth(&TOKEN[..TOKEN.len() - 1])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} with a prefix of the token");
        let r = client().basic_auth_get(&url, "rtsnap", TOKEN).await;
        assert_eq!(r.status(), 401, "{path} with the token as a basic password");
    }
    let r = client()
        .get(format!("{base}/api/status"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(!body.contains(TOKEN));
    let r = client()
        .get(format!("{base}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.text().await.unwrap().contains(TOKEN));
    daemon.shutdown().await;
}

trait BasicGet {
    async fn basic_auth_get(&self, url: &str, user: &str, pw: &str) -> reqwest::Response;
}

impl BasicGet for reqwest::Client {
    async fn basic_auth_get(&self, url: &str, user: &str, pw: &str) -> reqwest::Response {
        self.get(url)
            .basic_auth(user, Some(pw))
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argon2_basic_auth() {
    let hash =
        rtsnap::http::auth::hash_password(&rtsnap::Secret::new("correct horse battery")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (daemon, base) = start_daemon(
        &camera("cam", NOWHERE),
        &format!("password_hash = '{hash}'\nusername = \"viewer\""),
        dir.path(),
    );
    let url = format!("{base}/api/status");
    let c = client();
    let r = get(&url).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"rtsnap\", charset=\"UTF-8\""
    );
    assert_eq!(
        c.basic_auth_get(&url, "viewer", "correct horse battery")
            .await
            .status(),
        200
    );
    // Twice: the second is answered from the verified-header cache.
    assert_eq!(
        c.basic_auth_get(&url, "viewer", "correct horse battery")
            .await
            .status(),
        200
    );
    assert_eq!(
        c.basic_auth_get(&url, "viewer", "correct horse batterY")
            .await
            .status(),
        401
    );
    assert_eq!(
        c.basic_auth_get(&url, "rtsnap", "correct horse battery")
            .await
            .status(),
        401
    );
    assert_eq!(c.basic_auth_get(&url, "viewer", "").await.status(), 401);
    let r = c
        .get(&url)
        .bearer_auth("correct horse battery")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no bearer token is configured");
    let page = c
        .basic_auth_get(&format!("{base}/"), "viewer", "correct horse battery")
        .await;
    assert_eq!(page.status(), 200);
    assert!(!page.text().await.unwrap().contains("$argon2id$"));
    daemon.shutdown().await;
}

#[test]
fn hash_password_subcommand_prints_a_phc_string() {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a long passphrase\n")
        .unwrap();
    let out = wait_bounded(child, Duration::from_secs(30));
    assert!(out.status.success(), "{out:?}");
    let phc = String::from_utf8(out.stdout).unwrap();
    let phc = phc.trim();
    assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
    assert!(rtsnap::http::auth::verify_password(
        &rtsnap::Secret::new("a long passphrase"),
        phc
    ));
}

fn have_chromium() -> bool {
    let ok = Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok && std::env::var_os("CI").is_some() {
        panic!("chromium is not installed, but CI must run the viewer test");
    }
    if !ok {
        eprintln!("skipping: chromium is not installed (apt-get install chromium)");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_viewer_shows_eight_stills_in_chromium() {
    if !have_chromium() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let mut demo = Killed(
        Command::new(BIN)
            .args(["demo", "--duration", "120", "--interval", "2s", "--out"])
            .arg(out.path())
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The URL line, read on a thread so the wait is bounded.
    let stdout = demo.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let base = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("rtsnap demo printed no `viewer:` line within 30 s");
        if let Some(url) = line.strip_prefix("viewer: ") {
            break url.trim().to_owned();
        }
    };
    assert!(
        base.starts_with("http://127.0.0.1:") && base.ends_with('/'),
        "{base}"
    );

    // Wait (bounded) until every camera has a still, so the page has 8 to show.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let doc = status_json(base.trim_end_matches('/')).await;
        let cams = doc["cameras"].as_array().unwrap();
        if cams.len() == 8 && cams.iter().all(|c| c["seq"].is_u64()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every demo camera has a still after 40 s: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let dom = dump_dom(&base).await;
    let loaded = dom.matches("data-loaded=\"1\"").count();
    assert_eq!(loaded, 8, "DOM:\n{dom}");
    assert_eq!(
        dom.matches("class=\"badge st-streaming\"").count(),
        8,
        "DOM:\n{dom}"
    );
    assert!(dom.contains(" s ago"), "ages are shown: {dom}");

    let page = base.clone();
    let shot = tokio::task::spawn_blocking(move || screenshot(&page, "local-viewer.png"))
        .await
        .unwrap();
    assert!(
        std::fs::metadata(&shot).map_or(0, |m| m.len()) > 10_000,
        "screenshot missing or too small: {}",
        shot.display()
    );

    // Every card shows a picture: the fixture's colour bars are saturated,
    // the page around them is not. One 300x170 card is ~50k such pixels.
    let png = image::open(&shot).unwrap().into_rgb8();
    let colourful = png
        .pixels()
        .filter(|p| p.0.iter().max().unwrap() - p.0.iter().min().unwrap() > 150)
        .count();
    assert!(
        colourful > 8 * 25_000,
        "only {colourful} saturated pixels: not every still is on screen ({})",
        shot.display()
    );

    // SIGTERM: the demo stops cleanly and its summary lists every camera.
    unsafe {
        libc::kill(demo.0.id() as i32, libc::SIGTERM);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = demo.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "demo did not stop in 15 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "demo exit {status:?}");
}
