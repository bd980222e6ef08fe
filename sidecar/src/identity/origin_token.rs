//! OAuth 2.0 client credentials toward an origin (RFC 6749 section 4.4): the token source of
//! one route.
//!
//! - The token request is `POST tokenUrl` with `grant_type=client_credentials`, `scope`
//!   (the scopes, space-separated) and `audience` when configured, authenticated with
//!   `client_secret_basic` (RFC 6749 section 2.3.1: id and secret form-encoded, then Basic).
//! - The token is cached until shortly before it expires: `expires_in` minus 30 s or minus
//!   10 %, whichever is shorter (a 10 s token is reused for 9 s); without `expires_in`, 60 s.
//! - One fetch at a time: callers that find no valid token wait on one lock; the first one
//!   fetches, the others then find its token (or its failure, which they share instead of
//!   asking again). The whole fetch is bounded by a timeout, so nobody waits longer than
//!   about one fetch. After a failure, calls for the next second get that failure at once
//!   (503) rather than asking again: a failing endpoint is not hammered at the call rate.
//! - A configuration reload that leaves a route's token settings as they were keeps its token
//!   source, and so its token ([`TokenSource::shared`]).
//! - Tokens and the client secret are never logged; errors carry the endpoint's status and
//!   its OAuth `error` code at most.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Request, Uri};
use http_body_util::Full;
use portcullis_config::Sensitive;

use super::client::{Endpoint, IdpClient, IdpError, client_secret_basic};
use crate::base::form::form_encode;

/// Largest token response read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Longest time a token request may take, whatever the backend timeout.
const MAX_TOKEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a failed token request is answered from memory.
const FAILURE_BACKOFF: Duration = Duration::from_secs(1);
/// Lifetime assumed when the endpoint gives no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);

/// A bearer token and when to stop using it.
pub struct Token {
    header: HeaderValue,
    refresh_at: Instant,
}

impl Token {
    /// Sets `Authorization: Bearer ...`, replacing any the client sent.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(AUTHORIZATION, self.header.clone());
    }

    fn fresh(&self, now: Instant) -> bool {
        now < self.refresh_at
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("refresh_at", &self.refresh_at)
            .finish_non_exhaustive()
    }
}

struct Failure {
    at: Instant,
    error: IdpError,
}

/// The token source of one route.
pub struct TokenSource {
    route: String,
    url: Uri,
    form: Bytes,
    authorization: HeaderValue,
    timeout: Duration,
    current: RwLock<Option<Arc<Token>>>,
    /// Held while fetching: one fetch at a time. Holds the last failure, shared with the
    /// callers that waited for it.
    fetching: tokio::sync::Mutex<Option<Failure>>,
    /// Token requests sent (for tests and metrics).
    fetches: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("route", &self.route)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// What makes two token sources the same: everything they are built from.
#[derive(PartialEq, Eq, Hash)]
struct Settings {
    route: String,
    token_url: String,
    scopes: Vec<String>,
    audience: Option<String>,
    client_id: String,
    client_secret: String,
    timeout: Duration,
}

impl TokenSource {
    /// The token source of `route`: the one already in use when one was built from the same
    /// settings and is still alive (a reload keeps the token), else a new one.
    pub fn shared(
        route: &str,
        token_url: &str,
        scopes: &[String],
        audience: Option<&str>,
        client_id: &str,
        client_secret: &Sensitive,
        timeout: Duration,
    ) -> Result<Arc<Self>, String> {
        static LIVE: OnceLock<Mutex<HashMap<Settings, Weak<TokenSource>>>> = OnceLock::new();
        let settings = Settings {
            route: route.to_owned(),
            token_url: token_url.to_owned(),
            scopes: scopes.to_vec(),
            audience: audience.map(str::to_owned),
            client_id: client_id.to_owned(),
            client_secret: client_secret.expose().to_owned(),
            timeout,
        };
        let mut live = LIVE
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        live.retain(|_, w| w.strong_count() > 0);
        if let Some(source) = live.get(&settings).and_then(Weak::upgrade) {
            return Ok(source);
        }
        let source = Arc::new(Self::build(
            route,
            token_url,
            scopes,
            audience,
            client_id,
            client_secret,
            timeout,
        )?);
        live.insert(settings, Arc::downgrade(&source));
        Ok(source)
    }

