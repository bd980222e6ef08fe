//! Key material from Secret values and the five signature algorithms.

use std::fmt;
use std::str::FromStr;

use ring::rand::SystemRandom;
use ring::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};

use crate::Error;
use crate::der;

/// The signature algorithms, named as in the RFC 9421 registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// `hmac-sha256`: HMAC with SHA-256 and a shared secret.
    HmacSha256,
    /// `rsa-v1_5-sha256`: RSASSA-PKCS1-v1_5 with SHA-256.
    RsaV15Sha256,
    /// `rsa-pss-sha512`: RSASSA-PSS with SHA-512 (MGF1 SHA-512, salt 64 bytes).
    RsaPssSha512,
    /// `ecdsa-p256-sha256`: ECDSA on P-256 with SHA-256.
    EcdsaP256Sha256,
    /// `ed25519`: EdDSA on Curve25519.
    Ed25519,
}

impl Algorithm {
    /// Every algorithm.
    pub const ALL: [Algorithm; 5] = [
        Algorithm::HmacSha256,
        Algorithm::RsaV15Sha256,
        Algorithm::RsaPssSha512,
        Algorithm::EcdsaP256Sha256,
        Algorithm::Ed25519,
    ];

    /// The RFC 9421 name (`hmac-sha256`, `rsa-v1_5-sha256`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::RsaV15Sha256 => "rsa-v1_5-sha256",
            Algorithm::RsaPssSha512 => "rsa-pss-sha512",
            Algorithm::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            Algorithm::Ed25519 => "ed25519",
        }
    }

    /// Parses an RFC 9421 name.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The key type the algorithm needs.
    pub fn key_kind(self) -> KeyKind {
        match self {
            Algorithm::HmacSha256 => KeyKind::Hmac,
            Algorithm::RsaV15Sha256 | Algorithm::RsaPssSha512 => KeyKind::Rsa,
            Algorithm::EcdsaP256Sha256 => KeyKind::EcP256,
            Algorithm::Ed25519 => KeyKind::Ed25519,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Algorithm::from_name(s).ok_or_else(|| Error::AlgorithmNotAllowed(s.to_string()))
    }
}

/// What kind of key a [`Key`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// A shared HMAC secret.
    Hmac,
    /// An RSA key (2048 to 8192 bits).
    Rsa,
    /// An EC key on P-256.
    EcP256,
    /// An Ed25519 key.
    Ed25519,
}

/// How an ECDSA signature is encoded: RFC 9421 uses `r || s`, draft-cavage DER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EcdsaEncoding {
    Fixed,
    Asn1,
}

/// A key from a Secret value: an HMAC secret, or a PEM public or private key.
///
/// A private key also verifies (with its public half). `Debug` shows only the kind.
pub struct Key {
    inner: Inner,
}

enum Inner {
    Hmac(ring::hmac::Key),
    RsaPublic(Vec<u8>),
    RsaPrivate(Box<RsaKeyPair>),
    EcPublic(Vec<u8>),
    EcPrivate {
        fixed: Box<EcdsaKeyPair>,
        asn1: Box<EcdsaKeyPair>,
    },
    Ed25519Public([u8; 32]),
    Ed25519Private(Box<Ed25519KeyPair>),
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kind", &self.kind())
            .field("private", &self.can_sign())
            .finish_non_exhaustive()
    }
}

const MIN_RSA_BITS: usize = 2048;

