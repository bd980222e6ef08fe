//! OAuth 2.0 token introspection (RFC 7662) for opaque bearer tokens: the cache the engine
//! decides from, fed by the sidecar (which asks the introspection endpoint).
//!
//! - Which tokens are introspected: every bearer token of a profile that has `introspection`
//!   and no local keys (no `jwksUri`, not Builtin); with local keys too, only tokens that do
//!   not have the shape of a JWT (three dot-separated parts) — JWTs are verified locally.
//! - The engine never does I/O: [`crate::Engine::introspection_wanted`] names the token the
//!   sidecar must ask about (not in the cache), the sidecar asks and
//!   [`IntrospectionRequest::store`]s the answer, then decides as usual, which finds it here.
//! - The cache is keyed by the SHA-256 of the token (the token itself is never kept). An
//!   active token is remembered until its `exp` or for [`ACTIVE_TTL_MS`] (60 s), whichever
//!   comes first; an inactive one for [`INACTIVE_TTL_MS`] (10 s). At most
//!   [`DEFAULT_CAPACITY`] tokens per profile: when full, expired entries go first, then the
//!   ones closest to expiry. Only the claims the decision reads are kept.
//! - An active token is judged like a JWT (issuer, audience, `nbf`, `exp` when given,
//!   required scopes: 403 `insufficient_scope`); the caller is `sub`, else `client_id`, else
//!   `azp`. An inactive one: 401 "token not active".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use portcullis_config::Sensitive;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// How long an active token is trusted without asking again (at most until its `exp`).
pub const ACTIVE_TTL_MS: u64 = 60_000;
/// How long an inactive answer is remembered.
pub const INACTIVE_TTL_MS: u64 = 10_000;
/// Most tokens remembered per profile.
pub const DEFAULT_CAPACITY: usize = 4096;
/// Shortest time an answer is kept (so that the decision right after the answer finds it).
const MIN_TTL_MS: u64 = 1_000;
/// The claims kept from an introspection response: those the decision reads.
const KEPT_CLAIMS: [&str; 10] = [
    "exp",
    "nbf",
    "iss",
    "aud",
    "sub",
    "client_id",
    "azp",
    "scope",
    "scp",
    "username",
];

/// The SHA-256 of a token: what the cache is keyed by.
pub type TokenDigest = [u8; 32];

/// The digest of `token`.
pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// What the introspection endpoint said about a token.
#[derive(Debug, Clone, PartialEq)]
pub enum Introspected {
    /// `"active": true`, with the claims the decision reads.
    Active(Arc<Value>),
    /// `"active": false` (revoked, expired, unknown...).
    Inactive,
}

/// Why an introspection response cannot be used (the sidecar answers 503). Never carries the
/// token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntrospectionError {
    #[error("the introspection response is not a JSON object")]
    NotAnObject,
    #[error("the introspection response has no boolean \"active\"")]
    NoActive,
}

#[derive(Debug)]
struct Entry {
    result: Introspected,
    /// Milliseconds since the Unix epoch.
    expires_at_ms: u64,
}

/// The introspection answers of one profile, shared by every engine that uses it (kept across
/// reloads, like JWKS key slots). Bounded in size.
pub struct IntrospectionCache {
    entries: Mutex<HashMap<TokenDigest, Entry>>,
    capacity: usize,
    active_ttl_ms: u64,
    inactive_ttl_ms: u64,
}

impl std::fmt::Debug for IntrospectionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectionCache")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Default for IntrospectionCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY, ACTIVE_TTL_MS, INACTIVE_TTL_MS)
    }
}

impl IntrospectionCache {
    /// A cache of at most `capacity` tokens, active answers kept `active_ttl_ms` (at most until
    /// the token's `exp`), inactive ones `inactive_ttl_ms`.
    pub fn new(capacity: usize, active_ttl_ms: u64, inactive_ttl_ms: u64) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            active_ttl_ms,
            inactive_ttl_ms,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenDigest, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The answer remembered for the token of `digest` at `now_ms`, if still fresh.
    pub fn get(&self, digest: &TokenDigest, now_ms: u64) -> Option<Introspected> {
        let entries = self.lock();
        let e = entries.get(digest)?;
        (now_ms < e.expires_at_ms).then(|| e.result.clone())
    }

