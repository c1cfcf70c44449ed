//! The `cloudflare_kv` sink: stills pushed to Cloudflare Workers KV over its
//! REST API, where the Worker in `worker/` serves them behind Access.
//!
//! KV bills and limits by write, so this sink is mostly about *not* writing:
//!
//! * **One bulk request per round** (`PUT .../bulk`) for every camera that is
//!   due, at most every [`BATCH_EVERY`]; only keys KV reports as failed are
//!   retried.
//! * **Unchanged scenes are skipped**: a still whose fingerprint (a 32 x 18
//!   luma grid) differs from the last uploaded one by less than
//!   `change_threshold` is not sent, except as a heartbeat every `max_quiet`,
//!   so the viewer's "12 s ago" stays honest. Skips are counted.
//! * **Limits are respected before Cloudflare enforces them**: never more than
//!   one write per second per key, and a budget of API requests per five
//!   minutes below Cloudflare's 1,200 (exceeding it blocks *all* API calls for
//!   five minutes). A 429 is honoured through its `retry-after` (delta-seconds
//!   or HTTP-date), but never for more than an hour: a server's number is
//!   untrusted input ([`parse_retry_after`]).
//! * **Latest wins**: the shared sink runner keeps at most one pending still
//!   per camera, and this sink never uploads a still older than one it already
//!   uploaded.
//!
//! Keys: `latest/<camera>` and, with `history_ttl`, `history/<camera>/<UTC
//! time>` expiring after it. Metadata (<= 1024 bytes): camera, capture time in
//! ms, width, height, content type, byte length, and `interval_ms`, the
//! longest gap between uploads the sink intends (the still interval, or
//! `max_quiet` when unchanged scenes are skipped) for the viewer's stale mark.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use futures::future::BoxFuture;
use serde::Deserialize;

use super::{parse_retry_after, RetryAfter, Sink, SinkError};
use crate::config::KvSinkConfig;
use crate::pipeline::Fingerprint;
use crate::Snapshot;

/// Least time between two bulk requests.
pub const BATCH_EVERY: Duration = Duration::from_secs(2);
/// API requests allowed per [`BUDGET_WINDOW`]: Cloudflare's limit is 1,200;
/// the rest is headroom for the user's own wrangler calls.
pub const BUDGET: usize = 1_000;
/// The window Cloudflare counts API requests in.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(300);
/// Cloudflare allows one write per second to a key.
const PER_KEY: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Pushes stills to Workers KV.
pub struct CloudflareKvSink {
    config: KvSinkConfig,
    bulk_url: String,
    client: reqwest::Client,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    uploaded: HashMap<Arc<str>, Uploaded>,
    /// When each API request of the last [`BUDGET_WINDOW`] was sent.
    requests: VecDeque<Instant>,
    skipped: u64,
}

struct Uploaded {
    seq: u64,
    at: Instant,
    fingerprint: Option<Fingerprint>,
}

/// What the decision for one still was.
enum Plan {
    Send,
    Skip,
    Later(Duration),
}

impl CloudflareKvSink {
    /// A sink for the configured namespace.
    pub fn new(config: &KvSinkConfig) -> CloudflareKvSink {
        let base = config.api_base.as_str().trim_end_matches('/');
        CloudflareKvSink {
            bulk_url: format!(
                "{base}/accounts/{}/storage/kv/namespaces/{}/bulk",
                config.account_id, config.namespace_id
            ),
            client: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .user_agent(concat!("rtsnap/", env!("CARGO_PKG_VERSION")))
                .build()
                .expect("TLS backend available"),
            config: config.clone(),
            state: Mutex::new(State::default()),
        }
    }

