//! `portcullis-sidecar demo-backend`: a tiny app for the quickstart. It answers every call
//! with 200 and a JSON echo of the method, the path and the `X-Portcullis-*` headers the
//! sidecar passed on.

use std::convert::Infallible;
use std::net::SocketAddr;

use http::{Request, Response, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

use crate::base::body::{ProxyBody, full};
use crate::base::headers::PORTCULLIS_PREFIX;

/// Serves the demo backend on `listen` until the process ends.
pub async fn serve(listen: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "demo backend listening");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        tokio::spawn(async move {
            let svc = service_fn(|req| async move { Ok::<_, Infallible>(echo(&req)) });
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "demo connection ended");
            }
        });
    }
}

/// The echo of one request.
pub fn echo(req: &Request<Incoming>) -> Response<ProxyBody> {
    let portcullis: Map<String, Value> = req
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str().starts_with(PORTCULLIS_PREFIX))
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                Value::from(String::from_utf8_lossy(v.as_bytes())),
            )
        })
        .collect();
    let body = json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "headers": portcullis,
    });
    let mut resp = Response::new(full(body.to_string()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}
