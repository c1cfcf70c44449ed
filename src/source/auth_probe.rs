//! Which authentication a camera asks for, learned before any password is sent.
//!
//! retina answers a 401 by itself: it picks Digest when the camera's
//! `WWW-Authenticate` offers it and otherwise Basic, which puts
//! `user:password` on the wire in base64, that is in clear text. It does not
//! tell its caller which it chose, nor let the caller veto Basic. So when a
//! camera has credentials, [`challenge`] first sends one unauthenticated
//! DESCRIBE on a connection of its own, reads the 401 (at most
//! [`MAX_HEAD`] bytes, within the camera's timeout) and closes it; the
//! challenge is read exactly as retina reads it (every `WWW-Authenticate`
//! header joined with `", "`, parsed by the `http-auth` crate retina uses).
//! Only then are the credentials handed to retina, or, with
//! `allow_basic_auth = false`, refused with [`SourceError::BasicAuthRefused`](super::SourceError::BasicAuthRefused).
//!
//! Limits, on purpose: this protects against a camera that is *configured*
//! for Basic and a passive eavesdropper on the network. A hostile server that
//! answers the probe with Digest and retina's own connection with Basic (or
//! asks for Basic only at SETUP) still gets the password; an active
//! impersonator can also brute-force a captured Digest response offline, so
//! against one only a trusted network helps. The probe costs one extra TCP
//! connection and round trip per session opened, and only for cameras with
//! credentials. It sends no credentials, exactly like every client's first
//! DESCRIBE, so cameras that lock users out after failed logins do not count
//! it as one.

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use url::Url;

/// The most of the probe's answer that is read: a 401's head is a few
/// hundred bytes; anything longer is not a plausible RTSP status head.
pub const MAX_HEAD: usize = 16 * 1024;

/// What the camera answered the unauthenticated DESCRIBE with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// No 401: the camera did not ask for a login (retina will not send one).
    NotAsked,
    /// 401 with a Digest challenge: retina answers with Digest.
    Digest,
    /// 401 with Basic only: retina would send the password in clear text.
    Basic,
    /// 401 without a challenge rtsnap understands; retina reports it.
    Unknown,
}

/// Why the probe got no answer.
#[derive(Debug)]
pub enum ProbeError {
    /// Nothing within the timeout (connect or answer).
    Timeout,
    /// The connection failed or the answer is not RTSP; retina will say
    /// more precisely when it tries.
    Io(std::io::Error),
}

/// A warning about how a camera's credentials travel, shown once in the log
/// and kept in the camera's status (`warnings` in `/api/status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialWarning {
    /// The camera asked for Basic authentication and the password was sent.
    BasicAuth,
    /// The URL carries credentials (`allow_url_credentials = true`).
    UrlCredentials,
}

impl fmt::Display for CredentialWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CredentialWarning::BasicAuth => {
                "the camera asks for Basic authentication only, so the password crosses the \
                 network in clear text; prefer digest on the camera (set its RTSP \
                 authentication to digest), or set allow_basic_auth = false to refuse"
            }
            CredentialWarning::UrlCredentials => {
                "the URL carries credentials (allow_url_credentials): rtsnap masks them, but they \
                 cross the network in clear text in every request"
            }
        })
    }
}

/// Sends one DESCRIBE without credentials to `url` and reports which
/// authentication the answer asks for. Bounded by `timeout` as a whole and by
/// [`MAX_HEAD`] bytes.
pub async fn challenge(url: &Url, timeout: Duration) -> Result<Challenge, ProbeError> {
    let host = url.host_str().unwrap_or("");
    let addr = format!("{host}:{}", url.port().unwrap_or(554));
    let exchange = async {
        let mut conn = TcpStream::connect(addr.as_str())
            .await
            .map_err(ProbeError::Io)?;
        let request = format!(
            "DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: rtsnap/{}\r\n\
             Accept: application/sdp\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        );
        conn.write_all(request.as_bytes())
            .await
            .map_err(ProbeError::Io)?;
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 2048];
        loop {
            let n = conn.read(&mut buf).await.map_err(ProbeError::Io)?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
            if head_end(&head).is_some() || head.len() >= MAX_HEAD {
                break;
            }
        }
        head.truncate(head_end(&head).unwrap_or(head.len()).min(MAX_HEAD));
        Ok(head)
    };
    let head = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ProbeError::Timeout)??;
    parse(&head).ok_or_else(|| {
        ProbeError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the answer to DESCRIBE is not an RTSP response",
        ))
    })
}