    /// The sink's bookkeeping. A panic elsewhere while it was held (the
    /// supervisor restarts the runner) leaves counters and upload times that
    /// are still right, so a poisoned lock is used as is, not re-panicked.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn plan(&self, st: &State, s: &Snapshot, now: Instant) -> Plan {
        let Some(last) = st.uploaded.get(&s.camera) else {
            return Plan::Send;
        };
        if s.seq <= last.seq {
            return Plan::Skip; // never roll a camera back
        }
        let since = now.duration_since(last.at);
        if since < PER_KEY {
            return Plan::Later(PER_KEY - since);
        }
        if let Some(min) = self.config.upload_interval {
            if since < min {
                return Plan::Skip; // a newer still will come
            }
        }
        let unchanged = match (&s.fingerprint, &last.fingerprint) {
            (Some(a), Some(b)) => a.distance(b) < self.config.change_threshold,
            _ => false,
        };
        if unchanged && since < self.config.max_quiet {
            Plan::Skip
        } else {
            Plan::Send
        }
    }

    fn entries(&self, s: &Snapshot) -> Vec<serde_json::Value> {
        let captured_ms = s
            .captured_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        // The longest gap between uploads this sink intends: the viewer flags
        // a camera stale after three of them. An unchanged scene is only
        // re-sent every max_quiet, so that is the gap when skipping is on.
        let mut gap = s
            .interval
            .max(self.config.upload_interval.unwrap_or_default());
        if self.config.change_threshold > 0.0 {
            gap = gap.max(self.config.max_quiet);
        }
        let metadata = serde_json::json!({
            "camera": &*s.camera,
            "captured_ms": captured_ms,
            "width": s.width,
            "height": s.height,
            "content_type": "image/jpeg",
            "bytes": s.jpeg.len(),
            "interval_ms": gap.as_millis() as u64,
        });
        let value = base64::engine::general_purpose::STANDARD.encode(&s.jpeg);
        let mut v = vec![serde_json::json!({
            "key": format!("latest/{}", s.camera),
            "value": value,
            "base64": true,
            "metadata": metadata,
        })];
        if let Some(ttl) = self.config.history_ttl {
            let stamp = s.captured_at_rfc3339().replace(['-', ':'], "");
            v.push(serde_json::json!({
                "key": format!("history/{}/{stamp}", s.camera),
                "value": value,
                "base64": true,
                "metadata": metadata,
                "expiration_ttl": ttl.as_secs().max(60),
            }));
        }
        v
    }

    /// Sends one bulk request; returns the keys KV did not store.
    async fn put_bulk(&self, body: String) -> Result<Vec<String>, SinkError> {
        let resp = self
            .client
            .put(&self.bulk_url)
            .bearer_auth(self.config.api_token.expose())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                // reqwest's Display does not include headers; the URL holds
                // only ids. Keep the first line.
                SinkError::new(format!(
                    "Cloudflare KV: request failed: {}",
                    error_chain(&e)
                ))
            })?;
        let status = resp.status();
        let retry_after = resp.headers().get("retry-after").map(|v| {
            v.to_str().map_or(RetryAfter::Unreadable, |v| {
                parse_retry_after(v, SystemTime::now())
            })
        });
        let text = resp.text().await.unwrap_or_default();
        let envelope: Option<Envelope> = serde_json::from_str(&text).ok();
        if status.as_u16() == 429 {
            let asked = retry_after.unwrap_or(RetryAfter::Unreadable);
            let wait = asked.delay();
            return Err(SinkError {
                message: format!(
                    "Cloudflare KV: HTTP 429 Too Many Requests{}; waiting {} s ({})",
                    envelope
                        .as_ref()
                        .map(Envelope::first_error)
                        .unwrap_or_default(),
                    wait.as_secs(),
                    asked.explain()
                ),
                retry_after: Some(wait),
            });
        }
        let ok = status.is_success() && envelope.as_ref().is_some_and(|e| e.success);
        if !ok {
            let detail = envelope
                .as_ref()
                .map(Envelope::first_error)
                .unwrap_or_else(|| format!(": {}", text.chars().take(120).collect::<String>()));
            let hint = match status.as_u16() {
                400 if detail.contains("10013") => "; check namespace_id",
                401 | 403 => {
                    return Err(SinkError::new(format!(
                        "Cloudflare KV: HTTP {}{detail}; check {} (the token needs Workers KV \
                         Storage: Edit on this account)",
                        status.as_u16(),
                        self.config.token_source
                    )))
                }
                404 => "; check account_id and namespace_id",
                _ => "",
            };
            return Err(SinkError {
                message: format!("Cloudflare KV: HTTP {}{detail}{hint}", status.as_u16()),
                // An unreadable header on a 5xx: the runner's own backoff.
                retry_after: retry_after.and_then(|r| match r {
                    RetryAfter::Unreadable => None,
                    r => Some(r.delay()),
                }),
            });
        }
        Ok(envelope
            .and_then(|e| e.result)
            .and_then(|r| r.unsuccessful_keys)
            .unwrap_or_default())
    }
}

