//! Mashery-style shared-secret signatures: `hex(HASH(apikey + secret + unixSeconds))`.

use md5::{Digest as _, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

/// The hash of a Mashery-style signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MasheryHash {
    /// MD5 (32 hex digits).
    Md5,
    /// SHA-256 (64 hex digits).
    Sha256,
}

/// `hex(HASH(apikey + secret + unix_seconds))`, lower-case hex.
pub fn mashery_sig(hash: MasheryHash, apikey: &str, secret: &str, unix_seconds: u64) -> String {
    let ts = unix_seconds.to_string();
    match hash {
        MasheryHash::Md5 => {
            let mut h = Md5::new();
            h.update(apikey.as_bytes());
            h.update(secret.as_bytes());
            h.update(ts.as_bytes());
            hex::encode(h.finalize())
        }
        MasheryHash::Sha256 => {
            let mut h = Sha256::new();
            h.update(apikey.as_bytes());
            h.update(secret.as_bytes());
            h.update(ts.as_bytes());
            hex::encode(h.finalize())
        }
    }
}

/// Checks `sig` (hex, any case) against every timestamp in `[now - skew, now + skew]`,
/// comparing in constant time. Returns the matching timestamp.
pub fn mashery_verify(hash: MasheryHash, apikey: &str, secret: &str, sig: &str, now: u64, skew: u64) -> Option<u64> {
    let expected_len = match hash {
        MasheryHash::Md5 => 32,
        MasheryHash::Sha256 => 64,
    };
    if sig.len() != expected_len {
        return None;
    }
    let sig = sig.to_ascii_lowercase();
    let mut found = None;
    for ts in now.saturating_sub(skew)..=now.saturating_add(skew) {
        let candidate = mashery_sig(hash, apikey, secret, ts);
        if bool::from(candidate.as_bytes().ct_eq(sig.as_bytes())) && found.is_none() {
            found = Some(ts);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        assert_eq!(
            mashery_sig(MasheryHash::Md5, "2fvmer3qbk7f3jnqneg58bu2", "qvxkmw57pec7", 1200603038),
            "65a08176826fa4621116997e1dd775fa"
        );
    }

    #[test]
    fn sha256_and_verify_window() {
        let s = mashery_sig(MasheryHash::Sha256, "key", "secret", 1000);
        assert_eq!(s.len(), 64);
        assert_eq!(
            mashery_verify(MasheryHash::Sha256, "key", "secret", &s, 1200, 300),
            Some(1000)
        );
        assert_eq!(
            mashery_verify(MasheryHash::Sha256, "key", "secret", &s.to_uppercase(), 700, 300),
            Some(1000)
        );
        assert_eq!(
            mashery_verify(MasheryHash::Sha256, "key", "secret", &s, 1301, 300),
            None
        );
        assert_eq!(mashery_verify(MasheryHash::Sha256, "key", "other", &s, 1000, 300), None);
        assert_eq!(mashery_verify(MasheryHash::Md5, "key", "secret", &s, 1000, 300), None);
    }
}
