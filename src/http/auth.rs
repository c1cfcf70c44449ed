//! Authentication for the HTTP server: a bearer token, argon2id basic auth,
//! or (on loopback only, which the configuration enforces) none.
//!
//! When either is configured, every request must authenticate, including
//! requests from 127.0.0.1: a reverse proxy or another local user would
//! otherwise be a way around it.
//!
//! * The bearer token is compared in constant time.
//! * A basic-auth password is verified against the argon2id hash on a
//!   blocking thread, one verification at a time, so a flood of wrong
//!   passwords cannot take the decoders' threads. A header that verified is
//!   remembered (in memory, compared in constant time), so a browser's page
//!   and image requests do not each cost an argon2 run.
//! * A flood of wrong passwords must not stall a real login behind an
//!   unbounded queue of argon2 runs, so the queue is bounded twice: each
//!   client (an IPv4 address or an IPv6 /64) has at most one verification
//!   waiting or running, and after [`FREE_FAILURES`] failed logins in a row
//!   it must wait (1 s, doubling, at most [`MAX_BACKOFF`]) before the next
//!   one is even tried; and at most [`MAX_WAITERS`] verifications wait
//!   overall. A request over either bound is answered at once, 429 or 503
//!   with `Retry-After`, without running argon2. The per-client table is
//!   bounded ([`MAX_CLIENTS`]); when it is full the stalest entry goes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use super::HttpState;
use crate::config::{BasicAuth, HttpConfig};
use crate::Secret;

/// Authorization headers remembered after a successful argon2 verification.
const REMEMBERED: usize = 16;

/// Argon2 verifications waiting or running at once, over all clients; one
/// runs at a time, so a real login waits for at most this many runs.
pub const MAX_WAITERS: usize = 8;

/// Failed logins in a row a client may make before it must wait: enough
/// for a few typos, and for a browser's retries.
pub const FREE_FAILURES: u32 = 3;

/// The longest a client must wait between failed logins.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Clients whose failed logins are remembered; bounds the table's memory
/// (about 100 bytes an entry) whatever the number of addresses.
pub const MAX_CLIENTS: usize = 4096;

/// A client's failures are forgotten this long after its last one.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

/// What a request's credentials earned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let through.
    Allowed,
    /// Missing or wrong credentials: 401 with a challenge.
    Denied,
    /// This client failed too often lately, or already has a verification
    /// waiting: 429, try again after the given time.
    Throttled(Duration),
    /// Too many verifications wait overall: 503, try again shortly.
    Busy,
}

/// One client's recent failed logins.
#[derive(Clone, Copy, Debug)]
struct Failures {
    /// Failed logins in a row.
    count: u32,
    /// When the last one was.
    last: Instant,
    /// A verification for this client is waiting or running.
    pending: bool,
}

impl Failures {
    /// How long after `last` the next attempt is refused.
    fn backoff(&self) -> Duration {
        match self.count.checked_sub(FREE_FAILURES) {
            None => Duration::ZERO,
            Some(n) => Duration::from_secs(1u64 << n.min(6)).min(MAX_BACKOFF),
        }
    }
}

/// Who a request comes from, for the failure table: the address, or its
/// /64 for IPv6 (one host usually has a whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::V6(o.into())
        }
        v4 => v4,
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct AuthCounters {
    /// Requests answered 429 (client backoff or one already pending).
    pub throttled: AtomicU64,
    /// Requests answered 503 (every waiting place taken).
    pub busy: AtomicU64,
    /// Basic-auth verifications that failed.
    pub failures: AtomicU64,
}

/// The server's authentication settings and its small cache.
pub struct Auth {
    bearer: Option<Secret>,
    basic: Option<BasicAuth>,
    verified: Mutex<Vec<Secret>>,
    argon2_slot: Semaphore,
    waiters: AtomicUsize,
    clients: Mutex<HashMap<IpAddr, Failures>>,
    /// For `/metrics`.
    pub counters: AuthCounters,
}

impl Auth {
    /// From the `[http]` table.
    pub fn new(config: &HttpConfig) -> Self {
        Auth {
            bearer: config.bearer_token.clone(),
            basic: config.basic.clone(),
            verified: Mutex::new(Vec::new()),
            argon2_slot: Semaphore::new(1),
            waiters: AtomicUsize::new(0),
            clients: Mutex::new(HashMap::new()),
            counters: AuthCounters::default(),
        }
    }

    /// True when requests must authenticate.
    pub fn required(&self) -> bool {
        self.bearer.is_some() || self.basic.is_some()
    }