/// `{success, errors, messages, result}`; `result` may be `{}` or `null`.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    errors: Vec<ApiError>,
    #[serde(default)]
    result: Option<BulkResult>,
}

impl Envelope {
    fn first_error(&self) -> String {
        self.errors
            .first()
            .map(|e| format!(": {} {}", e.code, e.message))
            .unwrap_or_default()
    }
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct BulkResult {
    #[serde(default)]
    unsuccessful_keys: Option<Vec<String>>,
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

impl Sink for CloudflareKvSink {
    fn name(&self) -> &str {
        "cloudflare_kv"
    }

    fn pacing(&self) -> Duration {
        BATCH_EVERY
    }

    fn skipped(&self) -> u64 {
        self.state().skipped
    }

    fn write<'a>(&'a self, batch: &'a [Snapshot]) -> BoxFuture<'a, Vec<(Arc<str>, SinkError)>> {
        Box::pin(async move {
            let now = Instant::now();
            let mut failed = Vec::new();
            let mut send: Vec<&Snapshot> = Vec::new();
            {
                let mut st = self.state();
                for s in batch {
                    match self.plan(&st, s, now) {
                        Plan::Send => send.push(s),
                        Plan::Skip => st.skipped += 1,
                        Plan::Later(d) => failed.push((
                            s.camera.clone(),
                            SinkError {
                                message: "waiting for Cloudflare's one write per second per key"
                                    .into(),
                                retry_after: Some(d),
                            },
                        )),
                    }
                }
                if send.is_empty() {
                    return failed;
                }
                while st
                    .requests
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= BUDGET_WINDOW)
                {
                    st.requests.pop_front();
                }
                if st.requests.len() >= BUDGET {
                    let free_at =
                        *st.requests.front().expect("budget is not empty") + BUDGET_WINDOW;
                    let e = SinkError {
                        message: format!(
                            "Cloudflare KV: holding uploads, {BUDGET} API requests in 5 minutes \
                             (Cloudflare blocks every call for 5 minutes past 1,200)"
                        ),
                        retry_after: Some(free_at.duration_since(now)),
                    };
                    failed.extend(send.iter().map(|s| (s.camera.clone(), e.clone())));
                    return failed;
                }
                st.requests.push_back(now);
            }
            let entries: Vec<serde_json::Value> =
                send.iter().flat_map(|s| self.entries(s)).collect();
            let body = serde_json::Value::Array(entries).to_string();
            match self.put_bulk(body).await {
                Err(e) => failed.extend(send.iter().map(|s| (s.camera.clone(), e.clone()))),
                Ok(unsuccessful) => {
                    let mut st = self.state();
                    for s in send {
                        let latest = format!("latest/{}", s.camera);
                        if unsuccessful.contains(&latest) {
                            failed.push((
                                s.camera.clone(),
                                SinkError::new(format!(
                                    "Cloudflare KV did not store {latest}; retrying"
                                )),
                            ));
                        } else {
                            st.uploaded.insert(
                                s.camera.clone(),
                                Uploaded {
                                    seq: s.seq,
                                    at: now,
                                    fingerprint: s.fingerprint.clone(),
                                },
                            );
                        }
                    }
                }
            }
            failed
        })
    }
}
