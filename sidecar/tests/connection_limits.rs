//! Black-box tests of the connection-level limits: oversized headers and slow headers.

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
    assert!(elapsed < Duration::from_secs(3), "cut too late: {elapsed:?}");
}
