//! Credentials inside camera URLs: finding them, and showing URLs without them.
//!
//! Cheap cameras and DVRs often document URLs that carry the password
//! themselves: in the query (`/cam/realmonitor?channel=1&user=admin&password=...`,
//! `videostream.cgi?loginuse=admin&loginpas=...`) or, XMEye style, in a path
//! segment (`/user=admin&password=...&channel=1&stream=0.sdp`, or with `_`
//! between the pairs). Such a URL ends up in logs, error messages, status
//! pages and shell history, so the configuration refuses it unless the
//! camera's owner opts in (`allow_url_credentials`, for cameras that accept
//! nothing else); and everything that shows a camera URL goes through
//! [`RedactedUrl`] (or [`redact_text`] for free text that may quote one), which
//! replaces the values of password-like keys and the `user:password@` part
//! with `***`.
//!
//! Detection is by key name, not by value: a value is a secret when its key
//! is one of [`SECRET_KEYS`] (compared case-insensitively, after
//! percent-decoding, with `_` and `.` counting as separators so `user_pwd=`
//! and `api.token=` are caught). User names alone are not secrets. Empty
//! values (`password=`, the XMEye factory default) are not secrets either.

use std::fmt;

use url::Url;

/// Keys whose values are treated as secrets, lowercase.
///
/// `pass`/`pwd`/`psw`/`pw` and `loginpas` are what camera firmwares use
/// besides `password`; `token`, `auth`, `key` and `secret` cover relays and
/// cloud gateways that authorise with a bearer value in the URL.
pub const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "passwrd",
    "passw",
    "pass",
    "pwd",
    "psw",
    "pw",
    "loginpas",
    "loginpass",
    "passphrase",
    "token",
    "authtoken",
    "accesstoken",
    "auth",
    "authorization",
    "secret",
    "apikey",
    "key",
    "sessionkey",
];

/// What stands in for a secret in everything rtsnap shows.
pub const MASK: &str = "***";

/// Where a URL carries a credential. Holds the key name only, never the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlSecret {
    /// `rtsp://user:password@host/` (or just `user@`).
    UserInfo,
    /// A `key=value` pair in the query string.
    Query {
        /// The key as written, e.g. `password`.
        key: String,
    },
    /// A `key=value` pair inside a path segment (XMEye style).
    Path {
        /// The key as written.
        key: String,
    },
}

impl fmt::Display for UrlSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlSecret::UserInfo => f.write_str("credentials before the host (user:password@)"),
            // No `key=` here: that would read as a URL pair to the log
            // scrubber, and be masked.
            UrlSecret::Query { key } => write!(f, "a credential in the query (key \"{key}\")"),
            UrlSecret::Path { key } => write!(f, "a credential in the path (key \"{key}\")"),
        }
    }
}

/// The first credential `url` carries, if any.
pub fn url_secret(url: &Url) -> Option<UrlSecret> {
    if !url.username().is_empty() || url.password().is_some() {
        return Some(UrlSecret::UserInfo);
    }
    let key_of = |text: &str| {
        // Both as written and percent-decoded: `password%3Dx` is decoded
        // by some firmwares before they split the pairs.
        first_secret(text).or_else(|| first_secret(&percent_decode(text)))
    };
    if let Some(key) = key_of(url.path()) {
        return Some(UrlSecret::Path { key });
    }
    if let Some(key) = url.query().and_then(key_of) {
        return Some(UrlSecret::Query { key });
    }
    None
}

/// A camera URL for display: `Display` and `Debug` show it with every
/// credential replaced by `***`. Use it wherever a camera URL is logged or
/// shown.
#[derive(Clone, Copy)]
pub struct RedactedUrl<'a>(pub &'a Url);

impl fmt::Display for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = redact_text(self.0.as_str());
        // A secret only visible after percent-decoding cannot be masked in
        // place: show the origin alone.
        let after_host = shown.split_once("://").map_or("", |(_, rest)| rest);
        let tail = after_host.find('/').map_or("", |i| &after_host[i..]);
        if first_secret(&percent_decode(tail)).is_some() {
            let port = self.0.port().map(|p| format!(":{p}")).unwrap_or_default();
            return write!(
                f,
                "{}://{}{port}/{MASK}",
                self.0.scheme(),
                self.0.host_str().unwrap_or("")
            );
        }
        f.write_str(&shown)
    }
}

impl fmt::Debug for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// `text` with every `scheme://user:password@` password and every value of a
/// password-like `key=value` pair replaced by `***`. For free text that may
/// quote a URL (error messages from the RTSP library, unparsable URLs).
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (start, end) in secret_spans(text) {
        out.push_str(&text[last..start]);
        out.push_str(MASK);
        last = end;
    }
    out.push_str(&text[last..]);
    out
}

