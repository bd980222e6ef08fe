//! Types shared by both resources: references to Secrets and the status block.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to a Secret in the same namespace as the object that names it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret, in the same namespace as this object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

impl SecretRef {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// Hash used by Mashery-style shared-secret signatures:
/// `hex(HASH(apikey + secret + unixSeconds))`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum SignatureHash {
    /// MD5, the classic Mashery signature.
    #[default]
    MD5,
    /// SHA-256.
    SHA256,
}

/// Which HTTP message signature standard is used.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum SignatureStandard {
    /// RFC 9421 (`Signature-Input` and `Signature` headers).
    #[default]
    RFC9421,
    /// draft-cavage-http-signatures-10 (a single `Signature` header).
    Cavage,
}

/// An HTTP message signature algorithm.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum SignatureAlgorithm {
    /// HMAC with SHA-256 and a shared secret.
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    #[serde(rename = "rsa-v1_5-sha256")]
    RsaV15Sha256,
    /// RSASSA-PSS with SHA-512.
    #[serde(rename = "rsa-pss-sha512")]
    RsaPssSha512,
    /// ECDSA on P-256 with SHA-256.
    #[serde(rename = "ecdsa-p256-sha256")]
    EcdsaP256Sha256,
    /// Ed25519.
    #[serde(rename = "ed25519")]
    Ed25519,
}

impl SignatureAlgorithm {
    /// The name used on the wire and in the CRD.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha256 => "hmac-sha256",
            Self::RsaV15Sha256 => "rsa-v1_5-sha256",
            Self::RsaPssSha512 => "rsa-pss-sha512",
            Self::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            Self::Ed25519 => "ed25519",
        }
    }
}
