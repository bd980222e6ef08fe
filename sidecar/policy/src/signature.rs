//! HttpSignature profiles: requests signed with HTTP message signatures, RFC 9421
//! (`Signature-Input` / `Signature`) or draft-cavage-http-signatures-10 (`Signature` or
//! `Authorization: Signature`), verified with [`portcullis_signatures`].
//!
//! Keys are parsed once, when the profile is compiled. A request is checked against the
//! profile's algorithms, required components and maximum age; the caller is the keyId.
//!
//! Replay protection: a signature is remembered (in a bounded [`ReplayCache`] per profile,
//! kept by the [`Limiter`](crate::Limiter) so that it outlives reloads like the rate
//! counters) until its validity window ends, and refused the second time. The engine records
//! a signature only once the call is otherwise admitted: credentials right, client inside the
//! trusted IP ranges, and the rate limits granted. So a call answered 403 or 429 does not use
//! its signature up, and the client may send the very same signed request again (after
//! `Retry-After`, while the signature is fresh). A full cache refuses (fails closed) rather
//! than forget a live signature.
//!
//! Bodies: the engine never sees one. When the verified signature covers `content-digest`
//! (RFC 9530) or `digest` (draft-cavage), the admission says so ([`BodyDigest`]) and the
//! proxy checks the digest against the body before forwarding.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use portcullis_config::{ProfileSecrets, ReplayFallback, SignatureAlgorithm, SignatureStandard};
use portcullis_signatures::{Algorithm, Error, Key, Message, Owner, ReplayCache, ReplayError, cavage, rfc9421};

use crate::RequestView;
use crate::auth::Rejection;

/// Live signatures remembered per profile unless configured otherwise
/// ([`ReplayRegistry::with_capacity`]): about 4 MB when full.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// The least room in a profile's replay cache each of its keys gets, however many keys share it.
pub const MIN_REPLAY_SHARE: usize = 256;

/// Seconds a signature's `created` may lie in the future (clock skew between signer and us).
pub const CLOCK_SKEW_SECONDS: u64 = 5;

/// The replay caches of every HttpSignature profile, by profile name: the same cache every
/// time a profile is compiled, so a reload forgets no signature.
#[derive(Debug)]
pub struct ReplayRegistry {
    capacity: usize,
    caches: Mutex<HashMap<String, Arc<ReplayCache>>>,
}

impl Default for ReplayRegistry {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_REPLAY_CAPACITY)
    }
}

impl ReplayRegistry {
    /// A registry whose caches hold about `capacity` live signatures each.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity,
            caches: Mutex::new(HashMap::new()),
        }
    }

    /// The cache of `profile`, created on first use.
    pub fn cache(&self, profile: &str) -> Arc<ReplayCache> {
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches
            .entry(profile.to_owned())
            .or_insert_with(|| Arc::new(ReplayCache::new(self.capacity)))
            .clone()
    }
}

/// Which digest header of the request the proxy must check against the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyDigest {
    /// `Content-Digest` (RFC 9530), covered by an RFC 9421 signature.
    ContentDigest,
    /// `Digest` (RFC 3230), covered by a draft-cavage signature.
    Digest,
}

impl BodyDigest {
    /// The header's name.
    pub fn header(self) -> &'static str {
        match self {
            Self::ContentDigest => "content-digest",
            Self::Digest => "digest",
        }
    }

    /// Checks the request's digest header `value` against `body`.
    pub fn verify(self, value: &str, body: &[u8]) -> Result<(), Error> {
        match self {
            Self::ContentDigest => portcullis_signatures::digest::verify_content_digest(value, body),
            Self::Digest => portcullis_signatures::digest::verify_digest_header(value, body),
        }
    }
}

/// Why an HttpSignature profile cannot be compiled (never shows key material).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signature key {key_id:?}: {reason}")]
pub struct BadKey {
    pub key_id: String,
    pub reason: String,
}

/// An HttpSignature profile, compiled.
pub struct HttpSignature {
    standard: SignatureStandard,
    algorithms: Box<[Algorithm]>,
    required: Box<[String]>,
    max_age: u64,
    keys: HashMap<String, Key>,
    guard: ReplayGuard,
}

