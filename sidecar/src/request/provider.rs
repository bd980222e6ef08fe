//! The Builtin OAuth2 provider's endpoints under a route (`<pathPrefix>/oauth2/...`,
//! [`portcullis_policy::provider`]): token, revocation, authorization, the owner's grant API
//! and introspection. The body (a form, or JSON for the grant API) is read here, bounded; the
//! policy engine answers. The profile's trusted IP ranges apply before any credential is read
//! (not to the authorization endpoint, where people's browsers come). Never counted against
//! rate limits; audited with the client (or `owner`) as identity. Tokens, codes and secrets
//! are never logged.

use http::header::{CACHE_CONTROL, HeaderValue, LOCATION, PRAGMA, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use portcullis_policy::oauth2::grants::GrantRandom;
use portcullis_policy::{CallInput, ProviderEndpoint, ProviderRandom, Reply};
use ring::rand::{SecureRandom, SystemRandom};

use super::Trip;
use super::respond::Answer;
use crate::base::body::{ProxyBody, empty, json};
use crate::base::clock::{mono_millis, unix_millis};
use crate::telemetry::audit::Record;

/// Largest request body read.
const MAX_REQUEST_BYTES: usize = 16 * 1024;

fn random() -> Option<ProviderRandom> {
    let rng = SystemRandom::new();
    let mut r = ProviderRandom {
        jti: [0; 16],
        refresh: [0; 32],
        grant: GrantRandom {
            id: [0; 16],
            code: [0; 32],
        },
    };
    rng.fill(&mut r.jti).ok()?;
    rng.fill(&mut r.refresh).ok()?;
    rng.fill(&mut r.grant.id).ok()?;
    rng.fill(&mut r.grant.code).ok()?;
    Some(r)
}

/// Answers a call to a Builtin provider endpoint, and audits it.
pub(super) async fn serve(
    trip: &Trip<'_>,
    endpoint: ProviderEndpoint<'_>,
    req: Request<ProxyBody>,
) -> Response<ProxyBody> {
    let route = &*endpoint.route.name;
    let client_ip = endpoint.client_ip;
    let reply = if !endpoint.from_trusted_address() {
        // Refused before the credentials are even read, as the API behind it would be.
        None
    } else {
        let (parts, body) = req.into_parts();
        let body = if endpoint.call.reads_body() {
            Limited::new(body, MAX_REQUEST_BYTES)
                .collect()
                .await
                .ok()
                .and_then(|c| String::from_utf8(c.to_bytes().to_vec()).ok())
        } else {
            Some(String::new())
        };
        Some(match (body, random()) {
            (Some(body), Some(random)) => {
                let input = CallInput {
                    method: parts.method.as_str(),
                    headers: &parts.headers,
                    query: parts.uri.query(),
                    body: &body,
                };
                endpoint.serve(&input, &random, unix_millis(), mono_millis())
            }
            (None, _) => Reply::failure(400, "invalid_request", "the body is too large or not UTF-8"),
            (_, None) => Reply::failure(500, "server_error", "no random bytes"),
        })
    };
    let (mut response, identity, decision, reason) = match &reply {
        None => (
            Answer::Forbidden { route }.response(),
            "-",
            "deny",
            "client address outside the profile's trusted IP ranges",
        ),
        Some(r) => (
            response(r),
            r.identity.as_str(),
            if r.allowed { "allow" } else { "deny" },
            r.reason,
        ),
    };
    if reply.as_ref().is_some_and(|r| r.retry_after_secs.is_some()) {
        trip.shared.metrics.rate_limited("auth_failures");
    }
    let h = response.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    let record = Record {
        route,
        profile: endpoint.profile,
        identity,
        client_ip,
        decision,
        reason,
        ..trip.record()
    };
    trip.finish(record, decision, response, None)
}

fn response(r: &Reply) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = match &r.body {
        Some(body) => json(status, body),
        None => {
            let mut resp = Response::new(empty());
            *resp.status_mut() = status;
            resp
        }
    };
    let h = resp.headers_mut();
    if let Some(v) = r.location.as_deref().and_then(|l| HeaderValue::from_str(l).ok()) {
        h.insert(LOCATION, v);
    }
    if let Some(v) = r.challenge.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
        h.insert(WWW_AUTHENTICATE, v);
    }
    if let Some(secs) = r.retry_after_secs {
        h.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}
