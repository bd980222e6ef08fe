//! Ed25519 JWT access tokens (RFC 9068) and the JWK of their key, for the OAuth2 tests.

#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use portcullis_signatures::{Algorithm, Key};
use serde_json::{Value, json};

pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
/// The issuer the tests' profiles expect.
pub const ISSUER: &str = "https://idp.example.com";

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// An Ed25519 signing key with its key id.
pub struct Signer {
    pub kid: &'static str,
    key: Key,
    public: Vec<u8>,
}

impl Signer {
    pub fn new(kid: &'static str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        Self {
            kid,
            key: Key::from_pem(&pair.serialize_pem()).unwrap(),
            public: pair.public_key_raw().to_vec(),
        }
    }

    /// Its public key as a JWK.
    pub fn jwk(&self) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": self.kid,
               "x": B64.encode(&self.public)})
    }

    /// An access token carrying `claims`, signed.
    pub fn token(&self, claims: Value) -> String {
        let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": self.kid});
        let signed = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let sig = self.key.sign(Algorithm::Ed25519, signed.as_bytes()).unwrap();
        format!("{signed}.{}", B64.encode(sig))
    }
}