    /// Whether the request's `Authorization` header is acceptable; `peer`
    /// is the client's address, for the per-client backoff.
    pub async fn check(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Verdict {
        if !self.required() {
            return Verdict::Allowed;
        }
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Verdict::Denied;
        };
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            let ok = self
                .bearer
                .as_ref()
                .is_some_and(|t| bool::from(t.expose().as_bytes().ct_eq(rest.as_bytes())));
            return if ok {
                Verdict::Allowed
            } else {
                Verdict::Denied
            };
        }
        if scheme.eq_ignore_ascii_case("basic") {
            if let Some(basic) = &self.basic {
                return self.check_basic(basic, rest, peer.map(client_key)).await;
            }
        }
        Verdict::Denied
    }

    async fn check_basic(
        &self,
        basic: &BasicAuth,
        encoded: &str,
        client: Option<IpAddr>,
    ) -> Verdict {
        // A header that verified before costs nothing and is never throttled:
        // only someone who knows the password can send it.
        if self.remembered(encoded) {
            return Verdict::Allowed;
        }
        let Some((user, password)) = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .and_then(|d| {
                let (u, p) = d.split_once(':')?;
                Some((u.to_owned(), Secret::new(p)))
            })
        else {
            return Verdict::Denied;
        };
        let user_ok = bool::from(user.as_bytes().ct_eq(basic.username.as_bytes()));
        if let Some(wait) = client.and_then(|c| self.begin(c, Instant::now())) {
            self.counters.throttled.fetch_add(1, Ordering::Relaxed);
            return Verdict::Throttled(wait);
        }
        // From here on the client's entry is pending; `Pending` clears it
        // whatever happens, including this future being dropped.
        let pending = Pending { auth: self, client };
        if self.waiters.fetch_add(1, Ordering::AcqRel) >= MAX_WAITERS {
            self.waiters.fetch_sub(1, Ordering::AcqRel);
            self.counters.busy.fetch_add(1, Ordering::Relaxed);
            return Verdict::Busy;
        }
        let waiting = Waiter(&self.waiters);
        let Ok(_slot) = self.argon2_slot.acquire().await else {
            return Verdict::Denied;
        };
        // Another request may have verified the same header meanwhile.
        if self.remembered(encoded) {
            pending.succeeded();
            return Verdict::Allowed;
        }
        let hash = basic.password_hash.clone();
        let password_ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .unwrap_or(false);
        drop(waiting);
        if user_ok && password_ok {
            let mut v = self.verified.lock().unwrap();
            if v.len() >= REMEMBERED {
                v.remove(0);
            }
            v.push(Secret::new(encoded));
            drop(v);
            pending.succeeded();
            Verdict::Allowed
        } else {
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
            pending.failed();
            Verdict::Denied
        }
    }

    /// Marks `client` as having a verification pending, or says how long
    /// it must wait first.
    fn begin(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let mut clients = self.clients.lock().unwrap();
        if let Some(f) = clients.get_mut(&client) {
            if now.duration_since(f.last) > FORGET_AFTER && !f.pending {
                f.count = 0;
            }
            let until = f.last + f.backoff();
            if f.pending {
                return Some(
                    until
                        .saturating_duration_since(now)
                        .max(Duration::from_secs(1)),
                );
            }
            if until > now {
                return Some(until - now);
            }
            f.pending = true;
            return None;
        }
        if clients.len() >= MAX_CLIENTS {
            // Forget the forgotten, then (still full) the stalest entry.
            clients.retain(|_, f| f.pending || now.duration_since(f.last) <= FORGET_AFTER);
            if clients.len() >= MAX_CLIENTS {
                if let Some(k) = clients
                    .iter()
                    .filter(|(_, f)| !f.pending)
                    .min_by_key(|(_, f)| f.last)
                    .map(|(k, _)| *k)
                {
                    clients.remove(&k);
                }
            }
            if clients.len() >= MAX_CLIENTS {
                // Every entry has a verification pending, which takes
                // more requests at once than the table has entries.
                return Some(Duration::from_secs(1));
            }
        }
        clients.insert(
            client,
            Failures {
                count: 0,
                last: now,
                pending: true,
            },
        );
        None
    }

    /// Ends `client`'s pending verification: a success forgets its
    /// failures, a failure counts one more, an abandoned one only clears
    /// the mark.
    fn end(&self, client: IpAddr, outcome: Outcome) {
        let mut clients = self.clients.lock().unwrap();
        match outcome {
            Outcome::Success => {
                clients.remove(&client);
            }
            Outcome::Failure => {
                if let Some(f) = clients.get_mut(&client) {
                    f.count = f.count.saturating_add(1);
                    f.last = Instant::now();
                    f.pending = false;
                }
            }
            Outcome::Abandoned => {
                if let Some(f) = clients.get_mut(&client) {
                    f.pending = false;
                    if f.count == 0 {
                        clients.remove(&client);
                    }
                }
            }
        }
    }

    /// Clients in the failure table (for tests and metrics).
    pub fn clients_tracked(&self) -> usize {
        self.clients.lock().unwrap().len()
    }

    fn remembered(&self, encoded: &str) -> bool {
        let v = self.verified.lock().unwrap();
        // Compare against every entry, so timing says nothing about which.
        v.iter().fold(false, |acc, s| {
            acc | bool::from(s.expose().as_bytes().ct_eq(encoded.as_bytes()))
        })
    }

    fn challenge(&self) -> Response {
        let mut r = (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
        let h = r.headers_mut();
        if self.basic.is_some() {
            h.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"rtsnap\", charset=\"UTF-8\""),
            );
        }
        if self.bearer.is_some() {
            h.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"rtsnap\""),
            );
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

