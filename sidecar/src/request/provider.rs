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
use portcullis_limits::store::grants::GrantState;
use portcullis_limits::{Store, StoreError};
use portcullis_policy::oauth2::grants::{self, GrantRandom};
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
        let store = trip
            .shared
            .limiter
            .store()
            .filter(|_| endpoint.provider().book().is_shared());
        Some(match (body, random()) {
            (Some(body), Some(random)) => {
                let input = CallInput {
                    method: parts.method.as_str(),
                    headers: &parts.headers,
                    query: parts.uri.query(),
                    body: &body,
                };
                match store {
                    None => endpoint.serve(&input, &random, unix_millis(), mono_millis()),
                    Some(store) => match shared_call(store, &endpoint, &input, &random).await {
                        Ok(reply) => reply,
                        Err(error) => {
                            tracing::warn!(%error, route, "the limits store holds the grants and cannot be used: 503");
                            let mut r =
                                Reply::failure(503, "temporarily_unavailable", "the grant store is unavailable");
                            r.reason = "grant store unavailable";
                            r
                        }
                    },
                }
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

/// A call whose grants live in the shared store: the grants it reads are loaded into the
/// book first, the engine answers, and what it changed is written back (compare and set: a
/// grant another replica changed meanwhile, a code or refresh token redeemed twice at once,
/// is revoked, and the call refused as a reuse would be). Fails closed: a store that cannot
/// be used is an error, answered 503.
async fn shared_call(
    store: &Store,
    endpoint: &ProviderEndpoint<'_>,
    input: &CallInput<'_>,
    random: &ProviderRandom,
) -> Result<Reply, StoreError> {
    let provider = endpoint.provider();
    let (owner, book) = (provider.owner(), provider.book());
    let needs = endpoint.needs(input);
    let mut ids = needs.ids;
    if needs.user.is_some() || needs.client_id.is_some() {
        let indexed = store
            .grant_index(owner, needs.user.as_deref(), needs.client_id.as_deref())
            .await?;
        // Local copies the store no longer indexes were revoked or have ended.
        let selects = |g: &grants::Grant| {
            needs.user.as_deref().is_none_or(|u| g.user == u)
                && needs.client_id.as_deref().is_none_or(|c| g.client_id == c)
        };
        for id in book.ids(selects) {
            if !indexed.iter().any(|i| **i == *id) {
                book.import(&id, None);
            }
        }
        ids.extend(indexed);
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    for chunk in refs.chunks(LOAD_CHUNK) {
        let loaded = store.grants_load(owner, chunk).await?;
        for (id, stored) in chunk.iter().zip(&loaded) {
            book.import(id, stored.as_ref().map(|(v, d)| (*v, d.as_str())));
        }
    }
    let now_ms = unix_millis();
    let mut reply = endpoint.serve(input, random, now_ms, mono_millis());
    let ttl = u64::from(provider.ttl_seconds());
    let index_ttl_ms = provider.delegation().map_or(0, |d| d.max_grant_secs) * 1000;
    let mut changes = book.take_changes();
    let mut lost = false;
    for id in &changes.changed {
        let Some(e) = book.export(id) else { continue };
        let state = GrantState {
            id,
            user: &e.user,
            client_id: &e.client_id,
            from_version: e.version.saturating_sub(1),
            version: e.version,
            document: &e.document,
            expires_at_ms: e.expires_at.saturating_mul(1000),
        };
        if store.grant_save(owner, &state, index_ttl_ms).await? {
            continue;
        }
        if e.version == 1 {
            // A new grant the store would not take (its id revoked before): no code.
            book.import(id, None);
            reply = Reply::failure(500, "server_error", "the grant could not be stored");
            continue;
        }
        // Another replica changed the grant since it was loaded: the same code or refresh
        // token was used twice. Nobody keeps it.
        book.revoke(id, ttl, now_ms / 1000);
        lost = true;
    }
    if lost {
        let more = book.take_changes();
        changes.revoked.extend(more.revoked);
        changes.clients.extend(more.clients);
        reply = Reply::failure(400, "invalid_grant", "used before: the grant is revoked");
        reply.reason = "oauth2 code or refresh token reused: grant revoked";
    }
    if !changes.revoked.is_empty() {
        let revoked: Vec<(&str, &str, &str)> = changes
            .revoked
            .iter()
            .map(|(id, user, client)| (&**id, &**user, &**client))
            .collect();
        for chunk in revoked.chunks(LOAD_CHUNK) {
            store.grants_revoke(owner, chunk).await?;
        }
    }
    for client in &changes.clients {
        store.client_tokens_revoke(owner, client).await?;
    }
    Ok(reply)
}

/// Most grants loaded or revoked in one store call.
const LOAD_CHUNK: usize = 256;

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
