//! The admin listener: `/metrics`, `/healthz`, `/readyz` and `/config`.
//!
//! `/config` describes the whole policy (routes, profiles, trusted ranges): a map for an
//! attacker, so it is answered only to loopback clients (`kubectl port-forward`, `kubectl
//! exec`), unless `--admin-config-remote`; anyone else gets the 404 of an unknown path.

use std::net::IpAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::state::Shared;
use crate::base::body::json;
use crate::base::body::{ProxyBody, full};

/// Who may see `/config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigVisibility {
    /// Loopback clients only (the default).
    Loopback,
    /// Any client of the admin listener (`--admin-config-remote`).
    Anyone,
}

impl ConfigVisibility {
    fn allows(self, peer: IpAddr) -> bool {
        self == Self::Anyone || peer.is_loopback() || peer.to_canonical().is_loopback()
    }
}

/// Answers one admin request from `peer`.
pub fn handle(
    shared: &Arc<Shared>,
    req: &Request<Incoming>,
    peer: IpAddr,
    config: ConfigVisibility,
) -> Response<ProxyBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "method not allowed"}),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            shared.metrics.introspections_pending(shared.introspector.pending());
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
        "/config" if config.allows(peer) => json(StatusCode::OK, &shared.active.load().config),
        _ => json(StatusCode::NOT_FOUND, &serde_json::json!({"error": "not found"})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_for_loopback_clients_unless_opened() {
        let pod_peer: IpAddr = "10.1.2.3".parse().unwrap();
        for local in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert!(ConfigVisibility::Loopback.allows(local.parse().unwrap()), "{local}");
        }
        assert!(!ConfigVisibility::Loopback.allows(pod_peer));
        assert!(!ConfigVisibility::Loopback.allows("::ffff:10.1.2.3".parse().unwrap()));
        assert!(ConfigVisibility::Anyone.allows(pod_peer));
    }
}