impl Key {
    /// An HMAC key from the raw secret bytes (not empty).
    pub fn hmac(secret: &[u8]) -> Result<Key, Error> {
        if secret.is_empty() {
            return Err(Error::InvalidKey("empty HMAC secret"));
        }
        Ok(Key {
            inner: Inner::Hmac(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret)),
        })
    }

    /// A key from a Secret value: PEM when it holds a `-----BEGIN` block, else HMAC secret bytes.
    pub fn from_secret(value: &[u8]) -> Result<Key, Error> {
        let trimmed = value.trim_ascii();
        if trimmed.starts_with(b"-----BEGIN ") {
            let text = std::str::from_utf8(trimmed).map_err(|_| Error::InvalidKey("PEM is not UTF-8"))?;
            Key::from_pem(text)
        } else {
            Key::hmac(value)
        }
    }

    /// A key from PEM: `PUBLIC KEY` (SPKI: RSA, EC P-256, Ed25519), `RSA PUBLIC KEY` (PKCS#1),
    /// `PRIVATE KEY` (PKCS#8: RSA incl. RSASSA-PSS OID, EC P-256, Ed25519), `RSA PRIVATE KEY`
    /// (PKCS#1), `EC PRIVATE KEY` (SEC1). Encrypted keys are refused.
    pub fn from_pem(text: &str) -> Result<Key, Error> {
        let pem = der::pem(text).ok_or(Error::InvalidKey("not a PEM block"))?;
        let inner = match pem.label.as_str() {
            "PUBLIC KEY" => from_spki(&pem.der)?,
            "RSA PUBLIC KEY" => rsa_public(&pem.der)?,
            "PRIVATE KEY" => from_pkcs8(&pem.der)?,
            "RSA PRIVATE KEY" => rsa_private_pkcs1(&pem.der)?,
            "EC PRIVATE KEY" => ec_private_sec1(&pem.der)?,
            "ENCRYPTED PRIVATE KEY" => {
                return Err(Error::InvalidKey("encrypted private keys are not supported"));
            }
            _ => return Err(Error::InvalidKey("unsupported PEM label")),
        };
        Ok(Key { inner })
    }

    /// The key's kind.
    pub fn kind(&self) -> KeyKind {
        match &self.inner {
            Inner::Hmac(_) => KeyKind::Hmac,
            Inner::RsaPublic(_) | Inner::RsaPrivate(_) => KeyKind::Rsa,
            Inner::EcPublic(_) | Inner::EcPrivate { .. } => KeyKind::EcP256,
            Inner::Ed25519Public(_) | Inner::Ed25519Private(_) => KeyKind::Ed25519,
        }
    }

    /// The uncompressed public point (`04 || x || y`, 65 bytes) of an EC P-256 key, public
    /// or private: what a JWK publishes (`x`, `y`).
    pub fn ec_public_point(&self) -> Option<&[u8]> {
        match &self.inner {
            Inner::EcPublic(point) => Some(point),
            Inner::EcPrivate { fixed, .. } => Some(fixed.public_key().as_ref()),
            _ => None,
        }
    }

    /// True for HMAC secrets and private keys.
    pub fn can_sign(&self) -> bool {
        matches!(
            self.inner,
            Inner::Hmac(_) | Inner::RsaPrivate(_) | Inner::EcPrivate { .. } | Inner::Ed25519Private(_)
        )
    }

    /// True when `alg` can be used with this key.
    pub fn fits(&self, alg: Algorithm) -> bool {
        alg.key_kind() == self.kind()
    }

    /// The algorithms this key fits, in [`Algorithm::ALL`] order.
    pub fn algorithms(&self) -> impl Iterator<Item = Algorithm> + '_ {
        Algorithm::ALL.into_iter().filter(|a| self.fits(*a))
    }

    /// Signs `data` with `alg` (ECDSA as RFC 9421's fixed `r || s`).
    pub fn sign(&self, alg: Algorithm, data: &[u8]) -> Result<Vec<u8>, Error> {
        self.sign_with(alg, data, EcdsaEncoding::Fixed)
    }

    /// Verifies `signature` over `data` with `alg` (ECDSA as RFC 9421's fixed `r || s`).
    /// HMAC tags are compared in constant time.
    pub fn verify(&self, alg: Algorithm, data: &[u8], signature: &[u8]) -> Result<(), Error> {
        self.verify_with(alg, data, signature, EcdsaEncoding::Fixed)
    }

    pub(crate) fn sign_with(&self, alg: Algorithm, data: &[u8], ecdsa: EcdsaEncoding) -> Result<Vec<u8>, Error> {
        let rng = SystemRandom::new();
        match (&self.inner, alg) {
            (Inner::Hmac(k), Algorithm::HmacSha256) => Ok(ring::hmac::sign(k, data).as_ref().to_vec()),
            (Inner::RsaPrivate(k), Algorithm::RsaV15Sha256 | Algorithm::RsaPssSha512) => {
                let padding: &'static dyn sig::RsaEncoding = if alg == Algorithm::RsaPssSha512 {
                    &sig::RSA_PSS_SHA512
                } else {
                    &sig::RSA_PKCS1_SHA256
                };
                let mut out = vec![0u8; k.public().modulus_len()];
                k.sign(padding, &rng, data, &mut out)
                    .map_err(|_| Error::SigningFailed)?;
                Ok(out)
            }
            (Inner::EcPrivate { fixed, asn1 }, Algorithm::EcdsaP256Sha256) => {
                let k = if ecdsa == EcdsaEncoding::Fixed { fixed } else { asn1 };
                let s = k.sign(&rng, data).map_err(|_| Error::SigningFailed)?;
                Ok(s.as_ref().to_vec())
            }
            (Inner::Ed25519Private(k), Algorithm::Ed25519) => Ok(k.sign(data).as_ref().to_vec()),
            (_, alg) if self.fits(alg) => Err(Error::NotASigningKey),
            (_, alg) => Err(Error::KeyMismatch {
                alg: alg.name().to_string(),
                key_id: "(this key)".into(),
            }),
        }
    }

    pub(crate) fn verify_with(
        &self,
        alg: Algorithm,
        data: &[u8],
        signature: &[u8],
        ecdsa: EcdsaEncoding,
    ) -> Result<(), Error> {
        if !self.fits(alg) {
            return Err(Error::KeyMismatch {
                alg: alg.name().to_string(),
                key_id: "(this key)".into(),
            });
        }
        if let Inner::Hmac(k) = &self.inner {
            return ring::hmac::verify(k, data, signature).map_err(|_| Error::BadSignature);
        }
        let public: &[u8] = match &self.inner {
            Inner::Hmac(_) => unreachable!("handled above"),
            Inner::RsaPublic(der) => der,
            Inner::RsaPrivate(k) => k.public().as_ref(),
            Inner::EcPublic(point) => point,
            Inner::EcPrivate { fixed, .. } => fixed.public_key().as_ref(),
            Inner::Ed25519Public(k) => k,
            Inner::Ed25519Private(k) => k.public_key().as_ref(),
        };
        let verification: &'static dyn sig::VerificationAlgorithm = match (alg, ecdsa) {
            (Algorithm::RsaV15Sha256, _) => &sig::RSA_PKCS1_2048_8192_SHA256,
            (Algorithm::RsaPssSha512, _) => &sig::RSA_PSS_2048_8192_SHA512,
            (Algorithm::EcdsaP256Sha256, EcdsaEncoding::Fixed) => &sig::ECDSA_P256_SHA256_FIXED,
            (Algorithm::EcdsaP256Sha256, EcdsaEncoding::Asn1) => &sig::ECDSA_P256_SHA256_ASN1,
            (Algorithm::Ed25519, _) => &sig::ED25519,
            (Algorithm::HmacSha256, _) => unreachable!("HMAC keys handled above"),
        };
        sig::UnparsedPublicKey::new(verification, public)
            .verify(data, signature)
            .map_err(|_| Error::BadSignature)
    }
}

