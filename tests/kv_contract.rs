//! Contract tests for the Cloudflare Workers KV sink, against an in-test
//! HTTP server that implements the documented REST API: account and
//! namespace in the path, Bearer auth, bulk JSON with base64 values, the
//! `{success, errors, messages, result}` envelope, 429 with `retry-after`,
//! one write per second per key. The server checks every request the real
//! sink sends and can be told to fail in each documented way, and in some
//! hostile ones (a `retry-after` no clock can hold, dates, garbage).

mod common;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::Router;
use base64::Engine as _;
use bytes::Bytes;
use common::*;
use rtsnap::config::{HttpConfig, KvSinkConfig};
use rtsnap::pipeline::Fingerprint;
use rtsnap::sink::{supervise_sink, CloudflareKvSink, Sink, SinkLimits, SinkStatus};
use rtsnap::{CameraConfig, Config, Daemon, Secret, Snapshot, Store};
use serde_json::{json, Value};

const ACCOUNT: &str = "0123456789abcdef0123456789abcdef";
const NAMESPACE: &str = "fedcba9876543210fedcba9876543210";
const TOKEN: &str = "test-token-Qw9x7-never-logged";

/// A failure the fake API answers the next request with.
#[derive(Clone, Debug)]
enum Fault {
    TooMany {
        retry_after: u64,
    },
    /// A 429 whose `retry-after` is this text, verbatim.
    TooManyRaw(String),
    ServerError,
    NamespaceNotFound,
    Unsuccessful(String),
}

#[derive(Default)]
struct Kv {
    values: HashMap<String, (Vec<u8>, Value, Option<u64>)>,
    last_write: HashMap<String, Instant>,
    /// (time, keys) of every accepted bulk request.
    requests: Vec<(Instant, Vec<String>)>,
    /// Contract violations seen; must stay empty.
    violations: Vec<String>,
    faults: VecDeque<Fault>,
    /// Alternate `result: {..}` and `result: null` on success.
    flip: bool,
}

type Shared = Arc<Mutex<Kv>>;

fn envelope(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null})),
    )
        .into_response()
}

async fn bulk(
    State(kv): State<Shared>,
    Path((account, namespace)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return envelope(StatusCode::FORBIDDEN, 10000, "Authentication error");
    }
    if account != ACCOUNT || namespace != NAMESPACE {
        return envelope(StatusCode::NOT_FOUND, 10013, "namespace not found");
    }
    let mut kv = kv.lock().unwrap();
    let fault = kv.faults.pop_front();
    match &fault {
        Some(Fault::TooMany { retry_after }) => {
            let mut r = envelope(StatusCode::TOO_MANY_REQUESTS, 10429, "Too many requests");
            r.headers_mut()
                .insert("retry-after", retry_after.to_string().parse().unwrap());
            return r;
        }
        Some(Fault::TooManyRaw(v)) => {
            let mut r = envelope(StatusCode::TOO_MANY_REQUESTS, 10429, "Too many requests");
            r.headers_mut().insert("retry-after", v.parse().unwrap());
            return r;
        }
        Some(Fault::ServerError) => {
            return envelope(StatusCode::INTERNAL_SERVER_ERROR, 10001, "internal error")
        }
        Some(Fault::NamespaceNotFound) => {
            return envelope(StatusCode::BAD_REQUEST, 10013, "namespace not found")
        }
        _ => {}
    }
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(&body) else {
        kv.violations.push("body is not a JSON array".into());
        return envelope(StatusCode::BAD_REQUEST, 10026, "bad body");
    };
    if items.is_empty() || items.len() > 10_000 {
        kv.violations.push(format!("{} items", items.len()));
    }
    let now = Instant::now();
    let (mut ok, mut failed, mut keys) = (0, Vec::new(), Vec::new());
    for item in items {
        let key = item["key"].as_str().unwrap_or_default().to_owned();
        keys.push(key.clone());
        let problems = [
            (key.is_empty() || key.len() > 512, "key length"),
            (item["base64"] != json!(true), "base64 flag"),
            (
                item["metadata"].to_string().len() > 1024,
                "metadata over 1024 bytes",
            ),
            (
                item.get("expiration_ttl")
                    .is_some_and(|t| t.as_u64().is_none_or(|t| t < 60)),
                "expiration_ttl < 60",
            ),
        ];
        for (bad, what) in problems {
            if bad {
                kv.violations.push(format!("{key}: {what}"));
            }
        }
        let Ok(value) =
            base64::engine::general_purpose::STANDARD.decode(item["value"].as_str().unwrap_or(""))
        else {
            kv.violations.push(format!("{key}: value is not base64"));
            continue;
        };
        if let Some(t) = kv.last_write.get(&key) {
            if now.duration_since(*t) < Duration::from_secs(1) {
                kv.violations.push(format!("{key}: two writes within 1 s"));
                failed.push(key);
                continue;
            }
        }
        if matches!(&fault, Some(Fault::Unsuccessful(k)) if *k == key) {
            failed.push(key);
            continue;
        }
        if let Some((_, old, _)) = kv.values.get(&key) {
            if old["captured_ms"].as_u64() > item["metadata"]["captured_ms"].as_u64() {
                kv.violations
                    .push(format!("{key}: overwritten with an older still"));
            }
        }
        kv.last_write.insert(key.clone(), now);
        kv.values.insert(
            key,
            (
                value,
                item["metadata"].clone(),
                item["expiration_ttl"].as_u64(),
            ),
        );
        ok += 1;
    }
    kv.requests.push((now, keys));
    kv.flip = !kv.flip;
    let result = if kv.flip && failed.is_empty() {
        Value::Null
    } else {
        json!({"successful_key_count": ok, "unsuccessful_keys": failed})
    };
    axum::Json(json!({"success": true, "errors": [], "messages": [], "result": result}))
        .into_response()
}

