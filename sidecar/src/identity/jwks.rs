//! OAuth2 key sets: the keys the engine verifies bearer JWTs with.
//!
//! [`refresh_keys`] runs for the life of the process. For every `jwksUri` of the
//! configuration in force it fetches the document at once (a new URI is picked up within a
//! quarter second of a reload), then every `--jwks-refresh-interval` (5 min), and again when
//! a token names a key id the set lacks, at most once per `--jwks-min-refresh-interval`
//! (30 s). The keys go to the engine's [`KeySlot`]s, which outlive reloads. A failed fetch
//! (unreachable, not 2xx, not a key set, no usable key) keeps the last keys and is retried
//! after at most 5 s; with no keys at all, tokens are refused (401).
//!
//! It learns which key sets the configuration in force wants through a function its caller
//! passes, so it knows nothing of the shared state above it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http::header::ACCEPT;
use http_body_util::Full;
use portcullis_policy::oauth2::{JwkSet, KeySlot};

use super::client::{Endpoint, IdpClient, IdpError};

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

/// What is known about one `jwksUri`.
struct Fetched {
    /// The last attempt.
    at: Instant,
    /// It succeeded.
    ok: bool,
}

/// Keeps the key sets of the configuration in force fresh (see the module docs). Runs forever.
/// `wanted` lists the `(jwksUri, slot)` pairs of the configuration in force; it is asked
/// every quarter second.
pub async fn refresh_keys<F>(wanted: F, policy: RefreshPolicy)
where
    F: Fn() -> Vec<(String, Arc<KeySlot>)>,
{
    let client = match IdpClient::shared() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "OAuth2 key sets cannot be fetched");
            return;
        }
    };
    let mut seen: HashMap<String, Fetched> = HashMap::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let due = wanted().into_iter().filter(|(uri, slot)| {
            let Some(last) = seen.get(uri) else {
                return true;
            };
            let since = last.at.elapsed();
            let unknown = slot.take_unknown_kid();
            since >= policy.interval
                || (!last.ok && since >= RETRY_AFTER_FAILURE.min(policy.interval))
                || (unknown && since >= policy.min_interval)
        });
        let due: Vec<_> = due.collect();
        for (uri, slot) in due {
            let ok = match fetch(client, &uri).await {
                Ok(set) => {
                    tracing::info!(jwks_uri = uri.as_str(), keys = set.len(), "OAuth2 key set loaded");
                    slot.store(set);
                    true
                }
                Err(error) => {
                    tracing::warn!(
                        jwks_uri = uri.as_str(),
                        %error,
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

/// Fetches and parses the key set at `uri`: a 2xx JSON key set with at least one usable key.
pub(crate) async fn fetch(client: &IdpClient, uri: &str) -> Result<JwkSet, IdpError> {
    let endpoint = Endpoint::KeySet;
    let req = Request::get(uri)
        .header(ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| IdpError::Request(endpoint, format!("bad jwksUri ({e})")))?;
    let answer = client.exchange(endpoint, req, FETCH_TIMEOUT, MAX_JWKS_BYTES).await?;
    if !answer.status.is_success() {
        return Err(IdpError::Refused {
            endpoint,
            status: answer.status.as_u16(),
            code: None,
        });
    }
    let set = JwkSet::from_json(&answer.body).map_err(|e| IdpError::Invalid(endpoint, e.to_string()))?;
    if set.is_empty() {
        return Err(IdpError::Invalid(endpoint, "no usable key in the set".into()));
    }
    Ok(set)
}
