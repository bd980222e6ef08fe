//! Black-box tests of the audit log's bounds and rotation through the real binary: a client's
//! huge path is logged cut, a hit whose client left before the answer is recorded, and SIGHUP makes the sidecar write to a fresh `--audit-log` after
//! a log rotation moved the old one away.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

async fn open_sidecar(port: u16) -> (Sidecar, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    loaded(
        "g1",
        json!({"profiles": [{"name": "open", "auth": {"type": "Anonymous"}}],
               "routes": [{"name": "api", "pathPrefix": "/", "profiles": ["open"],
                           "backend": {"type": "Local", "port": port}}]}),
        json!({}),
    )
    .write_dir(dir.path())
    .unwrap();
    (Sidecar::start(dir.path()).await, dir)
}

#[tokio::test]
async fn a_huge_path_is_logged_cut() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = open_sidecar(backend.port()).await;
    let path = format!("/{}", "a".repeat(40_000));
    let (status, _, _) = get_with(&sidecar.url(&path), &[]).await;
    assert_eq!(status, 200);
    let lines = sidecar.wait_audit(1).await;
    let logged = lines[0]["path"].as_str().unwrap();
    assert!(logged.len() < 1100, "{} bytes logged", logged.len());
    assert!(logged.ends_with('…'), "{logged}");
}

#[tokio::test]
async fn sighup_reopens_the_audit_log_after_rotation() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = open_sidecar(backend.port()).await;
    assert_eq!(get_with(&sidecar.url("/before"), &[]).await.0, 200);
    assert_eq!(sidecar.wait_audit(1).await.len(), 1);
    let rotated = sidecar.audit.with_extension("log.1");
    std::fs::rename(&sidecar.audit, &rotated).unwrap();
    sidecar.signal("HUP");
    // Bounded: the sidecar reopens the file soon after the signal.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sidecar.audit.exists() {
        assert!(Instant::now() < deadline, "no new audit log after SIGHUP");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get_with(&sidecar.url("/after"), &[]).await.0, 200);
    let lines = sidecar.wait_audit(1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["path"], "/after");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("/before") && !old.contains("/after"), "{old}");
    // The process is alive and serving (SIGHUP did not stop it).
    assert_eq!(get_with(&sidecar.url("/again"), &[]).await.0, 200);
}

/// A client that leaves while the app works on its request (HTTP/1.1: closes the connection;
/// HTTP/2: resets the stream) still leaves its hit in the audit log, with status 499, and in
/// the request metrics: the app may carry the request out.
#[tokio::test]
async fn a_hit_whose_client_left_before_the_answer_is_audited() {
    use tokio::io::AsyncWriteExt;
    let backend = Backend::start().await;
    let (sidecar, _dir) = open_sidecar(backend.port()).await;

    let mut h1 = tokio::net::TcpStream::connect(sidecar.inbound).await.unwrap();
    h1.write_all(b"GET /sleep/1500?h1 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(h1);

    let stream = tokio::net::TcpStream::connect(sidecar.inbound).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}/sleep/1600", sidecar.inbound))
        .body(http_body_util::Full::<bytes::Bytes>::default())
        .unwrap();
    // Given up after 300 ms: the stream is reset.
    let gave_up = tokio::time::timeout(Duration::from_millis(300), sender.send_request(req)).await;
    assert!(gave_up.is_err(), "answered before the app slept");

    // HTTP/1.1, leaving in the middle of an upload: the client's doing, not the app's.
    let upload = b"POST /count HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n0123456789";
    send_then_leave(sidecar.inbound, upload, Duration::from_millis(300)).await;

    let lines = sidecar.wait_audit(3).await;
    let mut paths: Vec<_> = lines
        .iter()
        .map(|l| {
            (
                l["path"].as_str().unwrap().to_owned(),
                l["status"].clone(),
                l["decision"].clone(),
            )
        })
        .collect();
    paths.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        paths,
        [
            ("/count".to_owned(), json!(499), json!("allow")),
            ("/sleep/1500".to_owned(), json!(499), json!("allow")),
            ("/sleep/1600".to_owned(), json!(499), json!("allow")),
        ],
        "{lines:?}"
    );
    assert!(
        lines.iter().all(|l| l["reason"] == "client left before the answer"),
        "{lines:?}"
    );
    let metrics = sidecar.metrics().await;
    let counted = "portcullis_requests_total{decision=\"allow\",profile=\"open\",route=\"api\",status_class=\"4xx\"} 3";
    assert!(
        metrics.contains(counted),
        "the hits are not in the request metrics: {metrics}"
    );
}
