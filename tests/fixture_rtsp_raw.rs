//! Speaks raw RTSP over a TcpStream to check status codes and headers that
//! real clients rarely exercise: 400 on garbage, 404, 454, 461, 501, and that
//! interleaved frames from the client are skipped between requests.

mod common;

use std::time::Duration;

use rtsnap::fixture::Pacing;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CHANNEL: &str = "/cam/live";

/// Reads one RTSP response (head + body), skipping interleaved frames.
async fn read_response(sock: &mut TcpStream, buf: &mut Vec<u8>) -> String {
    loop {
        if buf.first() == Some(&b'$') && buf.len() >= 4 {
            let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
            if buf.len() >= 4 + len {
                buf.drain(..4 + len);
                continue;
            }
        } else if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf[..end].to_vec()).unwrap();
            let body_len = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map_or(0, |v| v.parse::<usize>().unwrap());
            if buf.len() >= end + 4 + body_len {
                let all = String::from_utf8_lossy(&buf[..end + 4 + body_len]).into_owned();
                buf.drain(..end + 4 + body_len);
                return all;
            }
        }
        let mut chunk = [0u8; 8192];
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "connection closed; buffered {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn roundtrip(sock: &mut TcpStream, buf: &mut Vec<u8>, req: &str) -> String {
    sock.write_all(req.as_bytes()).await.unwrap();
    read_response(sock, buf).await
}

fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    resp.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn status_codes_and_headers() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let server = common::start(&[CHANNEL], Pacing::Live).await;
        let url = server.url(CHANNEL);
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        let mut b = Vec::new();

        let r = roundtrip(&mut s, &mut b, &format!("OPTIONS {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n")).await;
        assert!(r.starts_with("RTSP/1.0 200 OK\r\n"), "{r}");
        assert_eq!(header(&r, "CSeq"), Some("1"));
        assert_eq!(header(&r, "Server"), Some("rtsnap-fixture"));
        assert!(header(&r, "Public").unwrap().contains("GET_PARAMETER"));

        let r = roundtrip(&mut s, &mut b, &format!("DESCRIBE {url}x RTSP/1.0\r\nCSeq: 2\r\n\r\n")).await;
        assert!(r.starts_with("RTSP/1.0 404"), "{r}");

        let r = roundtrip(&mut s, &mut b, &format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 3\r\nAccept: application/sdp\r\n\r\n")).await;
        assert!(r.starts_with("RTSP/1.0 200"), "{r}");
        assert_eq!(header(&r, "Content-Type"), Some("application/sdp"));
        assert_eq!(header(&r, "Content-Base"), Some(format!("{url}/").as_str()));
        assert!(r.contains("a=rtpmap:96 H264/90000"));

        let track = format!("{url}/trackID=0");
        let r = roundtrip(&mut s, &mut b, &format!("SETUP {track} RTSP/1.0\r\nCSeq: 4\r\nTransport: RTP/AVP;unicast;client_port=5000-5001\r\n\r\n")).await;
        assert!(r.starts_with("RTSP/1.0 461"), "{r}");

        // An RTCP receiver report from the client between requests is skipped.
        s.write_all(b"$\x01\x00\x08\x81\xc9\x00\x01\x00\x00\x00\x01").await.unwrap();

        let r = roundtrip(&mut s, &mut b, &format!("PLAY {url}/ RTSP/1.0\r\nCSeq: 5\r\nSession: nope\r\n\r\n")).await;
        assert!(r.starts_with("RTSP/1.0 454"), "{r}");

        let r = roundtrip(&mut s, &mut b, &format!("SETUP {track} RTSP/1.0\r\nCSeq: 6\r\nTransport: RTP/AVP/TCP;unicast;interleaved=4-5\r\n\r\n")).await;
        assert!(r.starts_with("RTSP/1.0 200"), "{r}");
        let transport = header(&r, "Transport").unwrap();
        assert!(transport.contains("interleaved=4-5;ssrc="), "{transport}");
        let session = header(&r, "Session").unwrap();
        assert!(session.ends_with(";timeout=60"));
        let id = session.split(';').next().unwrap().to_owned();

        let r = roundtrip(&mut s, &mut b, &format!("PLAY {url}/ RTSP/1.0\r\nCSeq: 7\r\nSession: {id}\r\n\r\n")).await;
        assert!(r.starts_with("RTSP/1.0 200"), "{r}");
        assert_eq!(header(&r, "Range"), Some("npt=now-"));
        let info = header(&r, "RTP-Info").unwrap();
        assert!(info.starts_with(&format!("url={track};seq=")) && info.contains(";rtptime="), "{info}");

        // Requests while RTP flows; responses arrive whole between frames.
        assert!(common::wait_until(Duration::from_secs(2), || server.stats().frames_sent > 0).await);
        let r = roundtrip(&mut s, &mut b, &format!("GET_PARAMETER {url}/ RTSP/1.0\r\nCSeq: 8\r\nSession: {id}\r\n\r\n")).await;
        assert!(r.starts_with("RTSP/1.0 200"), "{r}");
        assert_eq!(header(&r, "CSeq"), Some("8"));
        let r = roundtrip(&mut s, &mut b, &format!("RECORD {url}/ RTSP/1.0\r\nCSeq: 9\r\nSession: {id}\r\n\r\n")).await;
        assert!(r.starts_with("RTSP/1.0 501"), "{r}");
        let r = roundtrip(&mut s, &mut b, &format!("TEARDOWN {url}/ RTSP/1.0\r\nCSeq: 10\r\nSession: {id}\r\n\r\n")).await;
        assert!(r.starts_with("RTSP/1.0 200"), "{r}");
        assert_eq!(server.stats().teardowns_received, 1);

        // The server closes after TEARDOWN (any RTP still buffered is drained first).
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        server.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn garbage_gets_400_and_server_survives() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let server = common::start(&[CHANNEL], Pacing::Live).await;
        for junk in [
            &b"GET / HTTP/1.1\r\nHost: x\r\nCSeq: 5\r\n\r\n"[..],
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            b"OPTIONS * RTSP/1.0\r\nContent-Length: zz\r\n\r\n",
        ] {
            let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
            s.write_all(junk).await.unwrap();
            let mut resp = Vec::new();
            s.read_to_end(&mut resp).await.unwrap();
            let resp = String::from_utf8_lossy(&resp);
            assert!(resp.starts_with("RTSP/1.0 400 Bad Request\r\n"), "{resp}");
        }
        // An over-long head without a blank line is rejected too.
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        s.write_all(&[b'A'; 10_000]).await.unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await.unwrap();
        assert!(resp.starts_with(b"RTSP/1.0 400"));
        // Still serving.
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        let mut b = Vec::new();
        let r = roundtrip(&mut s, &mut b, "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n").await;
        assert!(r.starts_with("RTSP/1.0 200"));
        server.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn shutdown_closes_sessions() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let server = common::start(&[CHANNEL], Pacing::Fast).await;
        let url = server.url(CHANNEL);
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        let mut b = Vec::new();
        let r = roundtrip(&mut s, &mut b, &format!("SETUP {url} RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n")).await;
        let id = header(&r, "Session").unwrap().split(';').next().unwrap().to_owned();
        roundtrip(&mut s, &mut b, &format!("PLAY {url} RTSP/1.0\r\nCSeq: 2\r\nSession: {id}\r\n\r\n")).await;
        server.shutdown().await;
        // Drain whatever was in flight; the connection must reach EOF/reset.
        let mut sink = vec![0u8; 65536];
        loop {
            match s.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("test timed out");
}

/// A live client that stops reading must lose frames, not get a backlog:
/// after it resumes, the RTP timestamps are close to the channel's present
/// and the sequence numbers show the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_live_client_skips_instead_of_buffering() {
    let Some(stream) = common::main_fixture("cam1080p-high") else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(20), async {
        let server = rtsnap::fixture::ServerBuilder::new()
            .channel(CHANNEL, stream)
            .bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let url = server.url(CHANNEL);
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let mut s = sock.connect(server.local_addr()).await.unwrap();
        let mut b = Vec::new();
        let r = roundtrip(&mut s, &mut b, &format!("SETUP {url} RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n")).await;
        let id = header(&r, "Session").unwrap().split(';').next().unwrap().to_owned();
        roundtrip(&mut s, &mut b, &format!("PLAY {url} RTSP/1.0\r\nCSeq: 2\r\nSession: {id}\r\n\r\n")).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let stalled = server.stats();
        // The kernel buffers absorb well under 4 s of 1080p before writes block.
        assert!(stalled.frames_sent < 90, "{stalled:?}");
        // Resume reading for 1 s: the blocked write completes late, the
        // session skips to the present instead of sending the backlog.
        let mut sink = vec![0u8; 65536];
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                if s.read(&mut sink).await.unwrap() == 0 {
                    break;
                }
            }
        })
        .await;
        let stats = server.stats();
        eprintln!("stalled: {stalled:?}\nresumed: {stats:?}");
        assert!(stats.frames_dropped > 50, "{stats:?}");
        // About 5 s of live time passed; sent + dropped covers it, sent alone does not.
        assert!(stats.frames_sent + stats.frames_dropped >= 110, "{stats:?}");
        assert!(stats.frames_sent < 120, "{stats:?}");
        drop(s);
        server.shutdown().await;
    })
    .await
    .expect("test timed out");
}