impl Key {
    /// RSASSA-PKCS1-v1_5 with SHA-1 (OAuth 1.0a's `RSA-SHA1`, RFC 5849 section 3.4.3): only
    /// there, never for HTTP message signatures.
    pub(crate) fn rsa_sha1_verify(&self, data: &[u8], signature: &[u8]) -> Result<(), Error> {
        let public: &[u8] = match &self.inner {
            Inner::RsaPublic(der) => der,
            Inner::RsaPrivate(k) => k.public().as_ref(),
            _ => return Err(Error::InvalidKey("RSA-SHA1 needs an RSA key")),
        };
        sig::UnparsedPublicKey::new(&sig::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, public)
            .verify(data, signature)
            .map_err(|_| Error::BadSignature)
    }
}

fn rsa_public(pkcs1: &[u8]) -> Result<Inner, Error> {
    let bits = der::rsa_public_modulus_bits(pkcs1).ok_or(Error::InvalidKey("bad RSA public key"))?;
    if bits < MIN_RSA_BITS {
        return Err(Error::InvalidKey("RSA key shorter than 2048 bits"));
    }
    if bits > 8192 {
        return Err(Error::InvalidKey("RSA key longer than 8192 bits"));
    }
    Ok(Inner::RsaPublic(pkcs1.to_vec()))
}

