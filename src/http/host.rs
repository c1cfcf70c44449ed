//! The `Host` check against DNS rebinding.
//!
//! A web page on `evil.example` can make its name resolve to 127.0.0.1 and
//! then read `http://evil.example:8080/api/status` with the browser's
//! blessing: to the browser it is the page's own origin. The only trace of
//! the trick is the `Host` header, which still says `evil.example`. So an
//! unauthenticated viewer (loopback only, which the configuration enforces)
//! serves only requests whose `Host` names loopback (`localhost`,
//! `127.0.0.0/8`, `[::1]`, any port) or one of `[http] hosts`, and answers
//! anything else with 421 Misdirected Request.
//!
//! With authentication configured the browser of a rebinding page has no
//! credentials to send, and the viewer is meant to be reached under
//! whatever name the LAN uses, so the check applies only when `hosts` is
//! set (then loopback names and those hosts are served).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::HttpState;
use crate::config::HttpConfig;

/// Which `Host` values the server answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPolicy {
    /// Any (authentication is on and `hosts` is not set).
    Any,
    /// Loopback names and these entries (`name` or `name:port`, normalised).
    Listed(Vec<String>),
}

impl HostPolicy {
    /// From the `[http]` table: see the module documentation.
    pub fn new(config: &HttpConfig) -> Self {
        if config.requires_auth() && config.hosts.is_empty() {
            HostPolicy::Any
        } else {
            HostPolicy::Listed(config.hosts.clone())
        }
    }

    /// Whether a `Host` header value (or a request URI's authority) is served.
    pub fn allows(&self, value: &str) -> bool {
        let HostPolicy::Listed(list) = self else {
            return true;
        };
        let Some((host, port)) = split(value) else {
            return false;
        };
        if is_loopback(&host) {
            return true;
        }
        list.iter().any(|entry| match entry.rsplit_once(':') {
            // `[v6]` entries without a port contain ':' too; `split` knows.
            _ if entry.starts_with('[') && entry.ends_with(']') => *entry == host,
            Some((name, p)) if p.bytes().all(|b| b.is_ascii_digit()) => {
                name == host && port == Some(p)
            }
            _ => *entry == host,
        })
    }
}

/// `host[:port]` split and normalised (lower case, one trailing dot
/// dropped; IPv6 kept in brackets), or `None` when it is not a host name.
fn split(value: &str) -> Option<(String, Option<&str>)> {
    let value = value.trim();
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        inside.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{}]", inside.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match value.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (value, None),
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        let ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !ok {
            return None;
        }
        (host.to_ascii_lowercase(), port)
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    Some((host, port))
}

fn is_loopback(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().is_ok_and(|a| a.is_loopback());
    }
    host.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback())
}

/// A `[http] hosts` entry normalised for [`HostPolicy`], or `None` when it
/// is not `name` or `name:port`.
pub fn normalize_config_host(entry: &str) -> Option<String> {
    let (host, port) = split(entry)?;
    Some(match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

/// Middleware: 421 for a `Host` (or absolute request URI) the policy does
/// not serve, 400 for a request without any.
pub async fn check(State(state): State<Arc<HttpState>>, req: Request, next: Next) -> Response {
    if state.hosts == HostPolicy::Any {
        return next.run(req).await;
    }
    let header = req.headers().get(header::HOST).map(|v| v.to_str());
    let authority = req.uri().authority().map(|a| a.as_str());
    let verdict = match (header, authority) {
        (Some(Err(_)), _) => Some(false),
        (None, None) => None,
        (h, a) => Some(
            h.is_none_or(|h| h.is_ok_and(|h| state.hosts.allows(h)))
                && a.is_none_or(|a| state.hosts.allows(a)),
        ),
    };
    match verdict {
        Some(true) => next.run(req).await,
        Some(false) => refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "this rtsnap viewer does not answer to that host name (a guard against DNS \
             rebinding); if it is yours, add it to `[http] hosts = [...]` in the \
             configuration and restart rtsnap\n",
        ),
        None => refuse(StatusCode::BAD_REQUEST, "a Host header is required\n"),
    }
}

fn refuse(status: StatusCode, body: &'static str) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(hosts: &[&str]) -> HostPolicy {
        HostPolicy::Listed(
            hosts
                .iter()
                .map(|h| normalize_config_host(h).unwrap())
                .collect(),
        )
    }

    #[test]
    fn loopback_names_with_and_without_port() {
        let p = listed(&[]);
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.3.4.5:1",
            "[::1]",
            "[::1]:8080",
            "localhost",
            "LOCALHOST:8080",
            "localhost.:80",
        ] {
            assert!(p.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "[::2]:8080",
            "[::1",
            "::1",
            "10.0.0.1",
            "localhost:",
            "localhost:80:80",
            "localhost:http",
            "local host",
            "",
        ] {
            assert!(!p.allows(bad), "{bad}");
        }
        assert!(HostPolicy::Any.allows("evil.example"));
    }

    #[test]
    fn configured_hosts_with_and_without_port() {
        let p = listed(&[
            "Cams.LAN",
            "rtsnap.example.org:8443",
            "[fd00::5]",
            "192.168.1.20",
        ]);
        assert!(p.allows("cams.lan"));
        assert!(p.allows("cams.lan:8080"));
        assert!(p.allows("CAMS.lan."));
        assert!(p.allows("rtsnap.example.org:8443"));
        assert!(!p.allows("rtsnap.example.org"));
        assert!(!p.allows("rtsnap.example.org:8080"));
        assert!(p.allows("[FD00::5]:8080"));
        assert!(p.allows("192.168.1.20:8080"));
        assert!(!p.allows("cams.lan.evil.example"));
        assert!(localhost_still_allowed(&p));
        for bad in ["http://x", "x/y", "", "a b", "user@x", "x:99999999"] {
            assert!(normalize_config_host(bad).is_none(), "{bad}");
        }
    }

    fn localhost_still_allowed(p: &HostPolicy) -> bool {
        p.allows("localhost:8080") && p.allows("[::1]")
    }

    #[test]
    fn policy_from_config() {
        let mut c = HttpConfig::open("127.0.0.1:0".parse().unwrap());
        assert_eq!(HostPolicy::new(&c), HostPolicy::Listed(Vec::new()));
        c.bearer_token = Some(crate::Secret::new("0123456789abcdef"));
        assert_eq!(HostPolicy::new(&c), HostPolicy::Any);
        c.hosts = vec!["cams.lan".into()];
        assert_eq!(
            HostPolicy::new(&c),
            HostPolicy::Listed(vec!["cams.lan".into()])
        );
    }
}