    /// The token source of `route`. The error names what is wrong, never a secret.
    pub fn build(
        route: &str,
        token_url: &str,
        scopes: &[String],
        audience: Option<&str>,
        client_id: &str,
        client_secret: &Sensitive,
        timeout: Duration,
    ) -> Result<Self, String> {
        let what = "backend.origin.auth.oauth2ClientCredentials";
        let url: Uri = token_url
            .parse()
            .map_err(|e| format!("{what}: tokenUrl {token_url:?} is not a URL ({e})"))?;
        let https = match url.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{what}: tokenUrl {token_url:?} must be http:// or https://")),
        };
        let Some(host) = url.host() else {
            return Err(format!("{what}: tokenUrl {token_url:?} has no host"));
        };
        if !https && !is_loopback(host) {
            tracing::warn!(
                route,
                "oauth2ClientCredentials tokenUrl is plain http: the client secret crosses the network unencrypted"
            );
        }
        if client_id.is_empty() {
            return Err(format!("{what}: the clientId is empty"));
        }
        let mut form = String::from("grant_type=client_credentials");
        if !scopes.is_empty() {
            form.push_str("&scope=");
            form.push_str(&form_encode(&scopes.join(" ")));
        }
        if let Some(a) = audience.filter(|a| !a.is_empty()) {
            form.push_str("&audience=");
            form.push_str(&form_encode(a));
        }
        let authorization = client_secret_basic(client_id, client_secret.expose())
            .ok_or_else(|| format!("{what}: the client credentials cannot be sent in a header"))?;
        IdpClient::shared().map_err(|e| format!("{what}: {e}"))?;
        Ok(Self {
            route: route.to_owned(),
            url,
            form: Bytes::from(form),
            authorization,
            timeout: timeout.min(MAX_TOKEN_TIMEOUT),
            current: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(None),
            fetches: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Token requests sent so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A valid token other than `refused` (one the origin just refused), fetching one when
    /// needed; one fetch at a time.
    pub async fn token(&self, refused: Option<&Arc<Token>>) -> Result<Arc<Token>, IdpError> {
        let asked = Instant::now();
        if let Some(t) = self.cached(refused) {
            return Ok(t);
        }
        // Bounded: the holder's fetch is bounded by `timeout`.
        let mut last_failure = self.fetching.lock().await;
        if let Some(t) = self.cached(refused) {
            return Ok(t);
        }
        if let Some(f) = last_failure.as_ref()
            && (f.at >= asked || f.at.elapsed() < FAILURE_BACKOFF)
        {
            // The fetch we waited for (or one a moment ago) failed: share its answer rather
            // than asking again.
            return Err(f.error.clone());
        }
        self.fetches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.fetch().await {
            Ok(token) => {
                let token = Arc::new(token);
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(token.clone());
                *last_failure = None;
                Ok(token)
            }
            Err(error) => {
                tracing::warn!(route = self.route.as_str(), %error, "origin token request failed");
                *last_failure = Some(Failure {
                    at: Instant::now(),
                    error: error.clone(),
                });
                Err(error)
            }
        }
    }

    /// Forgets `token` (the origin refused it), unless another one replaced it already.
    pub fn invalidate(&self, token: &Arc<Token>) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, token)) {
            *current = None;
        }
    }

    fn cached(&self, refused: Option<&Arc<Token>>) -> Option<Arc<Token>> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        let t = current.as_ref()?;
        (t.fresh(Instant::now()) && refused.is_none_or(|r| !Arc::ptr_eq(r, t))).then(|| t.clone())
    }

    async fn fetch(&self) -> Result<Token, IdpError> {
        let endpoint = Endpoint::Token;
        let req = Request::post(self.url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .header(AUTHORIZATION, self.authorization.clone())
            .body(Full::new(self.form.clone()))
            .map_err(|e| IdpError::Request(endpoint, e.to_string()))?;
        let started = Instant::now();
        let answer = IdpClient::shared()?
            .exchange(endpoint, req, self.timeout, MAX_RESPONSE_BYTES)
            .await?;
        let (status, body) = (answer.status, answer.body);
        let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        if !status.is_success() {
            let code = json
                .as_ref()
                .and_then(|j| j.get("error"))
                .and_then(|c| c.as_str())
                .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_graphic()))
                .map(str::to_owned);
            return Err(IdpError::Refused {
                endpoint,
                status: status.as_u16(),
                code,
            });
        }
        let json = json.ok_or_else(|| IdpError::Invalid(endpoint, "not JSON".into()))?;
        let access = json
            .get("access_token")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| IdpError::Invalid(endpoint, "no access_token".into()))?;
        if let Some(kind) = json.get("token_type").and_then(|t| t.as_str())
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(IdpError::Invalid(
                endpoint,
                format!("token_type {kind:?} is not Bearer"),
            ));
        }
        let lifetime = match json.get("expires_in") {
            Some(v) => {
                let secs = v
                    .as_f64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| IdpError::Invalid(endpoint, "expires_in is not a number".into()))?;
                cache_lifetime(Duration::from_secs_f64(secs.min(10.0 * 365.0 * 86400.0)))
            }
            None => DEFAULT_LIFETIME,
        };
        let mut header = HeaderValue::from_str(&format!("Bearer {access}"))
            .map_err(|_| IdpError::Invalid(endpoint, "access_token cannot be sent in a header".into()))?;
        header.set_sensitive(true);
        tracing::debug!(
            route = self.route.as_str(),
            cached_for_ms = lifetime.as_millis() as u64,
            "origin token obtained"
        );
        Ok(Token {
            header,
            refresh_at: started + lifetime,
        })
    }
}

/// How long a token valid for `expires_in` is used: 30 s or 10 % less, whichever is less.
pub fn cache_lifetime(expires_in: Duration) -> Duration {
    expires_in.saturating_sub(Duration::from_secs(30).min(expires_in / 10))
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes() {
        assert_eq!(cache_lifetime(Duration::from_secs(3600)), Duration::from_secs(3570));
        assert_eq!(cache_lifetime(Duration::from_secs(10)), Duration::from_secs(9));
        assert_eq!(cache_lifetime(Duration::from_secs(0)), Duration::ZERO);
    }

    #[test]
    fn errors_carry_no_secret() {
        let e = IdpError::Refused {
            endpoint: Endpoint::Token,
            status: 401,
            code: Some("invalid_client".into()),
        };
        assert_eq!(e.to_string(), "token endpoint answered 401 (invalid_client)");
    }

    #[test]
    fn build_checks_the_url() {
        let timeout = Duration::from_secs(1);
        let secret = Sensitive::new("s3cret");
        let err = TokenSource::build("r", "ftp://x/token", &[], None, "id", &secret, timeout).unwrap_err();
        assert!(err.contains("http:// or https://"), "{err}");
        let ok = TokenSource::build(
            "r",
            "http://127.0.0.1:1/token",
            &["a b".into()],
            Some("api"),
            "id",
            &secret,
            timeout,
        )
        .unwrap();
        assert_eq!(ok.form, "grant_type=client_credentials&scope=a%20b&audience=api");
        assert!(!format!("{ok:?}").contains("s3cret"));
    }
}
