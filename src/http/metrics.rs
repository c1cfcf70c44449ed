//! `/metrics` in the Prometheus text exposition format (version 0.0.4),
//! written by hand: a few counters, gauges and two histograms do not need a
//! metrics crate.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::HttpState;
use crate::source::{CameraState, CameraStatus};

/// Upper bounds (seconds) of the decode and encode time histograms: 1 ms
/// (a 360p encode on a desktop) to 2.5 s (a 4K decode on a Pi Zero).
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A cumulative histogram of durations with [`BUCKETS`] as bounds; cheap to
/// copy, so it lives in [`CameraStatus`] and is updated by the camera task.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DurationHistogram {
    /// Observations at or under each bound (not cumulative; summed on output).
    pub counts: [u64; BUCKETS.len()],
    /// Every observation.
    pub count: u64,
    /// Sum of the observations, in seconds.
    pub sum: f64,
}

impl DurationHistogram {
    /// Records one duration.
    pub fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
    }
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn per_camera(
    out: &mut String,
    cams: &[(CameraStatus, Duration)],
    name: &str,
    kind: &str,
    help: &str,
    value: impl Fn(&CameraStatus, Duration) -> Option<f64>,
) {
    family(out, name, kind, help);
    for (s, interval) in cams {
        if let Some(v) = value(s, *interval) {
            let _ = writeln!(out, "{name}{{camera=\"{}\"}} {v}", escape_label(&s.name));
        }
    }
}