async fn start_fake() -> (SocketAddr, Shared) {
    let kv: Shared = Arc::default();
    let app = Router::new()
        .route(
            "/client/v4/accounts/{account}/storage/kv/namespaces/{namespace}/bulk",
            put(bulk),
        )
        .with_state(kv.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, kv)
}

fn kv_config(addr: SocketAddr) -> KvSinkConfig {
    KvSinkConfig {
        account_id: ACCOUNT.into(),
        namespace_id: NAMESPACE.into(),
        api_token: Secret::new(TOKEN),
        token_source: "api_token_env CF_API_TOKEN".into(),
        api_base: format!("http://{addr}/client/v4").parse().unwrap(),
        history_ttl: None,
        max_quiet: Duration::from_secs(60),
        upload_interval: None,
        change_threshold: 2.0,
    }
}

fn still(camera: &str, seq: u64, luma: u8) -> Snapshot {
    Snapshot {
        camera: camera.into(),
        captured_at: SystemTime::now(),
        width: 640,
        height: 360,
        jpeg: Bytes::from(vec![0xff, 0xd8, seq as u8, 0xff, 0xd9]),
        seq,
        fingerprint: Some(Fingerprint(
            vec![luma; Fingerprint::COLS * Fingerprint::ROWS].into(),
        )),
        interval: Duration::from_secs(5),
    }
}

/// The daemon end to end: two fixture cameras -> KV sink -> fake API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_uploads_latest_and_history_with_metadata() {
    let (addr, kv) = start_fake().await;
    let server = serve(&[SUB, HD_BFRAMES]).await;
    let cams = ["porch", "garage"]
        .iter()
        .enumerate()
        .map(|(i, n)| CameraConfig {
            name: n.to_string(),
            url: server.url(&format!("/ch{}", i + 1)).parse().unwrap(),
            credentials: None,
            interval: Duration::from_secs(1),
            transport: Default::default(),
        })
        .collect();
    let mut config = Config::with_cameras(cams);
    let mut kvc = kv_config(addr);
    kvc.history_ttl = Some(Duration::from_secs(3600));
    kvc.change_threshold = 0.0; // the fixtures move: upload every still
    config.sinks.cloudflare_kv = Some(kvc);
    let d = Daemon::start(config);
    let started = Instant::now();
    wait_for(
        Duration::from_secs(20),
        "both cameras uploaded twice",
        || {
            let kv = kv.lock().unwrap();
            let n = |c: &str| {
                kv.values
                    .keys()
                    .filter(|k| k.starts_with(&format!("history/{c}/")))
                    .count()
            };
            (n("porch") >= 2 && n("garage") >= 2).then_some(())
        },
    )
    .await;
    let elapsed = started.elapsed();
    d.shutdown().await;
    let kv = kv.lock().unwrap();
    assert!(kv.violations.is_empty(), "{:?}", kv.violations);
    for (cam, (w, h)) in [("porch", (640, 360)), ("garage", (1280, 720))] {
        let (jpeg, meta, ttl) = &kv.values[&format!("latest/{cam}")];
        assert_matches_reference(jpeg, cam);
        assert_eq!(meta["camera"], cam);
        assert_eq!(
            (
                meta["width"].as_u64().unwrap(),
                meta["height"].as_u64().unwrap()
            ),
            (w, h)
        );
        assert_eq!(meta["content_type"], "image/jpeg");
        assert_eq!(meta["bytes"].as_u64().unwrap() as usize, jpeg.len());
        assert_eq!(meta["interval_ms"], 1000);
        let age = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            - meta["captured_ms"].as_u64().unwrap();
        assert!(age < 30_000, "capture time {age} ms ago");
        assert_eq!(*ttl, None, "latest/ keys do not expire");
        let hist = kv
            .values
            .iter()
            .find(|(k, _)| k.starts_with(&format!("history/{cam}/")))
            .unwrap();
        assert_eq!(hist.1 .2, Some(3600));
        assert!(hist.0.ends_with('Z') && !hist.0.contains(':'), "{}", hist.0);
    }
    // One bulk request per round, never one per still.
    let rounds = (elapsed.as_secs_f64() / 2.0).ceil() as usize + 2;
    assert!(
        kv.requests.len() <= rounds,
        "{} requests in {elapsed:?}",
        kv.requests.len()
    );
    assert!(
        kv.requests.iter().any(|(_, keys)| keys.len() >= 4),
        "cameras never shared a request"
    );
}