/// How a client's pending verification ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The password was right.
    Success,
    /// It was wrong: one more failure.
    Failure,
    /// Never verified (no waiting place, or the request went away).
    Abandoned,
}

/// A client's pending verification, ended exactly once.
struct Pending<'a> {
    auth: &'a Auth,
    client: Option<IpAddr>,
}

impl Pending<'_> {
    fn succeeded(mut self) {
        if let Some(c) = self.client.take() {
            self.auth.end(c, Outcome::Success);
        }
    }

    fn failed(mut self) {
        if let Some(c) = self.client.take() {
            self.auth.end(c, Outcome::Failure);
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            self.auth.end(c, Outcome::Abandoned);
        }
    }
}

/// One of the [`MAX_WAITERS`] places, given back on drop.
struct Waiter<'a>(&'a AtomicUsize);

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Middleware: lets the request through, or answers 401, 429 or 503.
pub async fn require(State(state): State<Arc<HttpState>>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    match state.auth.check(req.headers(), peer).await {
        Verdict::Allowed => next.run(req).await,
        Verdict::Denied => state.auth.challenge(),
        Verdict::Throttled(wait) => too_many(
            StatusCode::TOO_MANY_REQUESTS,
            wait,
            "too many failed logins from your address; wait and try again\n",
        ),
        Verdict::Busy => too_many(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(1),
            "too many logins are being checked; try again in a second\n",
        ),
    }
}

fn too_many(status: StatusCode, wait: Duration, body: &'static str) -> Response {
    let mut r = (status, body).into_response();
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let h = r.headers_mut();
    h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Verifies `password` against an argon2 PHC string.
pub fn verify_password(password: &Secret, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.expose().as_bytes(), &h)
            .is_ok()
    })
}

/// Hashes `password` with argon2id (default parameters: 19 MiB, 2 passes)
/// and a fresh random salt, as a PHC string for `[http] password_hash`.
pub fn hash_password(password: &Secret) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| format!("no randomness for the salt: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let h = hash_password(&Secret::new("correct horse")).unwrap();
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(verify_password(&Secret::new("correct horse"), &h));
        assert!(!verify_password(&Secret::new("correct horsf"), &h));
        assert!(!verify_password(&Secret::new("x"), "not a hash"));
    }

    async fn allowed(auth: &Auth, h: &HeaderMap) -> bool {
        auth.check(h, None).await == Verdict::Allowed
    }

    #[tokio::test]
    async fn bearer_is_exact() {
        let mut c = HttpConfig::open("127.0.0.1:0".parse().unwrap());
        c.bearer_token = Some(Secret::new("0123456789abcdef"));
        let auth = Auth::new(&c);
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        assert!(allowed(&auth, &with("Bearer 0123456789abcdef")).await);
        assert!(allowed(&auth, &with("bearer 0123456789abcdef")).await);
        assert!(!allowed(&auth, &with("Bearer 0123456789abcde")).await);
        assert!(!allowed(&auth, &with("Bearer 0123456789abcdefg")).await);
        assert!(!allowed(&auth, &with("Basic MDEyMw==")).await);
        assert!(!allowed(&auth, &HeaderMap::new()).await);
    }

    fn basic(user: &str, pw: &str) -> HeaderMap {
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {v}")).unwrap(),
        );
        h
    }

    fn basic_auth() -> Auth {
        let mut c = HttpConfig::open("127.0.0.1:0".parse().unwrap());
        c.basic = Some(BasicAuth {
            username: "u".into(),
            password_hash: hash_password(&Secret::new("right")).unwrap(),
        });
        Auth::new(&c)
    }

    #[tokio::test]
    async fn failures_back_off_per_client_and_success_forgets() {
        let auth = basic_auth();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            assert_eq!(
                auth.check(&basic("u", "wrong"), Some(a)).await,
                Verdict::Denied
            );
        }
        // The next try from a is refused without a verification, even with
        // the right password; b is not affected.
        let Verdict::Throttled(wait) = auth.check(&basic("u", "right"), Some(a)).await else {
            panic!("not throttled");
        };
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(
            auth.check(&basic("u", "right"), Some(b)).await,
            Verdict::Allowed
        );
        assert_eq!(auth.counters.throttled.load(Ordering::Relaxed), 1);
        assert_eq!(auth.clients_tracked(), 1, "b's success left nothing");
        // The wait doubles with each further failure, up to MAX_BACKOFF.
        let mut f = Failures {
            count: FREE_FAILURES,
            last: Instant::now(),
            pending: false,
        };
        let mut waits = Vec::new();
        for _ in 0..10 {
            waits.push(f.backoff().as_secs());
            f.count += 1;
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
    }

    #[test]
    fn client_table_is_bounded() {
        let auth = basic_auth();
        let now = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 + 500) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert_eq!(auth.begin(ip, now), None);
            auth.end(ip, Outcome::Failure);
        }
        assert_eq!(auth.clients_tracked(), MAX_CLIENTS);
        // IPv6 clients count by /64.
        let x: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(client_key(x), client_key(y));
        assert_eq!(
            client_key("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }
}
