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

use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{Request, State};
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

/// The server's authentication settings and its small cache.
pub struct Auth {
    bearer: Option<Secret>,
    basic: Option<BasicAuth>,
    verified: Mutex<Vec<Secret>>,
    argon2_slot: Semaphore,
}

impl Auth {
    /// From the `[http]` table.
    pub fn new(config: &HttpConfig) -> Self {
        Auth {
            bearer: config.bearer_token.clone(),
            basic: config.basic.clone(),
            verified: Mutex::new(Vec::new()),
            argon2_slot: Semaphore::new(1),
        }
    }

    /// True when requests must authenticate.
    pub fn required(&self) -> bool {
        self.bearer.is_some() || self.basic.is_some()
    }

    /// Whether the request's `Authorization` header is acceptable.
    pub async fn check(&self, headers: &HeaderMap) -> bool {
        if !self.required() {
            return true;
        }
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return self
                .bearer
                .as_ref()
                .is_some_and(|t| bool::from(t.expose().as_bytes().ct_eq(rest.as_bytes())));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            if let Some(basic) = &self.basic {
                return self.check_basic(basic, rest).await;
            }
        }
        false
    }

    async fn check_basic(&self, basic: &BasicAuth, encoded: &str) -> bool {
        if self.remembered(encoded) {
            return true;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            return false;
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = decoded.split_once(':') else {
            return false;
        };
        let user_ok = bool::from(user.as_bytes().ct_eq(basic.username.as_bytes()));
        let Ok(_slot) = self.argon2_slot.acquire().await else {
            return false;
        };
        // Another request may have verified the same header meanwhile.
        if self.remembered(encoded) {
            return true;
        }
        let hash = basic.password_hash.clone();
        let password = Secret::new(password);
        let password_ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .unwrap_or(false);
        if user_ok && password_ok {
            let mut v = self.verified.lock().unwrap();
            if v.len() >= REMEMBERED {
                v.remove(0);
            }
            v.push(Secret::new(encoded));
        }
        user_ok && password_ok
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

/// Middleware: lets the request through or answers 401.
pub async fn require(State(state): State<Arc<HttpState>>, req: Request, next: Next) -> Response {
    if state.auth.check(req.headers()).await {
        next.run(req).await
    } else {
        state.auth.challenge()
    }
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
        assert!(auth.check(&with("Bearer 0123456789abcdef")).await);
        assert!(auth.check(&with("bearer 0123456789abcdef")).await);
        assert!(!auth.check(&with("Bearer 0123456789abcde")).await);
        assert!(!auth.check(&with("Bearer 0123456789abcdefg")).await);
        assert!(!auth.check(&with("Basic MDEyMw==")).await);
        assert!(!auth.check(&HeaderMap::new()).await);
    }
}