#[tokio::test]
async fn unchanged_scene_is_skipped_but_a_heartbeat_goes_out() {
    let (addr, kv) = start_fake().await;
    let mut c = kv_config(addr);
    c.max_quiet = Duration::from_secs(2);
    let sink = CloudflareKvSink::new(&c);
    assert!(sink.write(&[still("a", 1, 100)]).await.is_empty());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Same scene (noise below the threshold): skipped.
    assert!(sink.write(&[still("a", 2, 101)]).await.is_empty());
    assert_eq!(sink.skipped(), 1);
    assert_eq!(kv.lock().unwrap().requests.len(), 1);
    // A real change goes out.
    assert!(sink.write(&[still("a", 3, 160)]).await.is_empty());
    assert_eq!(kv.lock().unwrap().requests.len(), 2);
    // Unchanged but quiet for max_quiet: a heartbeat.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(sink.write(&[still("a", 4, 160)]).await.is_empty());
    assert_eq!(kv.lock().unwrap().requests.len(), 3);
    // Never an older still over a newer one.
    assert!(sink.write(&[still("a", 2, 0)]).await.is_empty());
    assert_eq!(kv.lock().unwrap().requests.len(), 3);
    assert!(kv.lock().unwrap().violations.is_empty());
}

#[tokio::test]
async fn one_write_per_second_per_key() {
    let (addr, kv) = start_fake().await;
    let sink = CloudflareKvSink::new(&kv_config(addr));
    assert!(sink.write(&[still("a", 1, 0)]).await.is_empty());
    let failed = sink.write(&[still("a", 2, 200), still("b", 1, 0)]).await;
    // "a" waits (without a request for it), "b" goes out.
    assert_eq!(failed.len(), 1);
    assert_eq!(&*failed[0].0, "a");
    assert!(failed[0]
        .1
        .retry_after
        .is_some_and(|d| d <= Duration::from_secs(1)));
    let kv = kv.lock().unwrap();
    assert_eq!(kv.requests.len(), 2);
    assert_eq!(kv.requests[1].1, ["latest/b"]);
    assert!(kv.violations.is_empty(), "{:?}", kv.violations);
}

#[tokio::test]
async fn failures_are_reported_and_only_failed_keys_retried() {
    let (addr, kv) = start_fake().await;
    let sink = CloudflareKvSink::new(&kv_config(addr));

    kv.lock()
        .unwrap()
        .faults
        .push_back(Fault::TooMany { retry_after: 7 });
    let failed = sink.write(&[still("a", 1, 0), still("b", 1, 0)]).await;
    assert_eq!(failed.len(), 2);
    let e = &failed[0].1;
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)), "{e:?}");
    assert!(
        e.message.contains("429") && e.message.contains("7 s"),
        "{e}"
    );

    kv.lock().unwrap().faults.push_back(Fault::ServerError);
    let failed = sink.write(&[still("a", 1, 0)]).await;
    assert!(
        failed[0]
            .1
            .message
            .contains("HTTP 500: 10001 internal error"),
        "{}",
        failed[0].1
    );
    assert_eq!(
        failed[0].1.retry_after, None,
        "5xx uses the runner's backoff"
    );

    kv.lock()
        .unwrap()
        .faults
        .push_back(Fault::NamespaceNotFound);
    let failed = sink.write(&[still("a", 1, 0)]).await;
    assert!(failed[0].1.message.contains("10013") && failed[0].1.message.contains("namespace_id"));

    kv.lock()
        .unwrap()
        .faults
        .push_back(Fault::Unsuccessful("latest/b".into()));
    let failed = sink.write(&[still("a", 1, 0), still("b", 1, 0)]).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(&*failed[0].0, "b");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The runner retries b alone (a was stored): one key in the request.
    assert!(sink.write(&[still("b", 1, 0)]).await.is_empty());
    let kv = kv.lock().unwrap();
    assert_eq!(kv.requests.last().unwrap().1, ["latest/b"]);
    assert!(kv.values.contains_key("latest/a") && kv.values.contains_key("latest/b"));
}