/// Where the head ends (after its blank line).
fn head_end(b: &[u8]) -> Option<usize> {
    let crlf = b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = b.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The challenge a response head asks for; `None` if it is not RTSP.
fn parse(head: &[u8]) -> Option<Challenge> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines();
    let status_line = lines.next()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("RTSP/") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    if status != 401 {
        return Some(Challenge::NotAsked);
    }
    // As retina sees it: every WWW-Authenticate value, joined.
    let values: Vec<&str> = lines
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("www-authenticate"))
        .map(|(_, v)| v.trim())
        .collect();
    if values.is_empty() {
        return Some(Challenge::Unknown);
    }
    Some(
        match http_auth::PasswordClient::try_from(values.join(", ").as_str()) {
            Ok(http_auth::PasswordClient::Basic(_)) => Challenge::Basic,
            Ok(http_auth::PasswordClient::Digest(_)) => Challenge::Digest,
            // http-auth's enum is non-exhaustive.
            Ok(_) | Err(_) => Challenge::Unknown,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_challenge_as_retina_does() {
        let h = |s: &str| parse(s.as_bytes());
        assert_eq!(
            h("RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\nWWW-Authenticate: Basic realm=\"cam\"\r\n\r\n"),
            Some(Challenge::Basic)
        );
        // Digest wins over Basic, in one header or two.
        assert_eq!(
            h(
                "RTSP/1.0 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"a\"\r\n\
               www-authenticate: Digest realm=\"a\", nonce=\"n1\"\r\n\r\n"
            ),
            Some(Challenge::Digest)
        );
        assert_eq!(
            h("RTSP/1.0 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"a\", nonce=\"n\"\r\n\r\n"),
            Some(Challenge::Digest)
        );
        assert_eq!(
            h("RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n"),
            Some(Challenge::NotAsked)
        );
        assert_eq!(
            h("RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\n\r\n"),
            Some(Challenge::Unknown)
        );
        assert_eq!(h("HTTP/1.1 400 Bad Request\r\n\r\n"), None);
        assert_eq!(head_end(b"RTSP/1.0 200 OK\r\n\r\nv=0"), Some(19));
    }

    /// A server on loopback that runs `serve` on its first connection.
    async fn server<F, Fut>(serve: F) -> Url
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("rtsp://{}/ch1", l.local_addr().unwrap())).unwrap();
        tokio::spawn(async move {
            if let Ok((sock, _)) = l.accept().await {
                serve(sock).await;
            }
        });
        url
    }

    #[tokio::test]
    async fn a_silent_server_costs_one_timeout() {
        let url = server(|sock| async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(sock);
        })
        .await;
        let started = std::time::Instant::now();
        let r = challenge(&url, Duration::from_millis(300)).await;
        assert!(matches!(r, Err(ProbeError::Timeout)), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn an_endless_head_is_cut_at_max_head() {
        let url = server(|mut sock| async move {
            let _ = sock
                .write_all(
                    b"RTSP/1.0 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\nX-Pad: ",
                )
                .await;
            let junk = [b'a'; 4096];
            // Padding for 10 s (or until the client hangs up): a probe
            // that read it all would hit its 3 s timeout instead.
            let end = tokio::time::Instant::now() + Duration::from_secs(10);
            while tokio::time::Instant::now() < end {
                if sock.write_all(&junk).await.is_err() {
                    return;
                }
            }
        })
        .await;
        let r = challenge(&url, Duration::from_secs(3)).await;
        // The MAX_HEAD bytes read already hold the challenge.
        assert!(matches!(r, Ok(Challenge::Basic)), "{r:?}");
    }

    #[tokio::test]
    async fn a_server_that_is_not_rtsp_is_left_to_retina() {
        let url = server(|mut sock| async move {
            let _ = sock.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await;
        })
        .await;
        let r = challenge(&url, Duration::from_secs(5)).await;
        assert!(matches!(r, Err(ProbeError::Io(_))), "{r:?}");
    }
}
