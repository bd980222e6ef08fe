//! The admin port: `/metrics`, `/healthz` (the process serves) and `/readyz` (this replica
//! is a healthy standby, or the leader with its caches synced).
//!
//! I/O (an HTTP listener). Layer 5 of the list in `controller`: may use layers 0–4; uses
//! `metrics` (layer 0).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::metrics::Metrics;

/// What `/readyz` reports: ready when the controller is and, on a replica that serves the
/// admission webhooks, once it has a serving certificate (before that every handshake fails).
pub struct Health {
    /// Set once this replica knows whether it leads (and, as leader, has synced its caches).
    ready: AtomicBool,
    /// The webhook server can answer (always true without one).
    serving: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self::new(false)
    }
}

impl Health {
    /// Not ready yet; `webhooks`: this replica serves the admission webhooks.
    pub fn new(webhooks: bool) -> Self {
        Self {
            ready: AtomicBool::new(false),
            serving: AtomicBool::new(!webhooks),
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// The webhook server has (true) or lost (false) its serving certificate.
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && self.serving.load(Ordering::SeqCst)
    }
}

/// Binds the admin port.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the admin endpoints until `shutdown` turns true.
pub async fn serve(listener: TcpListener, metrics: Metrics, health: Arc<Health>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "admin: accept failed");
                    continue;
                }
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let answer = answer(&req, &metrics, &health);
                async move { Ok::<_, Infallible>(answer) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

fn answer(req: &Request<Incoming>, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => text(StatusCode::OK, "text/plain; version=0.0.4", metrics.render()),
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" if health.is_ready() => text(StatusCode::OK, "text/plain", "ready\n".into()),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n".into()),
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}