/// How a signing profile (HttpSignature, OAuth1) keeps signatures from being used twice: its
/// replay cache, each signer's share of it, how long a signature lives, and what to do while
/// a shared store is unavailable.
#[derive(Debug)]
pub(crate) struct ReplayGuard {
    replays: Arc<ReplayCache>,
    /// Live signatures one signer may hold in `replays`: its fair share.
    share: usize,
    /// The longest a signature of the profile is valid after its creation, seconds.
    max_age: u64,
    /// With a shared store: where signatures are remembered while it is unavailable.
    store_fallback: ReplayFallback,
}

impl ReplayGuard {
    /// A guard over `replays` for `signers` signers (keys, consumers) whose signatures are
    /// valid `max_age` seconds, remembering them as `store_fallback` says while a shared store
    /// is unavailable.
    pub(crate) fn new(replays: Arc<ReplayCache>, signers: usize, max_age: u64, store_fallback: ReplayFallback) -> Self {
        let share = (replays.capacity() / signers.max(1)).max(MIN_REPLAY_SHARE);
        Self {
            replays,
            share,
            max_age,
            store_fallback,
        }
    }

    /// Where signatures are remembered while a shared store is unavailable.
    pub(crate) fn store_fallback(&self) -> ReplayFallback {
        self.store_fallback
    }

    /// Most live signatures one signer may hold.
    pub(crate) fn share(&self) -> usize {
        self.share
    }

    /// How long `signed` must be remembered from `now_secs`, seconds: until it can no
    /// longer be admitted, with the clock skew allowed and one second more (the replicas'
    /// clocks differ).
    pub(crate) fn remember_for(&self, signed: &Signed, now_secs: u64) -> u64 {
        signed.valid_until.saturating_sub(now_secs) + CLOCK_SKEW_SECONDS + 1
    }

    /// The longest [`remember_for`](Self::remember_for) gives: a signature created
    /// `CLOCK_SKEW_SECONDS` in the future and valid for the profile's longest age.
    pub(crate) fn remember_at_most(&self) -> u64 {
        self.max_age + 2 * CLOCK_SKEW_SECONDS + 2
    }

    /// Records `signed` (by signer `key_id`) as seen: refused when it was seen before inside
    /// its window, or when its signer holds its share of the cache in live signatures
    /// (another signer's room is never taken), or the cache is full.
    pub(crate) fn record(&self, signed: &Signed, key_id: &str, now_secs: u64) -> Result<(), Rejection> {
        let owner = Owner {
            key_id,
            share: self.share,
        };
        self.replays
            .check_and_insert_for(owner, &signed.replay_key, signed.valid_until, now_secs)
            .map_err(|e| match e {
                ReplayError::Replay => Rejection::Wrong("signature replayed"),
                ReplayError::Full => Rejection::Wrong("replay cache full (refused, fails closed)"),
            })
    }
}

impl std::fmt::Debug for HttpSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSignature")
            .field("standard", &self.standard)
            .field("algorithms", &self.algorithms)
            .field("required", &self.required)
            .field("max_age", &self.max_age)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// A signature that verified, waiting to be recorded in the replay cache.
#[derive(Debug)]
pub(crate) struct Signed {
    pub key_id: String,
    pub replay_key: [u8; 32],
    /// The last second it may be admitted.
    pub valid_until: u64,
    pub digest: Option<BodyDigest>,
}