/// The byte ranges of secret values in `text`, in order, not overlapping.
fn secret_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    // user:password@ after a scheme.
    let mut from = 0;
    while let Some(i) = text[from..].find("://") {
        let auth_start = from + i + 3;
        let auth_end = text[auth_start..]
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"')
            .map_or(text.len(), |j| auth_start + j);
        if let Some(at) = text[auth_start..auth_end].rfind('@') {
            let userinfo = &text[auth_start..auth_start + at];
            if let Some(colon) = userinfo.find(':') {
                spans.push((auth_start + colon + 1, auth_start + at));
            }
        }
        from = auth_end.max(auth_start);
    }
    for (key, value) in pairs(text) {
        if !value.is_empty() && is_secret_key(&text[key.clone()]) {
            spans.push((value.start, value.end));
        }
    }
    spans.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
    for (s, e) in spans {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

/// The first secret key with a non-empty value in `text`, as written.
fn first_secret(text: &str) -> Option<String> {
    pairs(text)
        .into_iter()
        // A masked value is no secret any more (and shows only MASK).
        .find(|(k, v)| !v.is_empty() && &text[v.clone()] != MASK && is_secret_key(&text[k.clone()]))
        .map(|(k, _)| text[k].to_owned())
}

fn is_secret_key(key: &str) -> bool {
    let key = percent_decode(key).to_ascii_lowercase();
    SECRET_KEYS.contains(&key.as_str())
}

fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'%'
}

/// Every `key=value` in `text`: (key range, value range). A key is a run of
/// letters, digits, `-` and `%`; a value runs to the next `&`, `;`, `/`,
/// `?`, `#`, quote, comma, whitespace, or `_` that starts another `key=`.
fn pairs(text: &str) -> Vec<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'=' {
            i += 1;
            continue;
        }
        let mut k = i;
        while k > 0 && is_key_char(b[k - 1]) {
            k -= 1;
        }
        let mut v = i + 1;
        while v < b.len() && !ends_value(b, v) {
            v += 1;
        }
        if k < i {
            out.push((k..i, i + 1..v));
        }
        i = v.max(i + 1);
    }
    out
}

fn ends_value(b: &[u8], at: usize) -> bool {
    match b[at] {
        b'&' | b';' | b'/' | b'?' | b'#' | b'"' | b'\'' | b',' | b'<' | b'>' => true,
        c if c.is_ascii_whitespace() => true,
        // XMEye: user=admin_password=x_channel=1. `_` ends a value only
        // when another key= follows, so passwords may contain `_`.
        b'_' => {
            let rest = &b[at + 1..];
            let key_len = rest.iter().take_while(|&&c| is_key_char(c)).count();
            key_len > 0 && rest.get(key_len) == Some(&b'=')
        }
        _ => false,
    }
}

