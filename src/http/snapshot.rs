//! `/snapshot/<camera>.jpg`: the camera's latest still, from memory.
//!
//! * `ETag: "<camera>-<seq>-<capture ms>"` (the capture time keeps tags
//!   unique across daemon restarts, where `seq` starts over), and
//!   `If-None-Match` answers 304;
//! * `Last-Modified` and `X-Capture-Time` (RFC 3339) give the capture time;
//! * `Cache-Control: no-cache`: caches may keep it but must revalidate;
//! * `?max_age=SECS` answers 503 when the still is older than that, for
//!   consumers that would rather have nothing than an old picture;
//! * 404 for an unknown camera or one without a still yet.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{unix_ms, HttpState};
use crate::Snapshot;

/// Query parameters of the still route.
#[derive(Deserialize)]
pub struct StillQuery {
    /// Refuse (503) a still older than this many seconds.
    max_age: Option<f64>,
}

/// The strong entity tag of a still.
pub fn etag(s: &Snapshot) -> String {
    format!("\"{}-{}-{}\"", s.camera, s.seq, unix_ms(s.captured_at))
}

fn text(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// GET `/snapshot/{camera}.jpg`.
pub async fn still(
    State(state): State<Arc<HttpState>>,
    Path(file): Path<String>,
    Query(q): Query<StillQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(camera) = file.strip_suffix(".jpg") else {
        return text(
            StatusCode::NOT_FOUND,
            "not found: stills are at /snapshot/<camera>.jpg\n".into(),
        );
    };
    let known = state
        .cameras
        .iter()
        .any(|(rx, _)| &*rx.borrow().name == camera);
    if !known {
        return text(StatusCode::NOT_FOUND, "no camera by that name\n".into());
    }
    let Some(still) = state.store.latest(camera) else {
        return text(
            StatusCode::NOT_FOUND,
            "this camera has no still yet; /api/status says why\n".into(),
        );
    };
    let age = still.age();
    if let Some(max) = q.max_age {
        if !max.is_finite() || max < 0.0 {
            return text(
                StatusCode::BAD_REQUEST,
                "max_age must be a number of seconds, 0 or more\n".into(),
            );
        }
        if age.as_secs_f64() > max {
            let mut r = text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the latest still is {:.1} s old, older than max_age={max}\n",
                    age.as_secs_f64()
                ),
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(still.interval.as_secs().max(1)),
            );
            return r;
        }
    }
    let tag = etag(&still);
    let mut h = HeaderMap::new();
    h.insert(header::ETAG, HeaderValue::from_str(&tag).expect("ASCII"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::LAST_MODIFIED,
        HeaderValue::from_str(&httpdate::fmt_http_date(still.captured_at)).expect("ASCII"),
    );
    h.insert(
        "x-capture-time",
        HeaderValue::from_str(&still.captured_at_rfc3339()).expect("ASCII"),
    );
    if none_match(&headers, &tag) {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    (StatusCode::OK, h, still.jpeg).into_response()
}

/// True when `If-None-Match` lists `tag` (weakly compared, as RFC 9110 says
/// for this header) or is `*`.
fn none_match(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == tag)
}
