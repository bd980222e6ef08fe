//! The Builtin OAuth2 token endpoint: `POST <pathPrefix>/oauth2/token` of a route whose
//! profiles include an OAuth2 profile with provider Builtin ([`Engine::token_endpoint`]);
//! client credentials grant, `client_secret_basic` or `client_secret_post`. The profile's
//! trusted IP ranges apply before any credential is read. Not counted against rate limits;
//! audited with the client id as identity. Tokens and secrets are never logged.
//!
//! [`Engine::token_endpoint`]: portcullis_policy::Engine::token_endpoint

use std::time::Instant;

use http::header::{CACHE_CONTROL, HeaderValue, PRAGMA, WWW_AUTHENTICATE};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use portcullis_policy::{TokenEndpoint, TokenError};
use serde::Serialize;

use super::respond::Answer;
use crate::base::body::{ProxyBody, json};
use crate::base::clock::{mono_millis, unix_secs};
use crate::ops::state::Shared;
use crate::telemetry::audit::Record;

/// Largest token request body read.
const MAX_TOKEN_REQUEST_BYTES: usize = 16 * 1024;

#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

#[derive(Serialize)]
struct TokenErrorBody {
    error: &'static str,
}

/// Answers a token request to a Builtin profile's endpoint, and audits it (the client id as
/// identity; never the secret nor the token).
pub async fn serve(
    shared: &Shared,
    endpoint: TokenEndpoint<'_>,
    req: Request<ProxyBody>,
    start: Instant,
) -> Response<ProxyBody> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let client_ip = endpoint.client_ip;
    let route = &*endpoint.route.name;
    let result = if endpoint.from_trusted_address() {
        let (parts, body) = req.into_parts();
        let body = Limited::new(body, MAX_TOKEN_REQUEST_BYTES)
            .collect()
            .await
            .ok()
            .map(|c| c.to_bytes())
            .and_then(|b| String::from_utf8(b.to_vec()).ok());
        Some(match body {
            Some(body) => endpoint.issue(&parts.headers, &body, unix_secs(), mono_millis()),
            None => Err(TokenError::InvalidRequest),
        })
    } else {
        // Refused before the credentials are even read, as the API behind it would be.
        None
    };
    let (mut response, identity, decision, reason) = match &result {
        None => (
            Answer::Forbidden { route }.response(),
            "-",
            "deny",
            "client address outside the profile's trusted IP ranges",
        ),
        Some(Ok(issued)) => (
            json(
                StatusCode::OK,
                &TokenResponse {
                    access_token: &issued.access_token,
                    token_type: "Bearer",
                    expires_in: issued.expires_in,
                    scope: issued.scope.as_deref(),
                },
            ),
            issued.client_id.as_str(),
            "allow",
            "oauth2 token issued",
        ),
        Some(Err(e)) => {
            let status = match e {
                TokenError::InvalidClient => StatusCode::UNAUTHORIZED,
                TokenError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::BAD_REQUEST,
            };
            let mut resp = json(status, &TokenErrorBody { error: e.code() });
            if let TokenError::Throttled { retry_after_secs } = e {
                resp.headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
                shared.metrics.rate_limited("auth_failures");
            }
            if *e == TokenError::InvalidClient
                && let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{route}\", charset=\"UTF-8\""))
            {
                resp.headers_mut().insert(WWW_AUTHENTICATE, v);
            }
            (resp, "-", "deny", e.code())
        }
    };
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(PRAGMA, HeaderValue::from_static("no-cache"));
    let record = Record {
        route,
        profile: endpoint.profile,
        identity,
        authenticated: None,
        client_ip,
        method: &method,
        path: &path,
        status: response.status().as_u16(),
        latency: start.elapsed(),
        decision,
        reason,
    };
    shared
        .metrics
        .request(route, endpoint.profile, decision, record.status, record.latency);
    shared.audit.record(&record);
    response
}