fn histogram(
    out: &mut String,
    cams: &[(CameraStatus, Duration)],
    name: &str,
    help: &str,
    h: impl Fn(&CameraStatus) -> &DurationHistogram,
) {
    family(out, name, "histogram", help);
    for (s, _) in cams {
        let h = h(s);
        let cam = escape_label(&s.name);
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(h.counts) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{name}_bucket{{camera=\"{cam}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{camera=\"{cam}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "{name}_sum{{camera=\"{cam}\"}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{camera=\"{cam}\"}} {}", h.count);
    }
}

/// The whole exposition.
pub fn render(state: &HttpState) -> String {
    let cams = state.camera_status();
    let mut out = String::new();
    let c = |v: u64| Some(v as f64);
    per_camera(
        &mut out,
        &cams,
        "rtsnap_camera_up",
        "gauge",
        "1 while the camera is streaming, else 0.",
        |s, _| Some(f64::from(u8::from(s.state == CameraState::Streaming))),
    );
    per_camera(
        &mut out,
        &cams,
        "rtsnap_stills_total",
        "counter",
        "Stills produced.",
        |s, _| c(s.stills),
    );
    per_camera(
        &mut out,
        &cams,
        "rtsnap_keyframes_seen_total",
        "counter",
        "Complete keyframes received.",
        |s, _| c(s.keyframes_seen),
    );
    per_camera(
        &mut out,
        &cams,
        "rtsnap_keyframes_decoded_total",
        "counter",
        "Keyframes decoded into stills.",
        |s, _| c(s.keyframes_decoded),
    );
    per_camera(
        &mut out,
        &cams,
        "rtsnap_keyframes_skipped_total",
        "counter",
        "Keyframes thrown away (lost packets, decode or encode errors).",
        |s, _| c(s.keyframes_skipped),
    );
    per_camera(
        &mut out,
        &cams,
        "rtsnap_reconnects_total",
        "counter",
        "RTSP sessions opened after the first.",
        |s, _| c(s.reconnects),
    );
    per_camera(
        &mut out,
        &cams,
        "rtsnap_bytes_received_total",
        "counter",
        "Bytes of video received.",
        |s, _| c(s.bytes_received),
    );
    per_camera(
        &mut out,
        &cams,
        "rtsnap_still_age_seconds",
        "gauge",
        "Age of the newest still; absent until the first.",
        |s, _| {
            s.last_still_at.map(|t| {
                std::time::SystemTime::now()
                    .duration_since(t)
                    .unwrap_or_default()
                    .as_secs_f64()
            })
        },
    );
    per_camera(
        &mut out,
        &cams,
        "rtsnap_still_interval_seconds",
        "gauge",
        "Configured time between stills.",
        |_, interval| Some(interval.as_secs_f64()),
    );
    histogram(
        &mut out,
        &cams,
        "rtsnap_decode_seconds",
        "Time to decode one keyframe.",
        |s| &s.decode_seconds,
    );
    histogram(
        &mut out,
        &cams,
        "rtsnap_encode_seconds",
        "Time to encode one still to JPEG.",
        |s| &s.encode_seconds,
    );
    let sinks = state.sink_status();
    for (name, help, value) in [
        (
            "rtsnap_sink_writes_total",
            "Stills stored by the sink.",
            (|s: &crate::sink::SinkStatus| s.writes) as fn(&crate::sink::SinkStatus) -> u64,
        ),
        (
            "rtsnap_sink_skipped_total",
            "Stills the sink chose not to store (unchanged scene, upload interval).",
            |s| s.skipped,
        ),
        ("rtsnap_sink_errors_total", "Failed write attempts.", |s| {
            s.errors
        }),
        (
            "rtsnap_sink_restarts_total",
            "Times the sink's task died (panicked or returned) and was restarted.",
            |s| s.restarts,
        ),
        (
            "rtsnap_sink_failing_cameras",
            "Cameras whose last write to the sink failed.",
            |s| s.failing.len() as u64,
        ),
    ] {
        family(
            &mut out,
            name,
            if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            },
            help,
        );
        for s in &sinks {
            let _ = writeln!(
                out,
                "{name}{{sink=\"{}\"}} {}",
                escape_label(&s.name),
                value(s)
            );
        }
    }
    http_server(&mut out, state);
    out
}

/// The HTTP server's own connections and logins.
fn http_server(out: &mut String, state: &HttpState) {
    let conns = &state.connections;
    family(
        out,
        "rtsnap_http_connections",
        "gauge",
        "HTTP connections open now.",
    );
    let _ = writeln!(out, "rtsnap_http_connections {}", conns.open());
    family(
        out,
        "rtsnap_http_max_connections",
        "gauge",
        "The configured connection limit ([http] max_connections).",
    );
    let _ = writeln!(
        out,
        "rtsnap_http_max_connections {}",
        conns.limits().max_connections
    );
    let c = &conns.counters;
    let a = &state.auth.counters;
    let load = |v: &std::sync::atomic::AtomicU64| v.load(std::sync::atomic::Ordering::Relaxed);
    for (name, help, value) in [
        (
            "rtsnap_http_connections_accepted_total",
            "HTTP connections accepted.",
            load(&c.accepted),
        ),
        (
            "rtsnap_http_connections_evicted_total",
            "Idle HTTP connections closed to make room for a new one.",
            load(&c.evicted),
        ),
        (
            "rtsnap_http_connections_refused_total",
            "HTTP connections refused (503) because every open one was busy.",
            load(&c.refused),
        ),
        (
            "rtsnap_http_header_timeouts_total",
            "HTTP connections closed because a request head took over header_timeout.",
            load(&c.header_timeouts),
        ),
        (
            "rtsnap_http_idle_timeouts_total",
            "HTTP connections closed after idle_timeout.",
            load(&c.idle_timeouts),
        ),
        (
            "rtsnap_http_accept_errors_total",
            "Errors accepting HTTP connections (e.g. out of file descriptors).",
            load(&c.accept_errors),
        ),
        (
            "rtsnap_http_login_failures_total",
            "Basic-auth logins that failed verification.",
            load(&a.failures),
        ),
        (
            "rtsnap_http_login_throttled_total",
            "Basic-auth logins answered 429 (client backoff).",
            load(&a.throttled),
        ),
        (
            "rtsnap_http_login_busy_total",
            "Basic-auth logins answered 503 (too many waiting for verification).",
            load(&a.busy),
        ),
    ] {
        family(out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
}

/// GET `/metrics`.
pub async fn prometheus(State(state): State<Arc<HttpState>>) -> Response {
    let mut r = render(&state).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets() {
        let mut h = DurationHistogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(7));
        h.observe(Duration::from_secs(9));
        assert_eq!(h.count, 3);
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[3], 1);
        assert_eq!(h.counts.iter().sum::<u64>(), 2, "9 s is only in +Inf");
        assert!((h.sum - 9.0075).abs() < 1e-9);
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
