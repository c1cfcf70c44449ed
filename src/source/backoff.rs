//! When a camera is redialed after a failure, and when that is worth a log line.
//!
//! One backoff for every failure is wrong both ways. A camera that is off,
//! rebooting or unplugged costs nothing to redial (a refused connect, a SYN
//! nobody answers), and the user wants a still the moment it is back, after
//! a one-minute power cut or a one-hour one alike: a backoff that grows to
//! 30 s (or more) turns "back" into "back half a minute later". A wrong
//! password is the opposite: every attempt is a failed login, and NVRs lock
//! the account (or the client's address) after a handful of those, which
//! would also lock out the user's own viewer. A camera or NVR at its session
//! limit (RTSP 453) frees a slot only when another viewer leaves, so hammering
//! it is useless but waiting minutes is too slow. So the wait depends on the
//! [`RetryClass`] of the failure:
//!
//! | class | failures | wait before the next attempt |
//! |---|---|---|
//! | [`Away`](RetryClass::Away) | unreachable, refused/reset, timeouts, stream ended or stalled, 404, 5xx | 0.5-4.5 s, steady, forever |
//! | [`Auth`](RetryClass::Auth) | RTSP 401, 403 | 60 s, 120 s, 240 s, then every 300 s (+0-15 s) |
//! | [`Busy`](RetryClass::Busy) | RTSP 453, "too many users", session limit | 5 s, 10 s, 20 s, 40 s, then 60 s (+0-5 s) |
//! | [`Unsupported`](RetryClass::Unsupported) | H.265, interlaced, ...; TCP refused | 300 s (+0-15 s) |
//!
//! Growth restarts when a session opens, and when the class changes.
//!
//! # Staggering without randomness
//!
//! When a whole NVR goes away, its eight channels fail in the same
//! millisecond; redialed after the same wait they would all hit it in the
//! same millisecond again, every time. Instead of random jitter (which needs
//! an RNG, and makes the schedule untestable) every camera has a fixed
//! [`Phase`]: its attempts fall on a grid of the class's period, on the
//! wall clock, at its own offset into each period. Phases come from the
//! camera's position in the configuration times the golden ratio, which
//! spreads any number of cameras almost evenly over the period: eight
//! channels redial ~0.36 s or more apart within 4 s rather than together.
//! The grid is on the wall clock (time since the Unix epoch), so the
//! schedule needs no shared state between camera tasks, and cameras keep
//! their spacing however their failures drift apart. A step of the clock
//! (NTP setting the time of a Raspberry Pi, which has no RTC) moves one
//! attempt within its period at most: a wait is never longer than its
//! floor plus one period.
//!
//! # Logging a failure once
//!
//! A camera that is away is redialed every few seconds, which would log
//! the same sentence ~900 times an hour. [`LogGate`] lets an identical
//! failure through once, then again after 1, 2, 4 ... up to 15 minutes,
//! with the count of attempts in between; any new sentence is logged at once.

use std::time::{Duration, Instant};

/// What kind of failure ended an attempt, which decides how soon to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetryClass {
    /// The camera is off, unreachable, rebooting or not serving yet: it
    /// costs nothing to ask again, and it should be noticed within seconds
    /// once back, however long it was gone.
    Away,
    /// The credentials are refused: every attempt is a failed login, and
    /// NVRs lock accounts after a few, so attempts are minutes apart.
    Auth,
    /// The camera or NVR refuses another session (453, viewer limit): a
    /// slot frees only when another viewer leaves; ask moderately often.
    Busy,
    /// rtsnap cannot use the stream as configured (codec, interlacing,
    /// transport): only a change on the camera helps, so re-check slowly.
    Unsupported,
}

