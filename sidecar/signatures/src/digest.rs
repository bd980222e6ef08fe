//! Body digests: `Content-Digest` (RFC 9530: `sha-256=:b64:, sha-512=:b64:`) and the legacy
//! `Digest` header of draft-cavage (`SHA-256=b64`).

use base64::Engine as _;
use ring::digest;

use crate::Error;
use crate::sfv::{self, BareItem, Item, Member};

/// A digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl DigestAlgorithm {
    fn ring(self) -> &'static digest::Algorithm {
        match self {
            DigestAlgorithm::Sha256 => &digest::SHA256,
            DigestAlgorithm::Sha512 => &digest::SHA512,
        }
    }

    /// The RFC 9530 key (`sha-256`).
    pub fn content_digest_key(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256 => "sha-256",
            DigestAlgorithm::Sha512 => "sha-512",
        }
    }

    /// The legacy `Digest` name (`SHA-256`).
    pub fn digest_name(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256 => "SHA-256",
            DigestAlgorithm::Sha512 => "SHA-512",
        }
    }

    fn from_key(k: &str) -> Option<DigestAlgorithm> {
        match k.to_ascii_lowercase().as_str() {
            "sha-256" => Some(DigestAlgorithm::Sha256),
            "sha-512" => Some(DigestAlgorithm::Sha512),
            _ => None,
        }
    }
}

fn compute(alg: DigestAlgorithm, body: &[u8]) -> Vec<u8> {
    digest::digest(alg.ring(), body).as_ref().to_vec()
}

/// The `Content-Digest` value for `body`: `sha-256=:...:`.
pub fn content_digest(alg: DigestAlgorithm, body: &[u8]) -> String {
    let mut out = String::new();
    sfv::write_dictionary(
        &mut out,
        &vec![(
            alg.content_digest_key().to_string(),
            Member::Item(Item {
                bare: BareItem::ByteSeq(compute(alg, body)),
                params: Vec::new(),
            }),
        )],
    );
    out
}

/// Checks a `Content-Digest` value against `body`: every sha-256 / sha-512 member must match
/// (others are ignored), and at least one must be present.
pub fn verify_content_digest(value: &str, body: &[u8]) -> Result<(), Error> {
    let dict = sfv::parse_dictionary(value).map_err(|e| Error::malformed("Content-Digest", e))?;
    let mut checked = false;
    for (k, m) in &dict {
        let Some(alg) = DigestAlgorithm::from_key(k) else {
            continue;
        };
        let Member::Item(Item {
            bare: BareItem::ByteSeq(expected),
            ..
        }) = m
        else {
            return Err(Error::malformed(
                "Content-Digest",
                format!("{k} is not a byte sequence"),
            ));
        };
        if !ring_eq(&compute(alg, body), expected) {
            return Err(Error::DigestMismatch("Content-Digest"));
        }
        checked = true;
    }
    if checked {
        Ok(())
    } else {
        Err(Error::UnsupportedDigest("Content-Digest"))
    }
}

/// The legacy `Digest` value for `body`: `SHA-256=...`.
pub fn digest_header(alg: DigestAlgorithm, body: &[u8]) -> String {
    format!(
        "{}={}",
        alg.digest_name(),
        base64::engine::general_purpose::STANDARD.encode(compute(alg, body))
    )
}

/// Checks a legacy `Digest` value (`SHA-256=b64[, SHA-512=b64]`): every SHA-256 / SHA-512
/// instance must match, at least one must be present.
pub fn verify_digest_header(value: &str, body: &[u8]) -> Result<(), Error> {
    let mut checked = false;
    for part in value.split(',') {
        let part = part.trim();
        let Some((name, b64)) = part.split_once('=') else {
            return Err(Error::malformed("Digest", "expected ALG=base64"));
        };
        let Some(alg) = DigestAlgorithm::from_key(name.trim()) else {
            continue;
        };
        let expected = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| Error::malformed("Digest", "bad base64"))?;
        if !ring_eq(&compute(alg, body), &expected) {
            return Err(Error::DigestMismatch("Digest"));
        }
        checked = true;
    }
    if checked {
        Ok(())
    } else {
        Err(Error::UnsupportedDigest("Digest"))
    }
}

fn ring_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9530_examples() {
        // RFC 9421's test request body; its Content-Digest is given in the RFC.
        let body = br#"{"hello": "world"}"#;
        assert_eq!(
            content_digest(DigestAlgorithm::Sha512, body),
            "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"
        );
        assert_eq!(
            content_digest(DigestAlgorithm::Sha256, body),
            "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
        );
        verify_content_digest(&content_digest(DigestAlgorithm::Sha256, body), body).unwrap();
        let both = format!(
            "{}, {}, md5=:AAAA:",
            content_digest(DigestAlgorithm::Sha256, body),
            content_digest(DigestAlgorithm::Sha512, body)
        );
        verify_content_digest(&both, body).unwrap();
        assert_eq!(
            verify_content_digest(&both, b"{}"),
            Err(Error::DigestMismatch("Content-Digest"))
        );
        assert_eq!(
            verify_content_digest("md5=:AAAA:", body),
            Err(Error::UnsupportedDigest("Content-Digest"))
        );
    }

    #[test]
    fn legacy_digest() {
        let body = br#"{"hello": "world"}"#;
        let v = digest_header(DigestAlgorithm::Sha256, body);
        assert_eq!(v, "SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=");
        verify_digest_header(&v, body).unwrap();
        assert_eq!(verify_digest_header(&v, b"x"), Err(Error::DigestMismatch("Digest")));
    }
}
