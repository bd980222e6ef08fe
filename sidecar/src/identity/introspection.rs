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
//!   for one introspection call and share its answer (or its failure). The flight is
//!   forgotten when its last request is done, or dropped (a client that left): a guard, not
//!   the end of the call, removes it.
//! - A budget ([`Budget`]): at most `max_in_flight` calls at once in all, and per client
//!   address (IPv6 by /64) at most `client_in_flight` at once and `client_per_second` started
//!   per second (a token bucket as deep as one second's worth). Beyond, the call is not made:
//!   [`IntrospectError::Busy`] (the proxy answers 503) or [`IntrospectError::ClientOverBudget`]
//!   (429), both with a `Retry-After`. Requests joining a call in flight cost nothing. The
//!   clients remembered are bounded ([`MAX_CLIENTS`]).
//! - Failures (endpoint unreachable, slow, not `200`, not an RFC 7662 JSON answer) are not
//!   cached: the calls that waited for the failed call get its failure, the next call asks
//!   again. The proxy answers them `503` (fail closed) and counts
//!   `portcullis_backend_errors_total{kind="introspection"}`.
//! - Neither the token nor the client secret is ever logged or put in an error.
//!
//! [`Engine::introspection_wanted`]: portcullis_policy::Engine::introspection_wanted

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{Request, StatusCode};
use http_body_util::Full;
use portcullis_policy::IntrospectionRequest;
use portcullis_policy::ip::client_network;
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
type FlightKey = (Box<str>, TokenDigest);

/// Why a token could not be introspected.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IntrospectError {
    /// The identity provider was asked and failed.
    #[error(transparent)]
    Idp(#[from] IdpError),
    /// Too many introspection calls in progress in all: not asked.
    #[error("too many introspection calls in progress")]
    Busy,
    /// This client address used up its introspection budget: not asked.
    #[error("the client's introspection budget is used up")]
    ClientOverBudget {
        /// When to try again.
        retry_after_secs: u64,
    },
}

/// How many introspection calls may be made.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Calls in progress at once, in all.
    pub max_in_flight: usize,
    /// Calls in progress at once for one client address.
    pub client_in_flight: u32,
    /// Calls started per second for one client address (in bursts of as many).
    pub client_per_second: u32,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_in_flight: 64,
            client_in_flight: 4,
            client_per_second: 10,
        }
    }
}

/// Client addresses whose budget is remembered at most; when full, those at rest (nothing in
/// flight, bucket full) are forgotten, and if none is, a new client is refused.
pub const MAX_CLIENTS: usize = 16 * 1024;

/// Asks introspection endpoints, one call at a time per (profile, token).
pub struct Introspector {
    in_flight: Mutex<HashMap<FlightKey, Flight>>,
    calls: AtomicU64,
    timeout: Duration,
    total: tokio::sync::Semaphore,
    clients: Mutex<HashMap<IpAddr, ClientBudget>>,
    budget: Budget,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("calls", &self.calls())
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl Default for Introspector {
    fn default() -> Self {
        Self::new(TIMEOUT, Budget::default())
    }
}

impl Introspector {
    /// An introspector whose calls take at most `timeout`, within `budget`.
    pub fn new(timeout: Duration, budget: Budget) -> Self {
        let budget = Budget {
            max_in_flight: budget.max_in_flight.clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
            client_in_flight: budget.client_in_flight.max(1),
            client_per_second: budget.client_per_second.max(1),
        };
        Self {
            in_flight: Mutex::new(HashMap::new()),
            calls: AtomicU64::new(0),
            timeout,
            total: tokio::sync::Semaphore::new(budget.max_in_flight),
            clients: Mutex::new(HashMap::new()),
            budget,
        }
    }

    /// Introspection calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Tokens being introspected now (single-flight entries).
    pub fn pending(&self) -> usize {
        self.flights().len()
    }