/// `%xx` decoded (invalid escapes kept as written; not `+`).
fn percent_decode(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Secrets shorter than this are not scrubbed from logs by value (they
/// would mangle ordinary words); the `key=value` and `user:password@` shapes
/// are masked whatever their length.
pub const MIN_SCRUBBED_LEN: usize = 4;

/// A log writer (for `tracing_subscriber::fmt().with_writer(...)`) that
/// masks secrets in every line before it reaches stderr: the URL shapes of
/// [`redact_text`], plus every secret value registered with
/// [`LogScrubber::add`] (passwords, tokens, and the base64 `user:password`
/// of a Basic `Authorization`).
///
/// rtsnap's own messages never contain a secret; this is for the lines of
/// libraries it does not control. retina, for one, logs the request URL at
/// debug level (`TEARDOWN ... for URL rtsp://...`), which carries the
/// password of a camera configured with `allow_url_credentials`. The fmt
/// layer writes each event with one `write_all`, so each call here sees
/// whole lines.
#[derive(Clone, Default)]
pub struct LogScrubber {
    secrets: std::sync::Arc<std::sync::RwLock<Vec<String>>>,
}

impl LogScrubber {
    /// A scrubber with no registered values yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Masks `secret` in every later log line (if at least
    /// [`MIN_SCRUBBED_LEN`] bytes).
    pub fn add(&self, secret: &str) {
        if secret.len() < MIN_SCRUBBED_LEN {
            return;
        }
        let mut list = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        if !list.iter().any(|s| s == secret) {
            list.push(secret.to_owned());
            // Longest first, so a secret containing another is masked whole.
            list.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// Registers a camera's password and the Basic `Authorization` value
    /// that carries it.
    pub fn add_credentials(&self, username: &str, password: &str) {
        use base64::Engine as _;
        self.add(password);
        if !password.is_empty() {
            self.add(
                &base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")),
            );
        }
    }

    /// `text` with the URL shapes and every registered value masked.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = redact_text(text);
        for s in self
            .secrets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        out
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogScrubber {
    type Writer = ScrubbedStderr;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbedStderr(self.clone())
    }
}

/// Standard error behind a [`LogScrubber`].
pub struct ScrubbedStderr(LogScrubber);

impl std::io::Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = self.0.scrub(&String::from_utf8_lossy(buf));
        std::io::stderr().lock().write_all(text.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn finds_credentials_by_shape() {
        let cases = [
            ("rtsp://admin:hunter2@h/", Some(UrlSecret::UserInfo)),
            (
                "rtsp://h:554/cam/realmonitor?channel=1&subtype=0&user=admin&password=hunter2",
                Some(UrlSecret::Query {
                    key: "password".into(),
                }),
            ),
            (
                "rtsp://h:554/user=admin&password=hunter2&channel=1&stream=0.sdp?",
                Some(UrlSecret::Path {
                    key: "password".into(),
                }),
            ),
            (
                "rtsp://h:554/user=admin_password=hunter2_channel=1_stream=0.sdp?real_stream",
                Some(UrlSecret::Path {
                    key: "password".into(),
                }),
            ),
            (
                "rtsp://h/videostream.cgi?loginuse=admin&loginpas=hunter2",
                Some(UrlSecret::Query {
                    key: "loginpas".into(),
                }),
            ),
            (
                "rtsp://h/live?usr=admin&PWD=hunter2",
                Some(UrlSecret::Query { key: "PWD".into() }),
            ),
            (
                "rtsp://h/live?access_token=abc",
                Some(UrlSecret::Query {
                    key: "token".into(),
                }),
            ),
            (
                "rtsp://h/user%3Dadmin%26password%3Dhunter2",
                Some(UrlSecret::Path {
                    key: "password".into(),
                }),
            ),
            // Not secrets: plain stream URLs, user names, empty passwords.
            (
                "rtsp://h:554/Streaming/Channels/101?transportmode=unicast",
                None,
            ),
            (
                "rtsp://h:554/cam/realmonitor?channel=1&subtype=0&unicast=true&proto=Onvif",
                None,
            ),
            (
                "rtsp://h:554/user=admin&password=&channel=1&stream=0.sdp",
                None,
            ),
            ("rtsp://h/live?user=admin", None),
            ("rtsp://h/h264Preview_01_main", None),
        ];
        for (u, want) in cases {
            assert_eq!(url_secret(&url(u)), want, "{u}");
        }
    }

    #[test]
    fn redacts_every_shape() {
        let cases = [
            ("rtsp://admin:hunter2@h/x", "rtsp://admin:***@h/x"),
            (
                "rtsp://h/user=admin&password=hunter2&channel=1&stream=0.sdp",
                "rtsp://h/user=admin&password=***&channel=1&stream=0.sdp",
            ),
            (
                "rtsp://h/user=admin_password=hun_ter2_channel=1_stream=0.sdp?real_stream",
                "rtsp://h/user=admin_password=***_channel=1_stream=0.sdp?real_stream",
            ),
            (
                "rtsp://h/live?pwd=hunter2&user_pwd=hunter2;token=t0k",
                "rtsp://h/live?pwd=***&user_pwd=***;token=***",
            ),
            (
                "rtsp://h/Streaming/Channels/101",
                "rtsp://h/Streaming/Channels/101",
            ),
        ];
        for (u, want) in cases {
            assert_eq!(RedactedUrl(&url(u)).to_string(), want, "{u}");
            assert_eq!(format!("{:?}", RedactedUrl(&url(u))), format!("\"{want}\""));
        }
        // Only visible decoded: the path is hidden entirely.
        let u = url("rtsp://h:8554/user%3Dadmin%26password%3Dhunter2");
        assert_eq!(RedactedUrl(&u).to_string(), "rtsp://h:8554/***");
        let t = redact_text("bad Content-Base \"rtsp://u:p4ss@h/a?password=hunter2\" in reply");
        assert!(!t.contains("hunter2") && !t.contains("p4ss"), "{t}");
    }

    #[test]
    fn scrubber_masks_registered_values_and_url_shapes() {
        let s = LogScrubber::new();
        s.add_credentials("admin", "hunter2");
        s.add("abc"); // too short to scrub by value
        let line = "DEBUG Authorization: Basic YWRtaW46aHVudGVyMg== pw hunter2 abc \
                    TEARDOWN for URL rtsp://h/user=admin&password=x9y8z7&channel=1";
        let out = s.scrub(line);
        assert_eq!(
            out,
            "DEBUG Authorization: Basic *** pw *** abc \
             TEARDOWN for URL rtsp://h/user=admin&password=***&channel=1"
        );
    }
}
