//! Black-box tests of hostile clients over real sockets: stalled uploads toward the app's
//! keep-alive pool, silent and half-open connections, idle keep-alive connections, the
//! connection cap, and clients that leave while their token is being introspected.

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn anonymous_sidecar(port: u16, extra: &[&str]) -> (Sidecar, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    loaded(
        "g1",
        json!({"routes": [{"name": "app", "pathPrefix": "/", "backend": {"type": "Local", "port": port}}]}),
        json!({}),
    )
    .write_dir(dir.path())
    .unwrap();
    (Sidecar::start_with(dir.path(), extra).await, dir)
}

/// An app that answers every request at once, before reading its body, and reads the body
/// afterwards (however slowly it comes): its connections stay open.
async fn eager_app() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: Request<Incoming>| async move {
                    let path = req.uri().path().to_owned();
                    tokio::spawn(async move {
                        let _ = req.into_body().collect().await;
                    });
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(path))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, task)
}

/// Reads from `stream` until `needle` appears (bounded by `within`); what was read.
async fn read_until(stream: &mut TcpStream, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&buf).contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Item 4 of issue 15: an answer that ends while its request body is still uploading must
/// not hand its app connection to the next call.
#[tokio::test]
async fn a_stalled_upload_does_not_block_the_next_call() {
    let (port, _app) = eager_app().await;
    let (sidecar, _dir) = anonymous_sidecar(port, &["--backend-timeout", "3s"]).await;

    let mut uploader = TcpStream::connect(sidecar.inbound).await.unwrap();
    uploader
        .write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\nab")
        .await
        .unwrap();
    let answer = read_until(&mut uploader, "/upload", Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The uploader stays connected, its body 99,998 bytes short. The next call must not
    // wait for it.
    let start = Instant::now();
    let (status, _, body) = get_with(&sidecar.url("/next"), &[]).await;
    let took = start.elapsed();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(&body[..], b"/next");
    assert!(took < Duration::from_secs(2), "the next call waited {took:?}");
    drop(uploader);
}