    fn flights(&self) -> std::sync::MutexGuard<'_, HashMap<FlightKey, Flight>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes sure the engine holds an answer about `req`'s token: asks the endpoint (within
    /// the budget), unless a concurrent call for the same token answered meanwhile.
    pub async fn ensure(&self, req: IntrospectionRequest<'_, '_>) -> Result<(), IntrospectError> {
        let asked = Instant::now();
        let key: FlightKey = (req.profile.into(), req.digest());
        let flight = self.flights().entry(key.clone()).or_default().clone();
        // Forgets the flight when this request is done with it, however it ends (a client
        // that leaves drops this future mid-call).
        let guard = FlightGuard {
            introspector: self,
            key,
            flight,
        };
        self.ensure_in(&guard.flight, &req, asked).await
    }

    async fn ensure_in(
        &self,
        flight: &Flight,
        req: &IntrospectionRequest<'_, '_>,
        asked: Instant,
    ) -> Result<(), IntrospectError> {
        let mut last = flight.lock().await;
        if req.answered(unix_millis()) {
            return Ok(());
        }
        if let Some(f) = last.as_ref()
            && f.at >= asked
        {
            // The call this request waited for failed: share its answer.
            return Err(f.error.clone().into());
        }
        // A refusal for want of budget is this request's own: not recorded in the flight.
        let _total = self.total.try_acquire().map_err(|_| IntrospectError::Busy)?;
        let _client = self.client_permit(req.client_ip)?;
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
        outcome.map_err(IntrospectError::from)
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, ClientBudget>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A call for `client`, within its budget.
    fn client_permit(&self, client: IpAddr) -> Result<ClientPermit<'_>, IntrospectError> {
        let key = client_network(client);
        let now = Instant::now();
        let rate = f64::from(self.budget.client_per_second);
        let mut clients = self.clients();
        if !clients.contains_key(&key) && clients.len() >= MAX_CLIENTS {
            clients.retain(|_, c| !c.at_rest(now, rate));
            if clients.len() >= MAX_CLIENTS {
                return Err(IntrospectError::ClientOverBudget { retry_after_secs: 1 });
            }
        }
        let c = clients.entry(key).or_insert(ClientBudget {
            tokens: rate,
            refilled: now,
            in_flight: 0,
        });
        c.refill(now, rate);
        if c.in_flight >= self.budget.client_in_flight {
            return Err(IntrospectError::ClientOverBudget { retry_after_secs: 1 });
        }
        if c.tokens < 1.0 {
            let retry_after_secs = ((1.0 - c.tokens) / rate).ceil().max(1.0) as u64;
            return Err(IntrospectError::ClientOverBudget { retry_after_secs });
        }
        c.tokens -= 1.0;
        c.in_flight += 1;
        Ok(ClientPermit {
            introspector: self,
            key,
        })
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

/// Removes its flight from the map when the last request that held it is done with it.
struct FlightGuard<'a> {
    introspector: &'a Introspector,
    key: FlightKey,
    flight: Flight,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.introspector.flights();
        // The last one out (the map holds one reference, this guard another) forgets the
        // flight, and with it any failure: failures are not cached. Taking a reference
        // happens under the same lock, so the count cannot rise meanwhile.
        if map.get(&self.key).is_some_and(|f| Arc::ptr_eq(f, &self.flight)) && Arc::strong_count(&self.flight) == 2 {
            map.remove(&self.key);
        }
    }
}

/// One client address's introspection budget.
struct ClientBudget {
    /// Calls that may start now (a token bucket holding up to a second's worth).
    tokens: f64,
    refilled: Instant,
    in_flight: u32,
}

impl ClientBudget {
    fn refill(&mut self, now: Instant, rate: f64) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.refilled = now;
    }

    /// Nothing in flight and the bucket full again: forgetting it changes nothing.
    fn at_rest(&self, now: Instant, rate: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.in_flight == 0 && self.tokens + elapsed * rate >= rate
    }
}

/// A call in progress for one client address; ends it when dropped.
struct ClientPermit<'a> {
    introspector: &'a Introspector,
    key: IpAddr,
}

impl Drop for ClientPermit<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.introspector.clients().get_mut(&self.key) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
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

    #[test]
    fn a_client_budget_refills_at_its_rate() {
        let start = Instant::now();
        let mut c = ClientBudget {
            tokens: 0.0,
            refilled: start,
            in_flight: 0,
        };
        c.refill(start + Duration::from_millis(500), 10.0);
        assert!((c.tokens - 5.0).abs() < 1e-9);
        assert!(!c.at_rest(start + Duration::from_millis(900), 10.0));
        assert!(c.at_rest(start + Duration::from_millis(1000), 10.0));
        c.refill(start + Duration::from_secs(60), 10.0);
        assert!((c.tokens - 10.0).abs() < 1e-9, "at most a second's worth");
    }
}
