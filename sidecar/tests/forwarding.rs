//! Black-box tests of forwarding: header hygiene, h2c, streaming and backend failures.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn anonymous(port: u16) -> portcullis_config::Loaded {
    loaded(
        "g1",
        json!({"routes": [{"name": "app", "pathPrefix": "/", "backend": {"type": "Local", "port": port}}]}),
        json!({}),
    )
}

async fn start(port: u16, extra: &[&str]) -> (Sidecar, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    anonymous(port).write_dir(dir.path()).unwrap();
    (Sidecar::start_with(dir.path(), extra).await, dir)
}

#[tokio::test]
async fn forwards_with_clean_headers() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = start(backend.port(), &[]).await;
    let (status, _, body) = get_with(
        &sidecar.url("/hello/world?a=1"),
        &[
            ("x-portcullis-identity", "admin"),
            ("x-portcullis-profile", "root"),
            ("x-portcullis-anything", "spoof"),
            ("x-forwarded-for", "203.0.113.7"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("proxy-authorization", "Basic eDp5"),
            ("x-kept", "yes"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let echo = json_of(&body);
    assert_eq!(echo["path"], "/hello/world");
    assert_eq!(echo["query"], "a=1");
    let h = &echo["headers"];
    assert_eq!(h["x-portcullis-identity"], json!(["anonymous"]), "{h}");
    assert_eq!(h["x-portcullis-route"], json!(["app"]));
    assert!(h.get("x-portcullis-anything").is_none(), "{h}");
    assert_eq!(h["x-forwarded-for"], json!(["203.0.113.7, 127.0.0.1"]));
    assert_eq!(h["x-forwarded-proto"], json!(["http"]));
    assert!(
        h.get("x-hop").is_none() && h.get("proxy-authorization").is_none(),
        "{h}"
    );
    assert_eq!(h["x-kept"], json!(["yes"]));
    assert!(h.get("host").is_some());
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = start(backend.port(), &[]).await;
    let req = Request::get(sidecar.url("/h2")).body(Default::default()).unwrap();
    let (status, _, body) = send(&h2c_client(), req).await.expect("h2c answer");
    assert_eq!(status, 200);
    let echo = json_of(&body);
    assert_eq!(echo["path"], "/h2");
    assert_eq!(echo["version"], "HTTP/1.1", "the app is spoken to in HTTP/1.1");
    assert_eq!(echo["headers"]["host"], json!([sidecar.inbound.to_string()]));
}

/// An HTTP/2 client sends each cookie as a field of its own (RFC 9113 section 8.2.3); the app,
/// spoken to in HTTP/1.1, gets them as one `Cookie` field, with and without a body.
#[tokio::test]
async fn http2_cookies_reach_the_app_as_one_field() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = start(backend.port(), &[]).await;
    for (method, body) in [("GET", ""), ("POST", "hi")] {
        let req = Request::builder()
            .method(method)
            .uri(sidecar.url("/h2"))
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let (status, _, answer) = send(&h2c_client(), req).await.expect("h2c answer");
        assert_eq!(status, 200);
        let echo = json_of(&answer);
        assert_eq!(echo["headers"]["cookie"], json!(["a=1; b=2"]), "{method}: {echo}");
    }
}

#[tokio::test]
async fn keep_alive_reuses_the_connection() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = start(backend.port(), &[]).await;
    let mut s = tokio::net::TcpStream::connect(sidecar.inbound).await.unwrap();
    for _ in 0..3 {
        s.write_all(b"GET /k HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
}

#[tokio::test]
async fn response_body_is_streamed() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = start(backend.port(), &[]).await;
    // 100 chunks of 64 KiB, 10 ms apart: about a second to produce.
    let start = Instant::now();
    let resp = client()
        .request(
            Request::get(sidecar.url("/stream/100"))
                .body(Default::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    let first_at = start.elapsed();
    let mut total = first.data_ref().map_or(0, |d| d.len());
    while let Some(frame) = body.frame().await {
        total += frame.unwrap().data_ref().map_or(0, |d| d.len());
    }
    let total_at = start.elapsed();
    assert_eq!(total, 100 * 64 * 1024);
    assert!(total_at >= Duration::from_millis(900), "{total_at:?}");
    assert!(
        first_at < Duration::from_millis(500),
        "first byte after {first_at:?}: buffered?"
    );
}

#[tokio::test]
async fn request_body_is_streamed() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = start(backend.port(), &[]).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(1);
    let body = StreamBody::new(futures::stream::poll_fn(move |cx| rx.poll_recv(cx))).boxed();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let req = Request::post(sidecar.url("/duplex")).body(body).unwrap();
    tx.send(Ok(Frame::data(Bytes::from_static(b"ping-1")))).await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .expect("headers before the request body ended")
        .unwrap();
    let mut body = resp.into_body();
    // Each chunk comes back before the next is sent: nothing waits for the whole body.
    for i in 1..=3 {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("chunk echoed while the request is still open")
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), Bytes::from(format!("ping-{i}")));
        if i < 3 {
            tx.send(Ok(Frame::data(Bytes::from(format!("ping-{}", i + 1)))))
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn backend_down_is_502_and_slow_backend_504() {
    let (_held, down) = closed_addr();
    let down = down.port();
    let (sidecar, _dir) = start(down, &["--backend-timeout", "300ms"]).await;
    let (status, _, body) = get_with(&sidecar.url("/x"), &[]).await;
    assert_eq!(status, 502);
    assert_eq!(json_of(&body), json!({"error": "backend unavailable", "route": "app"}));

    let backend = Backend::start().await;
    let (sidecar, _dir) = start(backend.port(), &["--backend-timeout", "300ms"]).await;
    let (status, _, body) = get_with(&sidecar.url("/sleep/2000"), &[]).await;
    assert_eq!(status, 504);
    assert_eq!(json_of(&body)["error"], "backend timeout");
    let metrics = sidecar.metrics().await;
    assert!(
        metrics.contains("portcullis_backend_errors_total{kind=\"timeout\"} 1"),
        "{metrics}"
    );
    // Still serving.
    assert_eq!(get_with(&sidecar.url("/ok"), &[]).await.0, 200);
}

#[tokio::test]
async fn metrics_and_audit_after_traffic() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = start(backend.port(), &[]).await;
    for _ in 0..3 {
        assert_eq!(get_with(&sidecar.url("/a?apikey=SECRETKEY"), &[]).await.0, 200);
    }
    let metrics = sidecar.metrics().await;
    assert!(
        metrics.contains(
            "portcullis_requests_total{decision=\"allow\",profile=\"anonymous\",route=\"app\",status_class=\"2xx\"} 3"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_request_duration_seconds_count{route=\"app\"} 3"),
        "{metrics}"
    );
    let lines = sidecar.wait_audit(3).await;
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["route"], "app");
    assert_eq!(lines[0]["identity"], "anonymous");
    assert_eq!(lines[0]["decision"], "allow");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["path"], "/a");
    assert!(!std::fs::read_to_string(&sidecar.audit).unwrap().contains("SECRETKEY"));
}

#[tokio::test]
async fn sigterm_lets_an_open_request_finish() {
    let backend = Backend::start().await;
    let (mut sidecar, _dir) = start(backend.port(), &[]).await;
    let url = sidecar.url("/sleep/700");
    let call = tokio::spawn(async move { get_with(&url, &[]).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = sidecar.terminate(Duration::from_secs(4)).await.expect("exits");
    assert!(status.success());
    assert_eq!(call.await.unwrap().0, 200, "the open request was answered before exit");
}
