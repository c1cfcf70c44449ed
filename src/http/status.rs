//! `/api/status` (JSON, what the viewer polls) and `/healthz` (for systemd,
//! uptime checkers and load balancers).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::{unix_ms, HttpState};
use crate::sink::SinkState;
use crate::source::{CameraState, CameraStatus};

/// A still older than this many intervals makes `/healthz` fail.
pub const HEALTHY_INTERVALS: u32 = 3;

/// A state as a short machine word and, where there is one, the reason.
pub fn state_parts(state: &CameraState) -> (&'static str, Option<&str>) {
    match state {
        CameraState::Connecting => ("connecting", None),
        CameraState::Streaming => ("streaming", None),
        CameraState::BackingOff { error, .. } => ("backing_off", Some(error)),
        CameraState::Unsupported { why } => ("unsupported", Some(why)),
        CameraState::Stopped => ("stopped", None),
    }
}

fn camera_json(state: &HttpState, s: &CameraStatus, interval: Duration, now: SystemTime) -> Value {
    let still = state.store.latest(&s.name);
    let (word, detail) = state_parts(&s.state);
    let retry_ms = match &s.state {
        CameraState::BackingOff { until, .. } => Some(unix_ms(*until)),
        _ => None,
    };
    json!({
        "name": &*s.name,
        "state": word,
        "state_detail": detail,
        "retry_at_ms": retry_ms,
        "last_error": s.last_error,
        "warnings": s.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "interval_ms": interval.as_millis() as u64,
        "seq": still.as_ref().map(|x| x.seq),
        "captured_ms": still.as_ref().map(|x| unix_ms(x.captured_at)),
        "last_still_age_s": s.last_still_at
            .map(|t| now.duration_since(t).unwrap_or_default().as_secs_f64()),
        "width": s.dims.map(|d| d.0),
        "height": s.dims.map(|d| d.1),
        "fps": s.fps,
        "bitrate": s.bitrate,
        "keyframe_interval_s": s.keyframe_interval.map(|d| d.as_secs_f64()),
        "stills": s.stills,
        "reconnects": s.reconnects,
        "keyframes_seen": s.keyframes_seen,
        "keyframes_decoded": s.keyframes_decoded,
        "keyframes_skipped": s.keyframes_skipped,
        "bytes_received": s.bytes_received,
    })
}

/// The whole status document.
pub fn document(state: &HttpState) -> Value {
    let now = SystemTime::now();
    let cameras: Vec<Value> = state
        .camera_status()
        .iter()
        .map(|(s, interval)| camera_json(state, s, *interval, now))
        .collect();
    let sinks: Vec<Value> = state
        .sink_status()
        .iter()
        .map(|s| {
            let restart_ms = match &s.state {
                SinkState::Restarting { until } => Some(unix_ms(*until)),
                _ => None,
            };
            json!({
                "name": s.name,
                // A dead-and-restarting sink must not look healthy.
                "state": s.state.word(),
                "restart_at_ms": restart_ms,
                "restarts": s.restarts,
                "last_restart": s.last_restart.as_ref().map(|r| json!({
                    "at_ms": unix_ms(r.at),
                    "cause": r.cause.word(),
                    "detail": r.cause.to_string(),
                })),
                "writes": s.writes,
                "skipped": s.skipped,
                "errors": s.errors,
                "failing": s.failing.iter()
                    .map(|(camera, f)| json!({
                        "camera": camera,
                        "error": f.error,
                        "retry_at_ms": unix_ms(f.retry_at),
                    }))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "now_ms": unix_ms(now), "cameras": cameras, "sinks": sinks })
}

/// GET `/api/status`.
pub async fn json(State(state): State<Arc<HttpState>>) -> Response {
    let mut r = axum::Json(document(&state)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Why a camera is unhealthy, or `None` when its still is fresh enough.
pub fn unhealthy(state: &HttpState, s: &CameraStatus, interval: Duration) -> Option<String> {
    let limit = interval * HEALTHY_INTERVALS;
    let (word, detail) = state_parts(&s.state);
    let state_text = match detail {
        Some(d) => format!("{word}: {d}"),
        None => word.to_owned(),
    };
    match state.store.latest(&s.name) {
        None => Some(format!("no still yet ({state_text})")),
        Some(still) if still.age() > limit => Some(format!(
            "last still is {:.0} s old, more than {HEALTHY_INTERVALS} x {} s ({state_text})",
            still.age().as_secs_f64(),
            interval.as_secs_f64()
        )),
        Some(_) => None,
    }
}

/// GET `/healthz`: 200 `ok` when every camera has a still younger than
/// [`HEALTHY_INTERVALS`] times its interval, else 503 listing the others.
pub async fn healthz(State(state): State<Arc<HttpState>>) -> Response {
    let bad: Vec<String> = state
        .camera_status()
        .iter()
        .filter_map(|(s, interval)| {
            unhealthy(&state, s, *interval).map(|why| format!("{}: {why}", s.name))
        })
        .collect();
    let (code, body) = if bad.is_empty() {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy\n{}\n", bad.join("\n")),
        )
    };
    let mut r = (code, body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