#[tokio::test]
async fn bad_token_names_its_source_and_never_shows_it() {
    let (addr, _kv) = start_fake().await;
    let mut c = kv_config(addr);
    c.api_token = Secret::new("wrong-token-zzz");
    let sink = CloudflareKvSink::new(&c);
    let failed = sink.write(&[still("a", 1, 0)]).await;
    let msg = failed[0].1.to_string();
    assert!(
        msg.contains("HTTP 403") && msg.contains("api_token_env CF_API_TOKEN"),
        "{msg}"
    );
    assert!(!msg.contains("wrong-token-zzz"));
    assert!(!format!("{c:?}").contains("wrong-token-zzz"));
}

#[tokio::test]
async fn unreachable_api_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sink = CloudflareKvSink::new(&kv_config(format!("127.0.0.1:{port}").parse().unwrap()));
    let failed = sink.write(&[still("a", 1, 0)]).await;
    let msg = failed[0].1.to_string();
    assert!(msg.starts_with("Cloudflare KV: request failed"), "{msg}");
    assert!(!msg.contains(TOKEN));
}

/// Cloudflare blocks every API call for 5 minutes past 1,200 requests in 5
/// minutes; the sink stops itself at its budget first.
#[tokio::test]
async fn request_budget_holds_uploads_before_cloudflare_blocks() {
    let (addr, kv) = start_fake().await;
    let sink = CloudflareKvSink::new(&kv_config(addr));
    let budget = rtsnap::sink::cloudflare_kv::BUDGET;
    for i in 0..budget {
        let failed = sink.write(&[still(&format!("c{i}"), 1, 0)]).await;
        assert!(failed.is_empty(), "request {i}: {failed:?}");
    }
    let failed = sink.write(&[still("one-more", 1, 0)]).await;
    assert_eq!(failed.len(), 1);
    let e = &failed[0].1;
    assert!(e.message.contains("holding uploads"), "{e}");
    let wait = e.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(250) && wait <= Duration::from_secs(300),
        "{wait:?}"
    );
    assert_eq!(
        kv.lock().unwrap().requests.len(),
        budget,
        "no request past the budget"
    );
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
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

/// `Retry-After: 18446744073709551615` (u64::MAX seconds) used to overflow
/// `Instant + Duration` and kill the sink task while `/api/status` still
/// looked healthy. Now: the daemon's sink waits 1 h, says so in status, and
/// its task neither panics nor restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_beyond_any_clock_is_capped_at_an_hour_and_shown() {
    let (addr, kv) = start_fake().await;
    kv.lock().unwrap().faults.push_back(Fault::TooMany {
        retry_after: u64::MAX,
    });
    let server = serve(&[SUB]).await;
    let mut config = Config::with_cameras(vec![CameraConfig {
        name: "porch".into(),
        url: server.url("/ch1").parse().unwrap(),
        credentials: None,
        interval: Duration::from_secs(1),
        transport: Default::default(),
    }]);
    config.sinks.cloudflare_kv = Some(kv_config(addr));
    config.http = Some(HttpConfig::open("127.0.0.1:0".parse().unwrap()));
    let d = Daemon::start(config);
    let base = format!("http://{}", d.http_addr().unwrap());
    let failing = wait_for(Duration::from_secs(20), "the 429 in status", || {
        d.sink_status()[0].failing.get("porch").cloned()
    })
    .await;
    assert!(
        failing.error.contains("HTTP 429") && failing.error.contains("waiting 3600 s"),
        "{failing:?}"
    );
    // Over HTTP, as the viewer and the user see it.
    let doc: Value = serde_json::from_str(&get_text(&format!("{base}/api/status")).await).unwrap();
    let sink = &doc["sinks"][0];
    assert_eq!(sink["name"], "cloudflare_kv", "{doc}");
    assert_eq!(sink["state"], "running", "{doc}");
    assert_eq!(sink["restarts"], 0, "{doc}");
    let f = &sink["failing"][0];
    assert_eq!(f["camera"], "porch", "{doc}");
    let wait_ms = f["retry_at_ms"].as_u64().unwrap() as i64 - unix_ms_now() as i64;
    assert!(
        (3_590_000..=3_600_000).contains(&wait_ms),
        "next try in {wait_ms} ms: {doc}"
    );
    let metrics = get_text(&format!("{base}/metrics")).await;
    assert!(
        metrics.contains("rtsnap_sink_restarts_total{sink=\"cloudflare_kv\"} 0"),
        "{metrics}"
    );
    // It holds off: newer stills come, no request goes out in the meantime.
    let stills = d.status()[0].stills;
    wait_for(Duration::from_secs(20), "two more stills", || {
        (d.status()[0].stills >= stills + 2).then_some(())
    })
    .await;
    assert!(kv.lock().unwrap().requests.is_empty());
    assert!(kv.lock().unwrap().faults.is_empty(), "the 429 was served");
    assert_eq!(d.sink_status()[0].restarts, 0);
    d.shutdown().await;
}

