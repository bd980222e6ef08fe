//! HTTP message signatures: signing and verification, pure functions, no I/O.
//!
//! - [`rfc9421`]: HTTP Message Signatures (RFC 9421), `Signature-Input` / `Signature`.
//! - [`cavage`]: draft-cavage-http-signatures-10, `Signature` or `Authorization: Signature`.
//! - [`digest`]: `Content-Digest` (RFC 9530) and the legacy `Digest` header.
//! - [`mashery`]: Mashery-style shared-secret signatures (`hex(HASH(apikey + secret + ts))`).
//! - [`ReplayCache`]: a bounded, sharded cache of seen signatures that fails closed.
//!
//! Keys ([`Key`]) come from Secret values: HMAC secret bytes, or PEM (RSA, EC P-256, Ed25519).
//! Nothing here logs, and no error carries key material.

pub mod cavage;
mod der;
pub mod digest;
mod error;
mod key;
pub mod mashery;
mod message;
mod replay;
pub mod rfc9421;
pub mod sfv;

pub use error::Error;
pub use key::{Algorithm, Key, KeyKind};
pub use mashery::{MasheryHash, mashery_sig, mashery_verify};
pub use message::Message;
pub use replay::{ReplayCache, ReplayError};

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

impl KeyResolver for std::collections::HashMap<String, Key> {
    fn resolve(&self, key_id: &str) -> Option<&Key> {
        self.get(key_id)
    }
}

impl KeyResolver for std::collections::BTreeMap<String, Key> {
    fn resolve(&self, key_id: &str) -> Option<&Key> {
        self.get(key_id)
    }
}
