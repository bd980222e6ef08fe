//! The one error type. Messages name what failed, never any key or secret material.

/// Why signing or verification failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request carries no signature of the expected kind.
    #[error("no {0} header in the request")]
    MissingSignature(&'static str),
    /// A signature header (or a parameter in it) could not be parsed.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// Which header or parameter.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// A component the signature covers (or the signer was asked to cover) is absent.
    #[error("component {0} is missing from the request")]
    MissingComponent(String),
    /// The policy requires a component that the signature does not cover.
    #[error("required component {0} is not covered by the signature")]
    NotCovered(String),
    /// The component identifier is not one this implementation supports.
    #[error("unsupported component {0}")]
    UnsupportedComponent(String),
    /// The algorithm is unknown or not allowed by the policy.
    #[error("algorithm {0} is not allowed")]
    AlgorithmNotAllowed(String),
    /// The algorithm does not fit the key's type.
    #[error("algorithm {alg} does not fit the key of keyId {key_id}")]
    KeyMismatch {
        /// The algorithm named or implied.
        alg: String,
        /// The key's id.
        key_id: String,
    },
    /// The keyId is not known to the verifier.
    #[error("unknown keyId {0}")]
    UnknownKey(String),
    /// The signature carries no creation time (`created`, or a covered `date`).
    #[error("signature has no creation time (created parameter or covered date)")]
    MissingCreated,
    /// The signature is older than the maximum age.
    #[error("signature is stale: created {created}, now {now}, max age {max_age}s")]
    Stale {
        /// Creation time, Unix seconds.
        created: u64,
        /// Verifier's clock, Unix seconds.
        now: u64,
        /// Policy's maximum age, seconds.
        max_age: u64,
    },
    /// The signature claims to be created in the future (beyond the allowed skew).
    #[error("signature created in the future: created {created}, now {now}")]
    FromTheFuture {
        /// Creation time, Unix seconds.
        created: u64,
        /// Verifier's clock, Unix seconds.
        now: u64,
    },
    /// The signature's `expires` time has passed.
    #[error("signature expired at {expires}, now {now}")]
    Expired {
        /// Expiry time, Unix seconds.
        expires: u64,
        /// Verifier's clock, Unix seconds.
        now: u64,
    },
    /// The body does not match its `Content-Digest` / `Digest` header.
    #[error("{0} does not match the body")]
    DigestMismatch(&'static str),
    /// The digest header names no supported algorithm.
    #[error("{0} names no supported digest algorithm (sha-256, sha-512)")]
    UnsupportedDigest(&'static str),
    /// The signature value does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The key material could not be parsed or is not acceptable.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// The key is a public key: it can verify but not sign.
    #[error("key cannot sign (public key)")]
    NotASigningKey,
    /// The signer's inputs are invalid (label, keyid, ...).
    #[error("invalid signing parameters: {0}")]
    InvalidParams(String),
    /// The cryptographic library refused to sign.
    #[error("signing failed")]
    SigningFailed,
    /// This signature was already seen inside its validity window.
    #[error("signature replayed")]
    Replay,
    /// The replay cache is full of live entries: refused (fails closed).
    #[error("replay cache full")]
    ReplayCacheFull,
}

impl Error {
    pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Malformed {
            what,
            detail: detail.into(),
        }
    }
}
