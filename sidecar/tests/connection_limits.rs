//! Black-box tests of the connection-level limits: oversized headers, slow headers, and one
//! client address's share of a listener.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn read_all(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut buf = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut buf)).await {
        Ok(_) => Some(String::from_utf8_lossy(&buf).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start_with(dir.path(), &["--max-header-bytes", "16384"]).await;
    let mut s = TcpStream::connect(sidecar.inbound).await.unwrap();
    let big = "a".repeat(64 * 1024);
    let req = format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n");
    // The sidecar may answer and close before everything is written.
    let _ = s.write_all(req.as_bytes()).await;
    let answer = read_all(&mut s, Duration::from_secs(5)).await.expect("answered");
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    // Just over the limit: a JSON answer like every other refusal.
    let over = "b".repeat(17 * 1024);
    let (status, headers, body) = get_with(&sidecar.url("/"), &[("x-big", &over)]).await;
    assert_eq!(status, 431);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(json_of(&body)["error"], "request headers too large");

    // The sidecar is still serving.
    let (status, _, _) = get_with(&sidecar.url("/"), &[]).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn slow_headers_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start_with(dir.path(), &["--header-read-timeout", "500ms"]).await;
    let mut s = TcpStream::connect(sidecar.inbound).await.unwrap();
    let start = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    // Never finish the head: the sidecar must close the connection on its own.
    let answer = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(answer.is_some(), "connection not cut");
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "cut too early: {elapsed:?}");
    assert!(elapsed < Duration::from_millis(1400), "cut too late: {elapsed:?}");
}

/// Reads one answer with a `content-length` from `stream`.
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length: usize = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse().ok())
                .expect("a content-length");
            if buf.len() >= head_end + 4 + length {
                return text;
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline.into(), stream.read(&mut chunk))
            .await
            .expect("answered in time")
            .unwrap();
        assert!(n > 0, "closed before the answer: {text}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The header read timeout holds for every head on a kept-alive HTTP/1.1 connection (from the
/// end of the previous answer), however long the idle timeout; HTTP/2 connections, whose
/// requests come in frames, are bound by the idle timeout only. Either way it is counted.
#[tokio::test]
async fn the_header_read_timeout_bounds_every_http1_head_not_http2() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--header-read-timeout", "500ms", "--idle-timeout", "30s"];
    let sidecar = Sidecar::start_with(dir.path(), &flags).await;

    let mut s = TcpStream::connect(sidecar.inbound).await.unwrap();
    s.write_all(b"GET /first HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let first = read_answer(&mut s).await;
    assert!(first.starts_with("HTTP/1.1 404"), "{first}");
    let start = Instant::now();
    s.write_all(b"GET /second HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let rest = read_all(&mut s, Duration::from_secs(5))
        .await
        .expect("connection not cut");
    let elapsed = start.elapsed();
    assert_eq!(rest, "", "the unfinished head was answered");
    assert!(elapsed >= Duration::from_millis(400), "cut too early: {elapsed:?}");
    assert!(elapsed < Duration::from_millis(1400), "cut too late: {elapsed:?}");

    // HTTP/2 (prior knowledge): quiet for three header read timeouts, still serving.
    let stream = TcpStream::connect(sidecar.inbound).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    for path in ["/one", "/two"] {
        let req = http::Request::get(format!("http://{}{path}", sidecar.inbound))
            .body(http_body_util::Full::<bytes::Bytes>::default())
            .unwrap();
        let resp = sender.send_request(req).await.expect("HTTP/2 connection kept");
        assert_eq!(resp.status(), 404);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!conn.is_finished(), "HTTP/2 connection cut by the header read timeout");
    }

    let metrics = sidecar.metrics().await;
    let line = "portcullis_connections_timed_out_total{listener=\"inbound\",phase=\"idle\"} ";
    let counted = metrics
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(counted, Some(1.0), "{metrics}");
}

/// `--max-connections-per-client`: one client address holds at most its share of a listener
/// (beyond, closed as accepted and counted as refused); another address is still served.
#[tokio::test]
async fn one_client_address_holds_at_most_its_share() {
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start_with(dir.path(), &["--max-connections-per-client", "2"]).await;
    let from = |ip: [u8; 4]| {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((std::net::Ipv4Addr::from(ip), 0).into()).unwrap();
        socket.connect(sidecar.inbound)
    };
    let open = "portcullis_connections_open{listener=\"inbound\"}";
    let _held = [from([127, 0, 0, 1]).await.unwrap(), from([127, 0, 0, 1]).await.unwrap()];
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&sidecar.metrics().await, open) != Some(2.0) {
        assert!(Instant::now() < deadline, "the two connections were not accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A third from the same address: closed at once, without an answer.
    let mut third = from([127, 0, 0, 1]).await.unwrap();
    let _ = third.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let answer = read_all(&mut third, Duration::from_secs(3)).await;
    assert_eq!(answer.as_deref(), Some(""), "the third connection was served");
    let refused = "portcullis_connections_refused_total{listener=\"inbound\"}";
    assert_eq!(metric(&sidecar.metrics().await, refused), Some(1.0));
    // Another address is served.
    let mut other = from([127, 0, 0, 2]).await.unwrap();
    other
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_all(&mut other, Duration::from_secs(3)).await.expect("answered");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}