    /// How many answers are held (fresh or not yet evicted).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// No answer is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Remembers the RFC 7662 `response` about the token of `digest`, received at `now_ms`.
    pub fn store_response(
        &self,
        digest: &TokenDigest,
        response: &Value,
        now_ms: u64,
    ) -> Result<Introspected, IntrospectionError> {
        let obj = response.as_object().ok_or(IntrospectionError::NotAnObject)?;
        let active = obj
            .get("active")
            .and_then(Value::as_bool)
            .ok_or(IntrospectionError::NoActive)?;
        let (result, ttl) = if active {
            let kept: serde_json::Map<String, Value> = KEPT_CLAIMS
                .iter()
                .filter_map(|c| obj.get(*c).map(|v| ((*c).to_owned(), v.clone())))
                .collect();
            let mut ttl = self.active_ttl_ms;
            if let Some(exp) = kept.get("exp").and_then(Value::as_f64)
                && exp.is_finite()
            {
                let until_exp = (exp * 1000.0 - now_ms as f64).max(0.0) as u64;
                ttl = ttl.min(until_exp);
            }
            (Introspected::Active(Arc::new(Value::Object(kept))), ttl)
        } else {
            (Introspected::Inactive, self.inactive_ttl_ms)
        };
        self.insert(*digest, result.clone(), now_ms + ttl.max(MIN_TTL_MS), now_ms);
        Ok(result)
    }

    fn insert(&self, digest: TokenDigest, result: Introspected, expires_at_ms: u64, now_ms: u64) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&digest) {
            entries.retain(|_, e| e.expires_at_ms > now_ms);
            while entries.len() >= self.capacity {
                let Some(first) = entries.iter().min_by_key(|(_, e)| e.expires_at_ms).map(|(k, _)| *k) else {
                    break;
                };
                entries.remove(&first);
            }
        }
        entries.insert(digest, Entry { result, expires_at_ms });
    }
}

/// Introspection caches by profile and endpoint, kept across reloads.
#[derive(Debug, Default)]
pub struct IntrospectionRegistry {
    caches: Mutex<HashMap<(String, String), Arc<IntrospectionCache>>>,
}

impl IntrospectionRegistry {
    /// The cache of `profile` asking `url`, the same every time it is asked for.
    pub fn cache(&self, profile: &str, url: &str) -> Arc<IntrospectionCache> {
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches.entry((profile.to_owned(), url.to_owned())).or_default().clone()
    }
}

/// The introspection settings of one profile.
pub struct Introspection {
    pub(crate) url: Box<str>,
    pub(crate) client_id: Box<str>,
    pub(crate) client_secret: Sensitive,
    pub(crate) cache: Arc<IntrospectionCache>,
}

impl std::fmt::Debug for Introspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspection")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl Introspection {
    /// Introspection at `url` as client `client_id` / `client_secret`, answers kept in `cache`.
    pub fn new(url: &str, client_id: &str, client_secret: Sensitive, cache: Arc<IntrospectionCache>) -> Self {
        Self {
            url: url.into(),
            client_id: client_id.into(),
            client_secret,
            cache,
        }
    }
}

/// A token the sidecar must introspect before deciding ([`crate::Engine::introspection_wanted`]).
/// Its `Debug` names neither the token nor the client secret.
#[derive(Clone, Copy)]
pub struct IntrospectionRequest<'e, 'r> {
    /// The route the call matched.
    pub route: &'e str,
    /// The profile whose endpoint is asked.
    pub profile: &'e str,
    /// The client, after trusted proxies (for the audit line).
    pub client_ip: std::net::IpAddr,
    pub(crate) introspection: &'e Introspection,
    pub(crate) token: &'r str,
}

impl std::fmt::Debug for IntrospectionRequest<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectionRequest")
            .field("route", &self.route)
            .field("profile", &self.profile)
            .field("url", &self.introspection.url)
            .finish_non_exhaustive()
    }
}

impl IntrospectionRequest<'_, '_> {
    /// The introspection endpoint.
    pub fn url(&self) -> &str {
        &self.introspection.url
    }

    /// The client id the sidecar authenticates with.
    pub fn client_id(&self) -> &str {
        &self.introspection.client_id
    }

    /// The client secret the sidecar authenticates with (never to be logged).
    pub fn client_secret(&self) -> &Sensitive {
        &self.introspection.client_secret
    }

    /// The token to ask about (never to be logged).
    pub fn token(&self) -> &str {
        self.token
    }

    /// The SHA-256 of the token (to tell concurrent requests for one token apart).
    pub fn digest(&self) -> TokenDigest {
        digest(self.token)
    }

    /// Whether an answer about the token is held at `now_ms` (another request fetched it).
    pub fn answered(&self, now_ms: u64) -> bool {
        self.introspection.cache.get(&self.digest(), now_ms).is_some()
    }

