//! How soon cameras are redialed after each kind of failure, measured on
//! loopback against the fixture server and two small hostile servers: a
//! camera that was away 20 s or 75 s has a still again within 10 s of its
//! return; a wrong password is tried about once a minute, not every few
//! seconds; the eight channels of an NVR that went away redial one after
//! another, not in the same instant. Every wait is bounded; the measured
//! figures are printed (`--nocapture`) for the README.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::*;
use rtsnap::fixture::FixtureServer;
use rtsnap::source::RetryClass;
use rtsnap::{CameraConfig, CameraState, CameraStatus, Config, Credentials, Daemon, Secret};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket};
use tokio::time::Instant;

fn camera(url: String, name: &str, interval_ms: u64) -> CameraConfig {
    CameraConfig {
        name: name.into(),
        url: url.parse().unwrap(),
        credentials: None,
        interval: Duration::from_millis(interval_ms),
        transport: Default::default(),
    }
}

fn status(d: &Daemon, name: &str) -> CameraStatus {
    d.status().into_iter().find(|s| &*s.name == name).unwrap()
}

/// Polls every 50 ms until camera `name` has more stills than `base`;
/// returns how long that took, or `None` after `limit`.
async fn next_still(d: &Daemon, name: &str, base: u64, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if status(d, name).stills > base {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// What one outage looked like from the camera's side.
#[derive(Debug)]
struct Outage {
    name: &'static str,
    away: Duration,
    /// The longest wait until the next attempt that the status announced.
    longest_wait: Duration,
    /// How many different next-attempt times the status announced.
    attempts: usize,
    /// From the server's return to the camera's first new still.
    healed_after: Option<Duration>,
}

/// Takes `server` away for `away` (connections refused), watching the
/// camera's status, then brings it back and times the first new still.
async fn outage(d: &Daemon, server: &FixtureServer, name: &'static str, away: Duration) -> Outage {
    server.go_down().await;
    let gone = Instant::now();
    let mut longest_wait = Duration::ZERO;
    let mut announced = std::collections::BTreeSet::new();
    while gone.elapsed() < away {
        if let CameraState::BackingOff { until, class, .. } = status(d, name).state {
            assert_eq!(class, RetryClass::Away, "{name}");
            let wait = until.duration_since(SystemTime::now()).unwrap_or_default();
            longest_wait = longest_wait.max(wait);
            announced.insert(until);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let base = status(d, name).stills;
    server.come_back().await.unwrap();
    let healed_after = next_still(d, name, base, Duration::from_secs(20)).await;
    Outage {
        name,
        away,
        longest_wait,
        attempts: announced.len(),
        healed_after,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_away_20s_and_75s_have_stills_within_10s_of_their_return() {
    let (a, b) = (serve(&[SUB]).await, serve(&[SUB]).await);
    // The default timeout (10 s), as deployed.
    let d = Daemon::start(Config::with_cameras(vec![
        camera(a.url("/ch1"), "away20", 1000),
        camera(b.url("/ch1"), "away75", 1000),
    ]));
    for name in ["away20", "away75"] {
        next_still(&d, name, 0, Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("{name}: no first still; {:?}", status(&d, name)));
    }
    let (short, long) = tokio::join!(
        outage(&d, &a, "away20", Duration::from_secs(20)),
        outage(&d, &b, "away75", Duration::from_secs(75)),
    );
    for o in [&short, &long] {
        eprintln!(
            "{}: away {:?}, {} attempts announced, longest wait {:.1}s, first still {:.1}s after return",
            o.name,
            o.away,
            o.attempts,
            o.longest_wait.as_secs_f64(),
            o.healed_after.map_or(f64::NAN, |h| h.as_secs_f64()),
        );
        let healed = o.healed_after.unwrap_or_else(|| panic!("{o:?}"));
        assert!(healed <= Duration::from_secs(10), "{o:?}");
        // Redialed steadily all along: never more than ~4.5 s between
        // attempts, so ~one every 4 s.
        assert!(o.longest_wait <= Duration::from_millis(4600), "{o:?}");
        let expected = (o.away.as_secs() / 4) as usize;
        assert!(o.attempts + 2 >= expected, "{o:?}");
        assert_eq!(status(&d, o.name).state, CameraState::Streaming);
    }
    d.shutdown().await;
}

/// One request a hostile server saw.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    method: String,
    path: String,
    authorized: bool,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Reads one RTSP request head (bounded in size and time).
async fn read_request(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> Option<(String, String, Option<String>, bool)> {
    let mut head = Vec::new();
    let read = async {
        for _ in 0..64 {
            let mut line = String::new();
            if r.read_line(&mut line).await.ok()? == 0 {
                return None;
            }
            if line.trim().is_empty() {
                if head.is_empty() {
                    continue;
                }
                return Some(());
            }
            head.push(line.trim().to_owned());
        }
        None
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .ok()??;
    let mut words = head.first()?.split_whitespace();
    let method = words.next()?.to_owned();
    let url = words.next()?;
    let path = url::Url::parse(url).ok()?.path().to_owned();
    let header = |name: &str| {
        head.iter().skip(1).find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let authorized = header("Authorization").is_some();
    Some((method, path, header("CSeq"), authorized))
}

/// A camera that refuses every login: OPTIONS is answered, every other
/// request gets 401 with a fresh Digest challenge, and each is logged.
async fn auth_wall() -> (SocketAddr, Log, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Log = Arc::default();
    let task = {
        let log = log.clone();
        tokio::spawn(async move {
            // Bounded: a well-behaved client opens one connection a minute.
            for n in 0..256u32 {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let (r, mut w) = sock.into_split();
                    let mut r = BufReader::new(r);
                    for i in 0..16u32 {
                        let Some((method, path, cseq, authorized)) = read_request(&mut r).await
                        else {
                            return;
                        };
                        log.lock().unwrap().push(Seen {
                            at: Instant::now(),
                            method: method.clone(),
                            path,
                            authorized,
                        });
                        let cseq = cseq.unwrap_or_else(|| "0".into());
                        let reply = if method == "OPTIONS" {
                            format!(
                                "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n\
                                 Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n\r\n"
                            )
                        } else {
                            format!(
                                "RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\n\
                                 WWW-Authenticate: Digest realm=\"healing\", nonce=\"{n:08x}{i:08x}\"\r\n\
                                 Content-Length: 0\r\n\r\n"
                            )
                        };
                        if w.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        })
    };
    (addr, log, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_is_tried_about_once_a_minute_and_says_what_to_check() {
    let password = "wr0ng-Pa55word-7730";
    let (addr, log, wall) = auth_wall().await;
    let mut locked = camera(format!("rtsp://{addr}/a"), "locked", 1000);
    locked.credentials = Some(Credentials::new(
        "admin",
        Secret::new(password),
        "password_env CAM_PASSWORD",
    ));
    let anonymous = camera(format!("rtsp://{addr}/b"), "anonymous", 1000);
    let started = Instant::now();
    let d = Daemon::start(Config::with_cameras(vec![locked, anonymous]));

    let s = wait_for(Duration::from_secs(10), "the 401 in status", || {
        let s = status(&d, "locked");
        matches!(s.state, CameraState::BackingOff { .. }).then_some(s)
    })
    .await;
    let CameraState::BackingOff {
        until,
        error,
        class,
    } = &s.state
    else {
        unreachable!()
    };
    assert_eq!(*class, RetryClass::Auth);
    assert_eq!(
        error,
        "RTSP 401 Unauthorized: check username \"admin\" and password_env CAM_PASSWORD"
    );
    let next = until.duration_since(SystemTime::now()).unwrap_or_default();
    assert!(next >= Duration::from_secs(55), "next login in {next:?}");
    let s = wait_for(Duration::from_secs(10), "anonymous 401", || {
        let s = status(&d, "anonymous");
        s.last_error.is_some().then_some(s)
    })
    .await;
    let e = s.last_error.clone().unwrap();
    assert!(
        e.contains("401") && e.contains("set username and password_env"),
        "{e}"
    );
    assert!(matches!(
        s.state,
        CameraState::BackingOff {
            class: RetryClass::Auth,
            ..
        }
    ));

    // Watch 85 s: the first retry is due 60-75 s after the first attempt.
    tokio::time::sleep_until(started + Duration::from_secs(85)).await;
    let seen = log.lock().unwrap().clone();
    assert!(!format!("{:?}", d.status()).contains(password));
    d.shutdown().await;
    wall.abort();

    // Each dial of "locked" is one DESCRIBE with a (wrong) Authorization;
    // each dial of "anonymous" is one bare DESCRIBE.
    let dials = |path: &str, authorized: bool| -> Vec<f64> {
        seen.iter()
            .filter(|s| s.path == path && s.method == "DESCRIBE" && s.authorized == authorized)
            .map(|s| (s.at - started).as_secs_f64())
            .collect()
    };
    let logins = dials("/a", true);
    let bare = dials("/b", false);
    eprintln!("wrong password: logins at {logins:.1?} s; no credentials: dials at {bare:.1?} s");
    for (what, at) in [("logins", &logins), ("anonymous dials", &bare)] {
        assert!(
            (2..=3).contains(&at.len()),
            "{what} in 85 s: {at:?} (expected one at start and one a minute later)"
        );
        assert!(at[0] < 5.0, "{what}: {at:?}");
        for w in at.windows(2) {
            assert!(w[1] - w[0] >= 55.0, "{what} too close: {at:?}");
        }
    }
}

/// Listens on `addr` (the NVR's port while it is away, as when it reboots
/// and accepts before its RTSP service is up), logs each request and
/// closes the connection without answering.
async fn black_hole(addr: SocketAddr) -> (Log, tokio::task::JoinHandle<()>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    let listener = socket.listen(64).unwrap();
    let log: Log = Arc::default();
    let task = {
        let log = log.clone();
        tokio::spawn(async move {
            for _ in 0..1024 {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let (r, _w) = sock.into_split();
                    let mut r = BufReader::new(r);
                    if let Some((method, path, _, authorized)) = read_request(&mut r).await {
                        log.lock().unwrap().push(Seen {
                            at: Instant::now(),
                            method,
                            path,
                            authorized,
                        });
                    }
                    // Dropping both halves closes the connection unanswered.
                });
            }
        })
    };
    (log, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_channels_of_an_nvr_that_went_away_redial_staggered() {
    let server = serve(&[SUB; 8]).await;
    let names: Vec<String> = (1..=8).map(|i| format!("cam{i}")).collect();
    let cams = names
        .iter()
        .enumerate()
        .map(|(i, n)| camera(server.url(&format!("/ch{}", i + 1)), n, 2000))
        .collect();
    let d = Daemon::start(Config::with_cameras(cams));
    for n in &names {
        next_still(&d, n, 0, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("{n}: no first still; {:?}", status(&d, n)));
    }

    // The NVR drops every session at once and, while it reboots, accepts
    // connections but hangs up on every request.
    server.go_down().await;
    let gone = Instant::now();
    let (log, hole) = black_hole(server.local_addr()).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    hole.abort();
    let _ = hole.await;
    let seen = log.lock().unwrap().clone();

    // Back up: every channel has a still again soon.
    let base: Vec<u64> = names.iter().map(|n| status(&d, n).stills).collect();
    server.come_back().await.unwrap();
    let back = Instant::now();
    let mut healed = Vec::new();
    for (n, b) in names.iter().zip(&base) {
        let left = Duration::from_secs(20).saturating_sub(back.elapsed());
        next_still(&d, n, *b, left)
            .await
            .unwrap_or_else(|| panic!("{n}: no still after return"));
        healed.push(back.elapsed());
    }
    d.shutdown().await;

    let mut dials: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for s in seen.iter().filter(|s| s.method == "DESCRIBE") {
        dials
            .entry(s.path.clone())
            .or_default()
            .push((s.at - gone).as_secs_f64());
    }
    let mut first: Vec<f64> = dials.values().map(|v| v[0]).collect();
    first.sort_by(f64::total_cmp);
    let spread = first.last().copied().unwrap_or(0.0) - first.first().copied().unwrap_or(0.0);
    let gaps: Vec<f64> = first.windows(2).map(|w| w[1] - w[0]).collect();
    let min_gap = gaps.iter().copied().fold(f64::INFINITY, f64::min);
    let busiest_second = first
        .iter()
        .map(|t| first.iter().filter(|u| **u >= *t && **u < t + 1.0).count())
        .max()
        .unwrap_or(0);
    let periods: Vec<f64> = dials
        .values()
        .flat_map(|v| v.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>())
        .collect();
    let slowest_heal = healed.iter().max().unwrap();
    eprintln!(
        "8 channels: first redials at {first:.2?} s after the drop (spread {spread:.2} s, \
         closest {min_gap:.2} s, at most {busiest_second} in any 1 s); each redialed every \
         {:.2}-{:.2} s; all had a still {:.1} s after the return at most",
        periods.iter().copied().fold(f64::INFINITY, f64::min),
        periods.iter().copied().fold(0.0, f64::max),
        slowest_heal.as_secs_f64(),
    );
    assert_eq!(dials.len(), 8, "every channel redialed: {dials:?}");
    assert!(spread >= 2.5, "redials not spread: {first:?}");
    assert!(busiest_second <= 4, "redials bunched: {first:?}");
    assert!(min_gap >= 0.2, "two redials together: {first:?}");
    // Steady, not growing: about every 4 s per channel.
    assert!(
        periods.iter().all(|p| (3.5..=4.6).contains(p)),
        "redial periods {periods:?}"
    );
    assert!(*slowest_heal <= Duration::from_secs(10), "{healed:?}");
}