/// After a capped `Retry-After`, uploads resume once the wait is over and
/// the server answers again. The runner's limit is lowered to 2 s here (the
/// daemon's is 1 h, checked above) so the recovery fits in a test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_resume_after_a_capped_retry_after() {
    let (addr, kv) = start_fake().await;
    kv.lock().unwrap().faults.push_back(Fault::TooMany {
        retry_after: u64::MAX,
    });
    let store = Store::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (status_tx, status) = tokio::sync::watch::channel(SinkStatus::default());
    let limits = SinkLimits {
        max_delay: Duration::from_secs(2),
        ..SinkLimits::default()
    };
    let sink: Arc<dyn Sink> = Arc::new(CloudflareKvSink::new(&kv_config(addr)));
    let task = tokio::spawn(supervise_sink(
        sink,
        store.clone(),
        stop_rx,
        status_tx,
        limits,
    ));
    store.publish(still("a", 1, 0));
    let failed_at = Instant::now();
    let f = wait_for(Duration::from_secs(10), "the 429", || {
        status.borrow().failing.get("a").cloned()
    })
    .await;
    assert!(f.error.contains("more than 1 h"), "{f:?}");
    let wait = f
        .retry_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(wait <= Duration::from_secs(2), "{wait:?}");
    // The server has recovered (no fault left); a newer still is what lands.
    store.publish(still("a", 2, 90));
    wait_for(Duration::from_secs(10), "the upload after the wait", || {
        let kv = kv.lock().unwrap();
        kv.values.get("latest/a").map(|v| v.0.clone())
    })
    .await;
    let resumed = failed_at.elapsed();
    wait_for(Duration::from_secs(5), "the failure to clear", || {
        status.borrow().failing.is_empty().then_some(())
    })
    .await;
    let st = status.borrow().clone();
    assert_eq!((st.writes, st.restarts), (1, 0), "{st:?}");
    {
        let kv = kv.lock().unwrap();
        assert_eq!(kv.requests.len(), 1, "one upload, after the wait");
        assert_eq!(kv.values["latest/a"].0[2], 2, "the newest still");
        assert!(kv.violations.is_empty(), "{:?}", kv.violations);
    }
    assert!(
        resumed >= Duration::from_millis(1500),
        "the wait was honoured: {resumed:?}"
    );
    eprintln!("uploads resumed {resumed:?} after a Retry-After of u64::MAX s (limit 2 s)");
    stop_tx.send(true).unwrap();
    task.await.unwrap();
}

/// HTTP-dates are honoured; a date in the past means now; garbage means the
/// default minute.
#[tokio::test]
async fn retry_after_dates_and_garbage() {
    let (addr, kv) = start_fake().await;
    let sink = CloudflareKvSink::new(&kv_config(addr));
    let in_2_min = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
    for (header, low, high, why) in [
        (in_2_min.as_str(), 118, 120, "as asked"),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0, 0, "as asked"),
        ("soon", 60, 60, "unreadable"),
        ("-1", 60, 60, "unreadable"),
        ("99999999999999999999999999", 3600, 3600, "more than 1 h"),
    ] {
        kv.lock()
            .unwrap()
            .faults
            .push_back(Fault::TooManyRaw(header.into()));
        let failed = sink.write(&[still("a", 1, 0)]).await;
        let e = &failed[0].1;
        let secs = e.retry_after.unwrap().as_secs();
        assert!((low..=high).contains(&secs), "{header}: {e:?}");
        assert!(e.message.contains(why), "{header}: {e}");
    }
}