    /// Remembers the endpoint's JSON `response` about the token, received at `now_ms`.
    pub fn store(&self, response: &Value, now_ms: u64) -> Result<Introspected, IntrospectionError> {
        self.introspection
            .cache
            .store_response(&self.digest(), response, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW_MS: u64 = 1_764_000_000_000;

    #[test]
    fn active_answers_expire_at_the_ttl_or_the_token_exp() {
        let cache = IntrospectionCache::default();
        let (a, b) = (digest("a"), digest("b"));
        let far = json!({"active": true, "sub": "alice", "exp": NOW_MS / 1000 + 3600});
        assert!(matches!(
            cache.store_response(&a, &far, NOW_MS),
            Ok(Introspected::Active(_))
        ));
        assert!(cache.get(&a, NOW_MS + ACTIVE_TTL_MS - 1).is_some());
        assert_eq!(cache.get(&a, NOW_MS + ACTIVE_TTL_MS), None);
        let soon = json!({"active": true, "sub": "bob", "exp": NOW_MS / 1000 + 5});
        cache.store_response(&b, &soon, NOW_MS).unwrap();
        assert!(cache.get(&b, NOW_MS + 4_999).is_some());
        assert_eq!(cache.get(&b, NOW_MS + 5_000), None);
        // No exp: the TTL alone.
        let c = digest("c");
        cache
            .store_response(&c, &json!({"active": true, "sub": "c"}), NOW_MS)
            .unwrap();
        assert!(cache.get(&c, NOW_MS + ACTIVE_TTL_MS - 1).is_some());
    }

    #[test]
    fn inactive_answers_are_kept_shorter() {
        let cache = IntrospectionCache::default();
        let d = digest("revoked");
        let r = cache.store_response(&d, &json!({"active": false}), NOW_MS).unwrap();
        assert_eq!(r, Introspected::Inactive);
        assert_eq!(
            cache.get(&d, NOW_MS + INACTIVE_TTL_MS - 1),
            Some(Introspected::Inactive)
        );
        assert_eq!(cache.get(&d, NOW_MS + INACTIVE_TTL_MS), None);
    }

    #[test]
    fn junk_is_refused_and_not_cached() {
        let cache = IntrospectionCache::default();
        let d = digest("t");
        assert_eq!(
            cache.store_response(&d, &json!(["active"]), NOW_MS),
            Err(IntrospectionError::NotAnObject)
        );
        assert_eq!(
            cache.store_response(&d, &json!({"active": "true"}), NOW_MS),
            Err(IntrospectionError::NoActive)
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn only_the_claims_read_are_kept() {
        let cache = IntrospectionCache::default();
        let d = digest("t");
        let big = json!({"active": true, "sub": "s", "scope": "read", "blob": "x".repeat(10_000)});
        let Introspected::Active(claims) = cache.store_response(&d, &big, NOW_MS).unwrap() else {
            panic!()
        };
        assert_eq!(*claims, json!({"sub": "s", "scope": "read"}));
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = IntrospectionCache::new(8, ACTIVE_TTL_MS, INACTIVE_TTL_MS);
        for i in 0..100u64 {
            let d = digest(&format!("token-{i}"));
            // Later tokens expire later: the oldest go first.
            let r = json!({"active": true, "sub": "s", "exp": NOW_MS / 1000 + 10 + i});
            cache.store_response(&d, &r, NOW_MS).unwrap();
            assert!(cache.len() <= 8);
        }
        assert!(cache.get(&digest("token-99"), NOW_MS).is_some());
        assert_eq!(cache.get(&digest("token-0"), NOW_MS), None);
        // Expired entries are dropped first.
        let later = NOW_MS + 200_000;
        cache
            .store_response(&digest("new"), &json!({"active": false}), later)
            .unwrap();
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn the_token_is_never_stored_nor_printed() {
        let cache = Arc::new(IntrospectionCache::default());
        let token = "opaque-token-value-123";
        cache
            .store_response(&digest(token), &json!({"active": true, "sub": "s"}), NOW_MS)
            .unwrap();
        assert!(!format!("{cache:?}").contains(token));
        let i = Introspection::new(
            "https://idp/introspect",
            "client",
            Sensitive::new("s3cret-value"),
            cache,
        );
        let req = IntrospectionRequest {
            route: "r",
            profile: "p",
            client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            introspection: &i,
            token,
        };
        let printed = format!("{i:?} {req:?}");
        assert!(
            !printed.contains("s3cret-value") && !printed.contains(token),
            "{printed}"
        );
        assert!(printed.contains("https://idp/introspect"));
    }

    #[test]
    fn caches_outlive_reloads_by_profile_and_url() {
        let r = IntrospectionRegistry::default();
        assert!(Arc::ptr_eq(&r.cache("p", "u"), &r.cache("p", "u")));
        assert!(!Arc::ptr_eq(&r.cache("p", "u"), &r.cache("p", "v")));
        assert!(!Arc::ptr_eq(&r.cache("p", "u"), &r.cache("q", "u")));
    }
}
