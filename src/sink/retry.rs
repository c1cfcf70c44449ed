//! Delays a server asks for (`Retry-After`), read defensively.
//!
//! A delay that comes over the network is untrusted input. `Retry-After:
//! 18446744073709551615` once made `Instant + Duration` overflow inside the
//! sink task, which panicked, and uploads stopped for good. So everything here
//! is total: any header text gives a delay of at most [`MAX_SERVER_DELAY`],
//! and the time arithmetic saturates instead of panicking.

use std::time::{Duration, SystemTime};

/// The longest rtsnap waits because a server (or a sink) said so. A longer
/// wait is more likely a bug on either side than a real request, and an hour
/// without uploads is already long for a camera viewer.
pub const MAX_SERVER_DELAY: Duration = Duration::from_secs(3600);

/// The wait when a server asked for one but its `Retry-After` is missing or
/// unreadable: Cloudflare's 429s last about a minute.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

/// What a `Retry-After` header said, within rtsnap's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryAfter {
    /// A delay of at most [`MAX_SERVER_DELAY`]; a date in the past is zero.
    Asked(Duration),
    /// More than [`MAX_SERVER_DELAY`], including numbers no clock can hold;
    /// rtsnap waits [`MAX_SERVER_DELAY`].
    Capped,
    /// Neither delta-seconds nor an HTTP-date; rtsnap waits
    /// [`DEFAULT_RETRY_AFTER`].
    Unreadable,
}

impl RetryAfter {
    /// How long to wait.
    pub fn delay(self) -> Duration {
        match self {
            RetryAfter::Asked(d) => d,
            RetryAfter::Capped => MAX_SERVER_DELAY,
            RetryAfter::Unreadable => DEFAULT_RETRY_AFTER,
        }
    }

    /// Why the wait is what it is, for messages: "as asked", "capped", ...
    pub fn explain(self) -> &'static str {
        match self {
            RetryAfter::Asked(_) => "as asked",
            RetryAfter::Capped => "Retry-After asked for more than 1 h, the most rtsnap waits",
            RetryAfter::Unreadable => "Retry-After missing or unreadable",
        }
    }
}

/// Reads a `Retry-After` value (RFC 9110 10.2.3): delta-seconds or an
/// HTTP-date (IMF-fixdate, RFC 850 or asctime), relative to `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> RetryAfter {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // All digits but too many for a u64: longer than any cap.
        return match v.parse::<u64>() {
            Ok(secs) => bounded(Duration::from_secs(secs)),
            Err(_) => RetryAfter::Capped,
        };
    }
    match httpdate::parse_http_date(v) {
        Ok(at) => bounded(at.duration_since(now).unwrap_or(Duration::ZERO)),
        Err(_) => RetryAfter::Unreadable,
    }
}

fn bounded(d: Duration) -> RetryAfter {
    if d > MAX_SERVER_DELAY {
        RetryAfter::Capped
    } else {
        RetryAfter::Asked(d)
    }
}

/// `d`, but never more than `max` nor [`MAX_SERVER_DELAY`].
pub fn clamp_delay(d: Duration, max: Duration) -> Duration {
    d.min(max).min(MAX_SERVER_DELAY)
}

/// `now + d` on tokio's clock without a panic. `d` is clamped by the caller,
/// so this only falls back to `now` on a clock within an hour of its end.
pub(crate) fn instant_after(now: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    now.checked_add(d).unwrap_or(now)
}

/// `now + d` on the wall clock without a panic, for status pages.
pub(crate) fn system_after(now: SystemTime, d: Duration) -> SystemTime {
    now.checked_add(d).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    /// A whole second, so HTTP-dates (which have no fractions) round-trip.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn delta_seconds() {
        let p = |v| parse_retry_after(v, now());
        assert_eq!(p("0"), RetryAfter::Asked(Duration::ZERO));
        assert_eq!(p("7"), RetryAfter::Asked(Duration::from_secs(7)));
        assert_eq!(p(" 120\t"), RetryAfter::Asked(Duration::from_secs(120)));
        assert_eq!(p("3600"), RetryAfter::Asked(MAX_SERVER_DELAY));
        assert_eq!(p("3601"), RetryAfter::Capped);
        assert_eq!(p("18446744073709551615"), RetryAfter::Capped);
        assert_eq!(p("99999999999999999999999999"), RetryAfter::Capped);
        assert_eq!(p("18446744073709551615").delay(), MAX_SERVER_DELAY);
    }

    #[test]
    fn http_dates_in_every_format() {
        let in_90 = httpdate::fmt_http_date(now() + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&in_90, now()),
            RetryAfter::Asked(Duration::from_secs(90)),
            "{in_90}"
        );
        // 2023-11-14 22:13:20 UTC is `now()`; these are 100 s later.
        for v in [
            "Tue, 14 Nov 2023 22:15:00 GMT",
            "Tuesday, 14-Nov-23 22:15:00 GMT",
            "Tue Nov 14 22:15:00 2023",
        ] {
            assert_eq!(
                parse_retry_after(v, now()),
                RetryAfter::Asked(Duration::from_secs(100)),
                "{v}"
            );
        }
        let past = httpdate::fmt_http_date(now() - Duration::from_secs(5));
        assert_eq!(
            parse_retry_after(&past, now()),
            RetryAfter::Asked(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now()),
            RetryAfter::Capped
        );
    }

    #[test]
    fn garbage_gets_the_default() {
        for v in [
            "",
            "   ",
            "soon",
            "-5",
            "1.5",
            "12abc",
            "0x10",
            "+30",
            "Tue, 99 Nov 2023 22:15:00 GMT",
        ] {
            let r = parse_retry_after(v, now());
            assert_eq!(r, RetryAfter::Unreadable, "{v:?}");
            assert_eq!(r.delay(), DEFAULT_RETRY_AFTER);
        }
    }

    #[test]
    fn clamping_and_checked_arithmetic() {
        assert_eq!(clamp_delay(Duration::MAX, Duration::MAX), MAX_SERVER_DELAY);
        assert_eq!(
            clamp_delay(Duration::from_secs(10), Duration::from_secs(2)),
            Duration::from_secs(2)
        );
        assert_eq!(
            clamp_delay(Duration::from_secs(10), MAX_SERVER_DELAY),
            Duration::from_secs(10)
        );
        let t = tokio::time::Instant::now();
        assert_eq!(instant_after(t, Duration::MAX), t, "no panic, no wrap");
        assert_eq!(system_after(now(), Duration::MAX), now());
        assert_eq!(
            system_after(now(), Duration::from_secs(1)),
            now() + Duration::from_secs(1)
        );
    }
}