fn from_spki(spki: &[u8]) -> Result<Inner, Error> {
    let (alg, key) = der::spki(spki).ok_or(Error::InvalidKey("bad SubjectPublicKeyInfo"))?;
    match alg.oid {
        der::OID_RSA_ENCRYPTION | der::OID_RSASSA_PSS => rsa_public(key),
        der::OID_EC_PUBLIC_KEY => {
            if alg.param_oid != Some(der::OID_P256) {
                return Err(Error::InvalidKey("EC key not on P-256"));
            }
            if key.len() != 65 || key[0] != 4 {
                return Err(Error::InvalidKey("EC public key is not an uncompressed P-256 point"));
            }
            Ok(Inner::EcPublic(key.to_vec()))
        }
        der::OID_ED25519 => {
            let k: [u8; 32] = key
                .try_into()
                .map_err(|_| Error::InvalidKey("Ed25519 public key is not 32 bytes"))?;
            Ok(Inner::Ed25519Public(k))
        }
        _ => Err(Error::InvalidKey("unsupported public key algorithm")),
    }
}

fn from_pkcs8(pkcs8: &[u8]) -> Result<Inner, Error> {
    let (alg, key) = der::pkcs8(pkcs8).ok_or(Error::InvalidKey("bad PKCS#8 private key"))?;
    match alg.oid {
        der::OID_RSA_ENCRYPTION | der::OID_RSASSA_PSS => rsa_private_pkcs1(key),
        der::OID_EC_PUBLIC_KEY => {
            if alg.param_oid.is_some_and(|c| c != der::OID_P256) {
                return Err(Error::InvalidKey("EC key not on P-256"));
            }
            ec_private_sec1(key)
        }
        der::OID_ED25519 => {
            let seed = der::Reader(key)
                .expect(der::TAG_OCTET_STRING)
                .ok_or(Error::InvalidKey("bad Ed25519 private key"))?;
            let k =
                Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| Error::InvalidKey("bad Ed25519 private key"))?;
            Ok(Inner::Ed25519Private(Box::new(k)))
        }
        _ => Err(Error::InvalidKey("unsupported private key algorithm")),
    }
}

fn rsa_private_pkcs1(pkcs1: &[u8]) -> Result<Inner, Error> {
    let k = RsaKeyPair::from_der(pkcs1).map_err(|e| match e.to_string().as_str() {
        "TooSmall" => Error::InvalidKey("RSA key shorter than 2048 bits"),
        "TooLarge" => Error::InvalidKey("RSA key longer than 8192 bits"),
        _ => Error::InvalidKey("bad RSA private key"),
    })?;
    Ok(Inner::RsaPrivate(Box::new(k)))
}

fn ec_private_sec1(sec1: &[u8]) -> Result<Inner, Error> {
    let (private, curve, public) = der::sec1(sec1).ok_or(Error::InvalidKey("bad EC private key"))?;
    if curve.is_some_and(|c| c != der::OID_P256) {
        return Err(Error::InvalidKey("EC key not on P-256"));
    }
    let public = public.ok_or(Error::InvalidKey(
        "EC private key without its public key (re-export it with openssl ec)",
    ))?;
    let rng = SystemRandom::new();
    let make = |alg: &'static sig::EcdsaSigningAlgorithm| {
        EcdsaKeyPair::from_private_key_and_public_key(alg, private, public, &rng)
            .map(Box::new)
            .map_err(|_| Error::InvalidKey("bad EC private key"))
    };
    Ok(Inner::EcPrivate {
        fixed: make(&sig::ECDSA_P256_SHA256_FIXED_SIGNING)?,
        asn1: make(&sig::ECDSA_P256_SHA256_ASN1_SIGNING)?,
    })
}
