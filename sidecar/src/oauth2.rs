//! OAuth2 inbound profiles at the edge: the key sets the engine verifies bearer JWTs with, and
//! the Builtin token endpoint.
//!
//! - Key sets: [`refresh_keys`] runs for the life of the process. For every `jwksUri` of the
//!   configuration in force it fetches the document at once (a new URI is picked up within a
//!   quarter second of a reload), then every `--jwks-refresh-interval` (5 min), and again when
//!   a token names a key id the set lacks, at most once per `--jwks-min-refresh-interval`
//!   (30 s). The keys go to the engine's [`KeySlot`]s, which outlive reloads. A failed fetch
//!   (unreachable, not 2xx, not a key set, no usable key) keeps the last keys and is retried
//!   after at most 5 s; with no keys at all, tokens are refused (401).
//! - Token endpoint: `POST <pathPrefix>/oauth2/token` of a route whose profiles include an
//!   OAuth2 profile with provider Builtin ([`Engine::token_endpoint`]); client credentials
//!   grant, `client_secret_basic` or `client_secret_post`. Not counted against rate limits.
//!   Tokens and secrets are never logged.
//!
//! [`Engine::token_endpoint`]: portcullis_policy::Engine::token_endpoint

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, HeaderValue, PRAGMA, WWW_AUTHENTICATE};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use portcullis_policy::oauth2::{JwkSet, KeySlot};
use portcullis_policy::{TokenEndpoint, TokenError};
use serde::Serialize;

use crate::audit;
use crate::body::ProxyBody;
use crate::respond::{Answer, json};
use crate::state::Shared;

/// Largest token request body read.
const MAX_TOKEN_REQUEST_BYTES: usize = 16 * 1024;
/// Largest key set read.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Longest a key set fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait before a failed (or never successful) fetch is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// How often the configuration in force is looked at.
const TICK: Duration = Duration::from_millis(250);

/// When key sets are fetched again.
#[derive(Debug, Clone, Copy)]
pub struct RefreshPolicy {
    /// Every so often (`--jwks-refresh-interval`).
    pub interval: Duration,
    /// At most this often when a token names an unknown key (`--jwks-min-refresh-interval`).
    pub min_interval: Duration,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

fn client() -> Option<HttpsClient> {
    https_client(Duration::from_secs(5)).ok()
}

/// An error and its sources, `: `-joined, for messages about calls to identity providers
/// (never carries a token or a secret: those are not in transport errors).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The HTTPS (and plain HTTP) client the sidecar uses toward identity providers (key sets,
/// token and introspection endpoints): rustls with the system roots, HTTP/1, pooled
/// connections kept 30 s. The error says why no TLS configuration could be made.
pub(crate) fn https_client<B>(
    connect_timeout: Duration,
) -> Result<Client<hyper_rustls::HttpsConnector<HttpConnector>, B>, String>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(crate::tls::VERSIONS)
        .map_err(|e| format!("no usable TLS configuration ({e})"))?
        .with_root_certificates(crate::forward::system_roots())
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector))
}

/// What is known about one `jwksUri`.
struct Fetched {
    /// The last attempt.
    at: Instant,
    /// It succeeded.
    ok: bool,
}

/// Keeps the key sets of the configuration in force fresh (see the module docs). Runs forever.
pub async fn refresh_keys(shared: Arc<Shared>, policy: RefreshPolicy) {
    let Some(client) = client() else {
        tracing::error!("no usable TLS configuration: OAuth2 key sets cannot be fetched");
        return;
    };
    let mut seen: HashMap<String, Fetched> = HashMap::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let active = shared.active.load_full();
        let due: Vec<(String, Arc<KeySlot>)> = active
            .engine
            .jwks()
            .filter(|(uri, slot)| {
                let Some(last) = seen.get(*uri) else {
                    return true;
                };
                let since = last.at.elapsed();
                let unknown = slot.take_unknown_kid();
                since >= policy.interval
                    || (!last.ok && since >= RETRY_AFTER_FAILURE.min(policy.interval))
                    || (unknown && since >= policy.min_interval)
            })
            .map(|(uri, slot)| (uri.to_owned(), slot.clone()))
            .collect();
        drop(active);
        for (uri, slot) in due {
            let ok = match fetch(&client, &uri).await {
                Ok(set) => {
                    tracing::info!(jwks_uri = uri.as_str(), keys = set.len(), "OAuth2 key set loaded");
                    slot.store(set);
                    true
                }
                Err(error) => {
                    tracing::warn!(
                        jwks_uri = uri.as_str(),
                        error = error.as_str(),
                        kept = slot.keys().len(),
                        "OAuth2 key set fetch failed; the last keys are kept"
                    );
                    false
                }
            };
            slot.mark_tried();
            seen.insert(uri, Fetched { at: Instant::now(), ok });
        }
    }
}

async fn fetch(client: &HttpsClient, uri: &str) -> Result<JwkSet, String> {
    let req = Request::get(uri)
        .header(ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(|e| format!("bad jwksUri ({e})"))?;
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| format!("unreachable ({e})"))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("status {}", status.as_u16()));
        }
        Limited::new(resp.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| format!("reading the answer: {e}"))
    };
    let body = tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| "timed out".to_owned())??;
    let set = JwkSet::from_json(&body).map_err(|e| e.to_string())?;
    if set.is_empty() {
        return Err("no usable key in the set".into());
    }
    Ok(set)
}

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
pub async fn token(
    shared: &Shared,
    endpoint: TokenEndpoint<'_>,
    req: Request<Incoming>,
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
            Some(body) => endpoint.issue(&parts.headers, &body, unix_secs()),
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
            let status = if *e == TokenError::InvalidClient {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::BAD_REQUEST
            };
            let mut resp = json(status, &TokenErrorBody { error: e.code() });
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
    let record = audit::Record {
        route,
        profile: endpoint.profile,
        identity,
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

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
