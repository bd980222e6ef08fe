//! The admin listener: `/metrics`, `/healthz`, `/readyz` and `/config`.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::state::Shared;
use crate::base::body::json;
use crate::base::body::{ProxyBody, full};

/// Answers one admin request.
pub fn handle(shared: &Arc<Shared>, req: &Request<Incoming>) -> Response<ProxyBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "method not allowed"}),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let mut resp = Response::new(full(shared.metrics.render()));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            resp
        }
        "/healthz" => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        "/readyz" => {
            let active = shared.active.load();
            let (status, text) = if !active.ready {
                (StatusCode::SERVICE_UNAVAILABLE, "no valid configuration loaded")
            } else if !active.engine.jwks().all(|(_, slot)| slot.tried()) {
                // Until every OAuth2 key set was fetched once (or failed to be), valid
                // tokens would be refused for want of keys.
                (StatusCode::SERVICE_UNAVAILABLE, "fetching OAuth2 key sets")
            } else {
                (StatusCode::OK, "ready")
            };
            json(
                status,
                &serde_json::json!({"status": text, "generation": active.generation()}),
            )
        }
        // `SidecarConfig` holds no secret by construction (they live in `SecretMaterial`,
        // which is never serialized here).
        "/config" => json(StatusCode::OK, &shared.active.load().config),
        _ => json(StatusCode::NOT_FOUND, &serde_json::json!({"error": "not found"})),
    }
}
