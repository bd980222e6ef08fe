//! OpenID providers of the profiles with sign-in: their discovery documents
//! (`<issuer>/.well-known/openid-configuration`) and the ID-token keys those name.
//!
//! [`refresh_discovery`] runs for the life of the process, like [`super::jwks::refresh_keys`]:
//! each provider of the configuration in force is fetched at once, then every
//! `--jwks-refresh-interval`, its keys again when an ID token or a bearer token names a key id
//! the set lacks (at most once per `--jwks-min-refresh-interval`), and a failure is retried
//! after at most 5 s while the last document and keys are kept. The document must name the
//! configured issuer, and (for an `https://` issuer) only `https://` endpoints. Until a
//! document is in force, a browser sent to sign in gets a 503 page, never a redirect.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http::header::ACCEPT;
use http_body_util::Full;
use portcullis_policy::LoginProvider;
use portcullis_policy::oauth2::login::{Discovered, MAX_DOCUMENT_BYTES};

use super::client::{Endpoint, IdpClient, IdpError};
use super::jwks::RefreshPolicy;

/// Longest a discovery or key fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait before a failed fetch is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// How often the configuration in force is looked at.
const TICK: Duration = Duration::from_millis(250);

struct Fetched {
    at: Instant,
    ok: bool,
    /// The last time the keys were fetched because a token named an unknown key.
    keys_at: Instant,
}

/// Keeps the discovery documents and keys of the configuration in force fresh. Runs forever.
/// `wanted` lists the providers of the configuration in force.
pub async fn refresh_discovery<F>(wanted: F, policy: RefreshPolicy)
where
    F: Fn() -> Vec<LoginProvider>,
{
    let client = match IdpClient::shared() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "OpenID providers cannot be discovered");
            return;
        }
    };
    let mut seen: HashMap<String, Fetched> = HashMap::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        for provider in wanted() {
            let url = provider.url.to_string();
            let (due, keys_due) = match seen.get(&url) {
                None => (true, false),
                Some(last) => {
                    let since = last.at.elapsed();
                    let due =
                        since >= policy.interval || (!last.ok && since >= RETRY_AFTER_FAILURE.min(policy.interval));
                    let keys_due =
                        provider.slot.keys.take_unknown_kid() && last.keys_at.elapsed() >= policy.min_interval;
                    (due, keys_due)
                }
            };
            if !due && !keys_due {
                continue;
            }
            let ok = match refresh(client, &provider, due).await {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(discovery_url = %url, %error,
                        "OpenID provider discovery failed; the last document and keys are kept");
                    false
                }
            };
            provider.slot.mark_tried();
            provider.slot.keys.mark_tried();
            let now = Instant::now();
            let entry = seen.entry(url).or_insert(Fetched {
                at: now,
                ok,
                keys_at: now,
            });
            if due {
                entry.at = now;
                entry.ok = ok;
            }
            entry.keys_at = now;
        }
    }
}

/// Fetches the document (when `document`, else uses the one in force) and the keys it names.
async fn refresh(client: &IdpClient, provider: &LoginProvider, document: bool) -> Result<(), IdpError> {
    let doc = match (document, provider.slot.get()) {
        (false, Some(doc)) => doc,
        _ => {
            let doc = fetch_document(client, provider).await?;
            tracing::info!(issuer = doc.issuer.as_str(), "OpenID provider discovered");
            provider.slot.store(doc);
            provider
                .slot
                .get()
                .ok_or_else(|| IdpError::Invalid(Endpoint::Discovery, "not stored".into()))?
        }
    };
    let set = super::jwks::fetch(client, &doc.jwks_uri).await?;
    tracing::info!(
        jwks_uri = doc.jwks_uri.as_str(),
        keys = set.len(),
        "OpenID provider keys loaded"
    );
    provider.slot.keys.store(set);
    Ok(())
}

async fn fetch_document(client: &IdpClient, provider: &LoginProvider) -> Result<Discovered, IdpError> {
    let endpoint = Endpoint::Discovery;
    let req = Request::get(&*provider.url)
        .header(ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| IdpError::Request(endpoint, format!("bad discovery URL ({e})")))?;
    let answer = client
        .exchange(endpoint, req, FETCH_TIMEOUT, MAX_DOCUMENT_BYTES)
        .await?;
    if !answer.status.is_success() {
        return Err(IdpError::Refused {
            endpoint,
            status: answer.status.as_u16(),
            code: None,
        });
    }
    Discovered::from_json(&answer.body, &provider.issuer, provider.https_only)
        .map_err(|e| IdpError::Invalid(endpoint, e.to_string()))
}

/// Calls the provider's token endpoint with `form`, the client authenticating with
/// `client_secret_basic`: the answer's body when it is a 2xx, else the error.
pub async fn token_call(
    token_endpoint: &str,
    client_id: &str,
    client_secret: &str,
    form: String,
) -> Result<Bytes, IdpError> {
    let endpoint = Endpoint::LoginToken;
    let client = IdpClient::shared()?;
    let basic = super::client::client_secret_basic(client_id, client_secret)
        .ok_or_else(|| IdpError::Request(endpoint, "client id or secret cannot be sent".into()))?;
    let req = Request::post(token_endpoint)
        .header(ACCEPT, "application/json")
        .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(http::header::AUTHORIZATION, basic)
        .body(Full::new(Bytes::from(form)))
        .map_err(|e| IdpError::Request(endpoint, format!("bad token endpoint ({e})")))?;
    let answer = client
        .exchange(endpoint, req, FETCH_TIMEOUT, MAX_DOCUMENT_BYTES)
        .await?;
    if !answer.status.is_success() {
        let code = serde_json::from_slice::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_graphic()));
        return Err(IdpError::Refused {
            endpoint,
            status: answer.status.as_u16(),
            code,
        });
    }
    Ok(answer.body)
}
