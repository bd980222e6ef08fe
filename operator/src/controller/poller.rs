//! The leader's poller of the sidecars' generations (the I/O half of the rollout status):
//! [`poll_loop`] runs [`rollout::poll`](super::rollout::poll) every
//! [`POLL_EVERY`](super::rollout::POLL_EVERY) (faster after a nudge) and queues the namespaces
//! whose reports changed; [`HttpProbe`] asks one sidecar's `GET /readyz` over HTTP/1.1.
//!
//! Layer 5 (I/O) of the list in `controller`: may use layers 0–4; uses `queue` (layer 0),
//! `rollout` (layer 3) and `context` (layer 4).

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::context::{Context, known_namespaces};
use super::queue::WorkQueue;
use super::rollout::{Probe, poll};

/// Largest `/readyz` body read.
const BODY_LIMIT: usize = 16 * 1024;

/// The leader's poller: polls, reconciles the namespaces whose reports changed, waits.
pub async fn poll_loop<P: Probe>(ctx: Arc<Context>, queue: Arc<WorkQueue>, probe: P) {
    let first = poll(&ctx.sidecars, &probe).await;
    // Now the counts hold: every namespace gets them.
    for ns in known_namespaces(&ctx).into_iter().chain(first) {
        queue.add(&ns);
    }
    loop {
        let wait = ctx.sidecars.next_wait();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = ctx.sidecars.nudged.notified() => {}
        }
        for ns in poll(&ctx.sidecars, &probe).await {
            queue.add(&ns);
        }
    }
}

/// [`Probe`] over HTTP/1.1: `GET http://<podIP>:<admin port>/readyz`, the `generation` of
/// its JSON body (the sidecar answers 503 with an empty one before its first valid
/// configuration).
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpProbe;

impl Probe for HttpProbe {
    async fn generation(&self, admin: SocketAddr) -> Option<String> {
        match readyz(admin).await {
            Ok(generation) => generation,
            Err(error) => {
                tracing::debug!(%admin, %error, "sidecar /readyz did not answer");
                None
            }
        }
    }
}

async fn readyz(admin: SocketAddr) -> Result<Option<String>, Box<dyn std::error::Error + Send + Sync>> {
    let stream = tokio::net::TcpStream::connect(admin).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let req = http::Request::get("/readyz")
        .header(http::header::HOST, admin.to_string())
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await;
    let result = match resp {
        Ok(resp) => Limited::new(resp.into_body(), BODY_LIMIT)
            .collect()
            .await
            .map(|b| b.to_bytes()),
        Err(e) => Err(e.into()),
    };
    conn.abort();
    let body: serde_json::Value = serde_json::from_slice(&result?)?;
    Ok(body["generation"].as_str().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn http_probe_reads_the_generation_of_readyz() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for body in [
                json!({"status": "ready", "generation": "abc"}).to_string(),
                json!({"status": "no valid configuration loaded", "generation": ""}).to_string(),
                "not json".to_owned(),
            ] {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut buf = vec![0; 1024];
                let n = conn.read(&mut buf).await.unwrap();
                assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /readyz HTTP/1.1\r\n"));
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                conn.write_all(resp.as_bytes()).await.unwrap();
            }
        });
        assert_eq!(HttpProbe.generation(at).await.as_deref(), Some("abc"));
        assert_eq!(HttpProbe.generation(at).await.as_deref(), Some(""));
        assert_eq!(HttpProbe.generation(at).await, None);
        server.await.unwrap();
        // Nobody listening: no generation.
        assert_eq!(HttpProbe.generation(at).await, None);
    }
}