impl RetryClass {
    /// The first wait, how it grows (doubling per repeated failure) up to
    /// the ceiling, and the grid period the attempt is then aligned to.
    const fn schedule(self) -> Schedule {
        match self {
            RetryClass::Away => Schedule {
                first: Duration::from_millis(500),
                ceiling: Duration::from_millis(500),
                grid: Duration::from_secs(4),
            },
            RetryClass::Auth => Schedule {
                first: Duration::from_secs(60),
                ceiling: Duration::from_secs(300),
                grid: Duration::from_secs(15),
            },
            RetryClass::Busy => Schedule {
                first: Duration::from_secs(5),
                ceiling: Duration::from_secs(60),
                grid: Duration::from_secs(5),
            },
            RetryClass::Unsupported => Schedule {
                first: Duration::from_secs(300),
                ceiling: Duration::from_secs(300),
                grid: Duration::from_secs(15),
            },
        }
    }

    /// A short lower-case name, for logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryClass::Away => "away",
            RetryClass::Auth => "auth",
            RetryClass::Busy => "busy",
            RetryClass::Unsupported => "unsupported",
        }
    }

    /// What happens next and why, appended to the failure in the log, so
    /// the user knows whether to wait or to act.
    pub fn next_step(self, wait: Duration) -> String {
        let secs = wait.as_secs_f64();
        match self {
            RetryClass::Away => {
                format!("redialing in {secs:.1}s, and every few seconds until it answers")
            }
            RetryClass::Auth => format!(
                "trying again in {secs:.0}s; logins are retried only a few times an hour so \
                 the NVR does not lock the account"
            ),
            RetryClass::Busy => {
                format!("the camera or NVR is at its limit of sessions; trying again in {secs:.0}s")
            }
            RetryClass::Unsupported => format!("re-checking in {secs:.0}s"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Schedule {
    first: Duration,
    ceiling: Duration,
    grid: Duration,
}

/// A camera's fixed offset into every retry period, as a fraction of the
/// period in units of 2^-64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phase(u64);

impl Phase {
    /// 2^64 divided by the golden ratio: successive multiples, taken modulo
    /// 2^64, are as evenly spread as any sequence can be (each new point
    /// falls into the largest gap left by the ones before it).
    const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

    /// The phase of the `index`th camera of the configuration.
    pub fn of_index(index: usize) -> Phase {
        Phase((index as u64).wrapping_mul(Self::GOLDEN))
    }

    /// This phase's offset into a period of `period`.
    fn offset(self, period: Duration) -> Duration {
        let nanos = (u128::from(self.0) * period.as_nanos()) >> 64;
        Duration::from_nanos(nanos as u64)
    }
}

/// One camera's retry schedule: how many failures of the same class came in
/// a row, and its phase. Owned by the camera task; no state is shared.
#[derive(Debug)]
pub struct RetryPolicy {
    phase: Phase,
    last: Option<RetryClass>,
    streak: u32,
}

impl RetryPolicy {
    /// A policy for a camera with this phase.
    pub fn new(phase: Phase) -> Self {
        RetryPolicy {
            phase,
            last: None,
            streak: 0,
        }
    }

    /// A session opened: the next failure starts its class's schedule over.
    pub fn opened(&mut self) {
        self.last = None;
        self.streak = 0;
    }

    /// How long to wait after a failure of `class`. `wall` is the wall
    /// clock's time since the Unix epoch (where the grid is anchored).
    pub fn next(&mut self, class: RetryClass, wall: Duration) -> Duration {
        if self.last == Some(class) {
            self.streak = self.streak.saturating_add(1);
        } else {
            self.last = Some(class);
            self.streak = 0;
        }
        let s = class.schedule();
        let floor = s
            .first
            .saturating_mul(1 << self.streak.min(16))
            .min(s.ceiling);
        floor + until_slot(wall + floor, s.grid, self.phase.offset(s.grid))
    }
}

/// From `at`, how long until the next instant that is `offset` into a
/// period of `grid` (zero if `at` is exactly on it).
fn until_slot(at: Duration, grid: Duration, offset: Duration) -> Duration {
    let grid = grid.as_nanos().max(1);
    let into = at.as_nanos() % grid;
    let target = offset.as_nanos() % grid;
    let delta = (target + grid - into) % grid;
    Duration::from_nanos(delta as u64)
}

/// Whether a failure should be logged now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Say {
    /// A failure unlike the previous one: log it.
    First,
    /// The same failure again, due for a reminder: log it with how many
    /// times it happened since it was last logged (this one included).
    Again {
        /// Attempts that failed this way since the last line.
        times: u64,
    },
    /// The same failure, logged recently: keep quiet (debug level at most).
    Quiet,
}

/// Lets a repeating failure through to the log once, then at a slowing
/// cadence (1, 2, 4 ... 15 minutes). Owned by the camera task.
#[derive(Debug, Default)]
pub struct LogGate {
    last: Option<String>,
    /// Failures since the last line was logged.
    unlogged: u64,
    /// Failures since the last session opened.
    failures: u64,
    next_reminder: Option<Instant>,
    cadence: Duration,
}

impl LogGate {
    const FIRST_REMINDER: Duration = Duration::from_secs(60);
    const MAX_REMINDER: Duration = Duration::from_secs(15 * 60);

    /// A failure with this message happened at `now`.
    pub fn failure(&mut self, message: &str, now: Instant) -> Say {
        self.failures += 1;
        if self.last.as_deref() != Some(message) {
            self.last = Some(message.to_owned());
            self.unlogged = 0;
            self.cadence = Self::FIRST_REMINDER;
            self.next_reminder = Some(now + self.cadence);
            return Say::First;
        }
        self.unlogged += 1;
        if self.next_reminder.is_some_and(|t| now >= t) {
            let times = std::mem::take(&mut self.unlogged);
            self.cadence = (self.cadence * 2).min(Self::MAX_REMINDER);
            self.next_reminder = Some(now + self.cadence);
            return Say::Again { times };
        }
        Say::Quiet
    }

    /// A session opened: returns how many attempts had failed before it
    /// (none if it opened at the first try), and forgets the failure, so
    /// the next one is logged at once.
    pub fn opened(&mut self) -> Option<u64> {
        let failures = std::mem::take(&mut self.failures);
        self.last = None;
        self.unlogged = 0;
        self.next_reminder = None;
        (failures > 0).then_some(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// An arbitrary wall-clock time, not on any grid.
    fn wall() -> Duration {
        Duration::from_millis(1_764_660_000_123)
    }

    fn waits(class: RetryClass, index: usize, n: usize) -> Vec<Duration> {
        let mut p = RetryPolicy::new(Phase::of_index(index));
        let mut now = wall();
        (0..n)
            .map(|_| {
                let w = p.next(class, now);
                now += w;
                w
            })
            .collect()
    }

    #[test]
    fn away_is_steady_and_short_forever() {
        for index in 0..16 {
            let w = waits(RetryClass::Away, index, 1000);
            assert!(
                w.iter()
                    .all(|w| *w >= Duration::from_millis(500) && *w < Duration::from_millis(4500)),
                "{index}: {w:?}"
            );
            // After the first, attempts are exactly one period apart: on
            // the grid, at the camera's phase.
            assert!(w[1..].iter().all(|w| *w == 4 * S), "{index}: {w:?}");
        }
    }

    #[test]
    fn auth_waits_a_minute_and_grows_to_five() {
        let w = waits(RetryClass::Auth, 3, 8);
        let floors = [60, 120, 240, 300, 300, 300, 300, 300];
        for (w, f) in w.iter().zip(floors) {
            assert!(*w >= f * S && *w < (f + 15) * S, "{w:?} for {f}");
        }
        // A wrong password is tried at most 4 times in the first 10 minutes.
        let mut total = Duration::ZERO;
        let tries = w
            .iter()
            .take_while(|w| {
                total += **w;
                total < 600 * S
            })
            .count();
        assert!(tries <= 4, "{tries} logins in 10 minutes: {w:?}");
    }

    #[test]
    fn busy_is_moderate() {
        let w = waits(RetryClass::Busy, 1, 7);
        let floors = [5, 10, 20, 40, 60, 60, 60];
        for (w, f) in w.iter().zip(floors) {
            assert!(*w >= f * S && *w < (f + 5) * S, "{w:?} for {f}");
        }
    }

    #[test]
    fn unsupported_is_rechecked_every_five_minutes() {
        for w in waits(RetryClass::Unsupported, 0, 5) {
            assert!(w >= 300 * S && w < 315 * S, "{w:?}");
        }
    }

    #[test]
    fn growth_restarts_on_open_and_on_a_new_class() {
        let mut p = RetryPolicy::new(Phase::of_index(0));
        let t = wall();
        assert!(p.next(RetryClass::Busy, t) < 10 * S);
        assert!(p.next(RetryClass::Busy, t) >= 10 * S);
        p.opened();
        assert!(p.next(RetryClass::Busy, t) < 10 * S);
        assert!(p.next(RetryClass::Busy, t) >= 10 * S);
        assert!(p.next(RetryClass::Away, t) < 5 * S);
        assert!(p.next(RetryClass::Busy, t) < 10 * S);
    }

    #[test]
    fn eight_channels_failing_together_redial_spread_out() {
        let t = wall();
        let mut at: Vec<Duration> = (0..8)
            .map(|i| RetryPolicy::new(Phase::of_index(i)).next(RetryClass::Away, t))
            .collect();
        at.sort();
        let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
        let min = gaps.iter().min().unwrap();
        assert!(*min >= Duration::from_millis(350), "{at:?}");
        assert!(at[7] - at[0] >= 3 * S, "{at:?}");
        // The same holds for 16 cameras (two NVRs), at half the spacing.
        let mut at: Vec<Duration> = (0..16)
            .map(|i| RetryPolicy::new(Phase::of_index(i)).next(RetryClass::Away, t))
            .collect();
        at.sort();
        assert!(at
            .windows(2)
            .all(|w| w[1] - w[0] >= Duration::from_millis(130)));
    }

    #[test]
    fn the_schedule_is_a_pure_function_of_phase_and_clock() {
        assert_eq!(
            waits(RetryClass::Away, 5, 10),
            waits(RetryClass::Away, 5, 10)
        );
        assert_ne!(waits(RetryClass::Away, 5, 1), waits(RetryClass::Away, 6, 1));
    }

    #[test]
    fn until_slot_edges() {
        let g = 4 * S;
        assert_eq!(until_slot(8 * S, g, Duration::ZERO), Duration::ZERO);
        assert_eq!(until_slot(9 * S, g, Duration::ZERO), 3 * S);
        assert_eq!(until_slot(9 * S, g, 2 * S), S);
        assert_eq!(until_slot(9 * S, g, S), Duration::ZERO);
    }

    #[test]
    fn log_gate_says_a_repeat_once_then_ever_more_rarely() {
        let mut g = LogGate::default();
        let t0 = Instant::now();
        assert_eq!(g.failure("refused", t0), Say::First);
        // An attempt every 4 s for an hour: reminders at 1, 3, 7, 15, 30,
        // 45 and 60 minutes at most.
        let mut lines = 1;
        let mut counted = 0;
        for i in 1..=900u64 {
            match g.failure("refused", t0 + Duration::from_secs(4 * i)) {
                Say::First => panic!("the same failure logged as new"),
                Say::Again { times } => {
                    lines += 1;
                    counted += times;
                }
                Say::Quiet => {}
            }
        }
        assert!((5..=8).contains(&lines), "{lines} lines in an hour");
        assert!((800..=900).contains(&counted), "{counted}");
        // A different sentence is news.
        assert_eq!(g.failure("timeout", t0 + 3601 * S), Say::First);
        assert_eq!(g.failure("refused", t0 + 3602 * S), Say::First);
        assert_eq!(g.opened(), Some(903));
        assert_eq!(g.opened(), None);
        assert_eq!(g.failure("refused", t0 + 3603 * S), Say::First);
    }
}
