//! OAuth 2.0 token introspection (RFC 7662) at the edge: the I/O half of the engine's
//! introspection cache ([`portcullis_policy::oauth2::introspection`]).
//!
//! - Before deciding, the proxy asks [`Engine::introspection_wanted`]; when it names a token,
//!   [`Introspector::ensure`] asks the profile's endpoint: `POST url` with
//!   `token=<token>&token_type_hint=access_token` (form-urlencoded), authenticated with
//!   `client_secret_basic` (RFC 6749 section 2.3.1: id and secret form-encoded, then Basic),
//!   within [`TIMEOUT`] (5 s). The answer goes to the engine's cache; the decision that follows
//!   judges it.
//! - Single flight: concurrent requests carrying the same new token for the same profile wait
//!   for one introspection call and share its answer (or its failure).
//! - Failures (endpoint unreachable, slow, not `200`, not an RFC 7662 JSON answer) are not
//!   cached: the calls that waited for the failed call get its failure, the next call asks
//!   again. The proxy answers them `503` (fail closed) and counts
//!   `portcullis_backend_errors_total{kind="introspection"}`.
//! - Neither the token nor the client secret is ever logged or put in an error.
//!
//! [`Engine::introspection_wanted`]: portcullis_policy::Engine::introspection_wanted

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{Request, StatusCode};
use http_body_util::Full;
use portcullis_policy::IntrospectionRequest;
use portcullis_policy::oauth2::introspection::TokenDigest;

use super::client::{Endpoint, IdpClient, IdpError, client_secret_basic};
use crate::base::clock::unix_millis;
use crate::base::form::form_encode;

/// Longest an introspection call may take, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest introspection answer read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

struct Failure {
    at: Instant,
    error: IdpError,
}

type Flight = Arc<tokio::sync::Mutex<Option<Failure>>>;

/// Asks introspection endpoints, one call at a time per (profile, token).
pub struct Introspector {
    in_flight: Mutex<HashMap<(Box<str>, TokenDigest), Flight>>,
    calls: AtomicU64,
    timeout: Duration,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

impl Default for Introspector {
    fn default() -> Self {
        Self::new(TIMEOUT)
    }
}

impl Introspector {
    /// An introspector whose calls take at most `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            in_flight: Mutex::new(HashMap::new()),
            calls: AtomicU64::new(0),
            timeout,
        }
    }

    /// Introspection calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Makes sure the engine holds an answer about `req`'s token: asks the endpoint, unless a
    /// concurrent call for the same token answered meanwhile.
    pub async fn ensure(&self, req: IntrospectionRequest<'_, '_>) -> Result<(), IdpError> {
        let asked = Instant::now();
        let key: (Box<str>, TokenDigest) = (req.profile.into(), req.digest());
        let flight = {
            let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        let result = self.ensure_in(&flight, &req, asked).await;
        {
            let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            // The last one out (the map holds one reference, this call another) forgets the
            // flight, and with it any failure: failures are not cached.
            if map.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) && Arc::strong_count(&flight) == 2 {
                map.remove(&key);
            }
        }
        result
    }

    async fn ensure_in(
        &self,
        flight: &Flight,
        req: &IntrospectionRequest<'_, '_>,
        asked: Instant,
    ) -> Result<(), IdpError> {
        let mut last = flight.lock().await;
        if req.answered(unix_millis()) {
            return Ok(());
        }
        if let Some(f) = last.as_ref()
            && f.at >= asked
        {
            // The call this request waited for failed: share its answer.
            return Err(f.error.clone());
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let outcome = match self.call(req).await {
            Ok(answer) => req
                .store(&answer, unix_millis())
                .map(|_| ())
                .map_err(|e| IdpError::Invalid(Endpoint::Introspection, e.to_string())),
            Err(e) => Err(e),
        };
        match &outcome {
            Ok(()) => *last = None,
            Err(error) => {
                *last = Some(Failure {
                    at: Instant::now(),
                    error: error.clone(),
                })
            }
        }
        outcome
    }

    async fn call(&self, req: &IntrospectionRequest<'_, '_>) -> Result<serde_json::Value, IdpError> {
        let endpoint = Endpoint::Introspection;
        let client = IdpClient::shared()?;
        let authorization = client_secret_basic(req.client_id(), req.client_secret().expose())
            .ok_or_else(|| IdpError::Request(endpoint, "the client credentials cannot be sent in a header".into()))?;
        let form = format!("token={}&token_type_hint=access_token", form_encode(req.token()));
        let request = Request::post(req.url())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .header(AUTHORIZATION, authorization)
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| IdpError::Request(endpoint, e.to_string()))?;
        let answer = client
            .exchange(endpoint, request, self.timeout, MAX_RESPONSE_BYTES)
            .await?;
        if answer.status != StatusCode::OK {
            return Err(IdpError::Refused {
                endpoint,
                status: answer.status.as_u16(),
                code: None,
            });
        }
        serde_json::from_slice(&answer.body).map_err(|_| IdpError::Invalid(endpoint, "not JSON".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_name_no_secret() {
        let refused = IdpError::Refused {
            endpoint: Endpoint::Introspection,
            status: 401,
            code: None,
        };
        assert_eq!(refused.to_string(), "introspection endpoint answered 401");
        assert!(format!("{:?}", Introspector::default()).contains("calls"));
    }
}
