//! HTTP message signatures: signing and verification, pure functions, no I/O.
//!
//! - [`rfc9421`]: HTTP Message Signatures (RFC 9421), `Signature-Input` / `Signature`.
//! - [`cavage`]: draft-cavage-http-signatures-10, `Signature` or `Authorization: Signature`.
//! - [`digest`]: `Content-Digest` (RFC 9530) and the legacy `Digest` header.
//! - [`mashery`]: Mashery-style shared-secret signatures (`hex(HASH(apikey + secret + ts))`).
//! - [`oauth1`]: OAuth 1.0a request signatures (RFC 5849): HMAC-SHA1/SHA256, RSA-SHA1, PLAINTEXT.
//! - [`ReplayCache`]: a bounded, sharded cache of seen signatures that fails closed.
//!
//! Keys ([`Key`]) come from Secret values: HMAC secret bytes, or PEM (RSA, EC P-256, Ed25519).
//! Nothing here logs, and no error carries key material.
//!
//! ```
//! use http::{HeaderMap, HeaderValue};
//! use portcullis_signatures::rfc9421::{self, Policy, SignParams};
//! use portcullis_signatures::{Algorithm, Error, Key, Message, ReplayCache};
//!
//! # fn main() -> Result<(), Error> {
//! let key = Key::from_secret(b"a shared secret")?; // or PEM: Key::from_secret(pem_bytes)
//! let now = 1_700_000_000;
//!
//! // Signing (outbound): add the headers you cover (Date, Content-Digest) first.
//! let mut headers = HeaderMap::new();
//! headers.insert("date", HeaderValue::from_str(&portcullis_signatures::http_date(now)).unwrap());
//! let components = ["@method", "@authority", "@path", "date"];
//! let params = SignParams::new("sig1", "gw-1", Algorithm::HmacSha256, now, &components);
//! let msg = Message { method: "GET", scheme: "https", authority: "api.example.com",
//!                     path: "/orders", query: None, headers: &headers };
//! let signed = rfc9421::sign(&msg, &key, &params)?;
//! signed.apply(&mut headers)?;
//!
//! // Verifying (inbound): policy, keys by keyId, the clock, then the replay cache.
//! let msg = Message { method: "GET", scheme: "https", authority: "api.example.com",
//!                     path: "/orders", query: None, headers: &headers };
//! let policy = Policy { required_components: &["@method", "@path"],
//!                       ..Policy::new(&[Algorithm::HmacSha256], 300) };
//! let verified = rfc9421::verify(&msg, None, &("gw-1", &key), &policy, now + 2)?;
//! let replays = ReplayCache::new(100_000);
//! replays.check_and_insert(&verified.replay_key, verified.valid_until, now + 2)?;
//! assert_eq!(
//!     replays.check_and_insert(&verified.replay_key, verified.valid_until, now + 3),
//!     Err(portcullis_signatures::ReplayError::Replay)
//! );
//! # Ok(())
//! # }
//! ```

pub mod cavage;
mod der;
pub mod digest;
mod error;
mod key;
pub mod mashery;
mod message;
pub mod oauth1;
mod replay;
pub mod rfc9421;
pub mod sfv;

use std::borrow::Borrow;

pub use error::Error;
pub use key::{Algorithm, Key, KeyKind};
pub use mashery::{MasheryHash, mashery_sig, mashery_verify};
pub use message::Message;
/// Percent-encodes every byte but the RFC 3986 unreserved `ALPHA / DIGIT / - . _ ~` (upper-case
/// hex): OAuth 1.0a's encoding (RFC 5849 section 3.6), and what form bodies and query strings
/// of token requests use.
pub use oauth1::encode as percent_encode;
pub use replay::{Owner, ReplayCache, ReplayError};

/// The verifier's key lookup: keyId → key. Any `Fn(&str) -> Option<&Key>` is one.
pub trait KeyResolver {
    /// The key named `key_id`, if known.
    fn resolve(&self, key_id: &str) -> Option<&Key>;
}

/// One key under one keyId.
impl KeyResolver for (&str, &Key) {
    fn resolve(&self, key_id: &str) -> Option<&Key> {
        (self.0 == key_id).then_some(self.1)
    }
}

/// keyId → key maps, holding `Key`, `Arc<Key>` or `Box<Key>`.
impl<K: Borrow<Key>, S: std::hash::BuildHasher> KeyResolver for std::collections::HashMap<String, K, S> {
    fn resolve(&self, key_id: &str) -> Option<&Key> {
        self.get(key_id).map(Borrow::borrow)
    }
}

impl<K: Borrow<Key>> KeyResolver for std::collections::BTreeMap<String, K> {
    fn resolve(&self, key_id: &str) -> Option<&Key> {
        self.get(key_id).map(Borrow::borrow)
    }
}

/// An HTTP `Date` value (IMF-fixdate) for `unix_seconds`, e.g. for the `Date` header the
/// signer adds when a request has none.
pub fn http_date(unix_seconds: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix_seconds))
}

/// The time checks both standards share: `created` not after `now` plus the clock skew
/// allowed, not older than `max_age`, and `expires` (when signed) not reached. Returns the
/// first second at which the signature is no longer accepted (what the replay cache keeps it
/// for).
pub(crate) fn validity(
    created: u64,
    expires: Option<u64>,
    now: u64,
    max_age: u64,
    clock_skew: u64,
) -> Result<u64, Error> {
    if created > now.saturating_add(clock_skew) {
        return Err(Error::FromTheFuture { created, now });
    }
    if now > created.saturating_add(max_age) {
        return Err(Error::Stale { created, now, max_age });
    }
    if let Some(e) = expires
        && now >= e
    {
        return Err(Error::Expired { expires: e, now });
    }
    Ok(created
        .saturating_add(max_age)
        .saturating_add(1)
        .min(expires.unwrap_or(u64::MAX)))
}

/// The replay-cache key of a verified signature: SHA-256 over the keyId and the signed bytes
/// (signature base or signing string). Keyed on what was signed rather than on the signature
/// bytes, so a re-encoded or malleated signature (ECDSA `s` → `n - s`, DER vs `r || s`) is
/// still the same signature.
pub(crate) fn replay_key(key_id: &str, signed: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(key_id.as_bytes());
    ctx.update(b"\n");
    ctx.update(signed);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}