impl HttpSignature {
    /// The profile with keys (keyId → HMAC secret or PEM public key) from `secrets`, parsed
    /// now, its signatures remembered in `replays` (`fallback`: where, while a shared store is
    /// unavailable). An empty `algorithms` allows every algorithm.
    pub fn new(
        standard: SignatureStandard,
        algorithms: &[SignatureAlgorithm],
        required_components: &[String],
        max_age_seconds: u32,
        secrets: &ProfileSecrets,
        replays: Arc<ReplayCache>,
        fallback: ReplayFallback,
    ) -> Result<Self, BadKey> {
        let algorithms: Box<[Algorithm]> = if algorithms.is_empty() {
            Algorithm::ALL.into()
        } else {
            algorithms.iter().map(|&a| algorithm(a)).collect()
        };
        let keys = secrets
            .signature_keys
            .iter()
            .map(|(key_id, value)| {
                Key::from_secret(value.expose().as_bytes())
                    .map(|k| (key_id.clone(), k))
                    .map_err(|e| BadKey {
                        key_id: key_id.clone(),
                        // Key errors name what is wrong, never the material.
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<HashMap<_, _>, _>>()?;
        let max_age = u64::from(max_age_seconds);
        let guard = ReplayGuard::new(replays, keys.len(), max_age, fallback);
        Ok(Self {
            standard,
            algorithms,
            required: required_components.into(),
            max_age,
            keys,
            guard,
        })
    }

    /// Its replay protection.
    pub(crate) fn guard(&self) -> &ReplayGuard {
        &self.guard
    }

    /// Verifies the request's signature at `now_secs` (not yet recorded as seen).
    pub(crate) fn check(&self, req: &RequestView<'_>, now_secs: u64) -> Result<Signed, Rejection> {
        let authority = req.authority.or(req.host).unwrap_or("");
        let msg = Message {
            method: req.method,
            scheme: if req.tls { "https" } else { "http" },
            authority,
            path: req.path,
            query: req.query,
            headers: req.headers,
        };
        let required: Vec<&str> = self.required.iter().map(String::as_str).collect();
        match self.standard {
            SignatureStandard::RFC9421 => {
                let mut policy = rfc9421::Policy::new(&self.algorithms, self.max_age);
                policy.required_components = &required;
                policy.clock_skew = CLOCK_SKEW_SECONDS;
                let v = rfc9421::verify(&msg, None, &self.keys, &policy, now_secs).map_err(rejection)?;
                let digest = v
                    .components
                    .iter()
                    .any(|c| c.to_ascii_lowercase().starts_with("\"content-digest\""))
                    .then_some(BodyDigest::ContentDigest);
                Ok(Signed {
                    key_id: v.key_id,
                    replay_key: v.replay_key,
                    valid_until: v.valid_until,
                    digest,
                })
            }
            SignatureStandard::Cavage => {
                let mut policy = cavage::Policy::new(&self.algorithms, self.max_age);
                policy.required_headers = &required;
                policy.clock_skew = CLOCK_SKEW_SECONDS;
                let v = cavage::verify(&msg, None, &self.keys, &policy, now_secs).map_err(rejection)?;
                let digest = v
                    .headers
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case("digest"))
                    .then_some(BodyDigest::Digest);
                Ok(Signed {
                    key_id: v.key_id,
                    replay_key: v.replay_key,
                    valid_until: v.valid_until,
                    digest,
                })
            }
        }
    }
}

/// The signing algorithm a configured one names (one mapping for verifying inbound calls and
/// signing outbound ones).
pub fn algorithm(a: SignatureAlgorithm) -> Algorithm {
    match a {
        SignatureAlgorithm::HmacSha256 => Algorithm::HmacSha256,
        SignatureAlgorithm::RsaV15Sha256 => Algorithm::RsaV15Sha256,
        SignatureAlgorithm::RsaPssSha512 => Algorithm::RsaPssSha512,
        SignatureAlgorithm::EcdsaP256Sha256 => Algorithm::EcdsaP256Sha256,
        SignatureAlgorithm::Ed25519 => Algorithm::Ed25519,
    }
}

/// The audit reason for a verification failure (static: never a keyId or a value).
fn rejection(e: Error) -> Rejection {
    match e {
        Error::MissingSignature(_) => Rejection::Missing("no HTTP message signature"),
        Error::Malformed { .. } => Rejection::Wrong("malformed HTTP message signature"),
        Error::MissingComponent(_) => Rejection::Wrong("a signed component is missing from the request"),
        Error::NotCovered(_) => Rejection::Wrong("signature does not cover a required component"),
        Error::UnsupportedComponent(_) => Rejection::Wrong("signature covers an unsupported component"),
        Error::AlgorithmNotAllowed(_) => Rejection::Wrong("signature algorithm not allowed"),
        Error::KeyMismatch { .. } => Rejection::Wrong("signature algorithm does not fit the key"),
        Error::UnknownKey(_) => Rejection::Wrong("unknown signature keyId"),
        Error::MissingCreated => Rejection::Wrong("signature has no creation time"),
        Error::Stale { .. } => Rejection::Wrong("signature is stale (older than maxAgeSeconds)"),
        Error::FromTheFuture { .. } => Rejection::Wrong("signature created in the future"),
        Error::Expired { .. } => Rejection::Wrong("signature expired"),
        Error::DigestMismatch(_) | Error::UnsupportedDigest(_) => Rejection::Wrong("body digest does not match"),
        Error::BadSignature => Rejection::Wrong("signature does not verify"),
        Error::Replay => Rejection::Wrong("signature replayed"),
        Error::ReplayCacheFull => Rejection::Wrong("replay cache full (refused, fails closed)"),
        _ => Rejection::Wrong("HTTP message signature refused"),
    }
}
