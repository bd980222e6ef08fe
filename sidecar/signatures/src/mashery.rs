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
    let mut out = [0u8; 32];
    let n = digest(hash, apikey, secret, unix_seconds, &mut out);
    hex::encode(&out[..n])
}

fn digest(hash: MasheryHash, apikey: &str, secret: &str, ts: u64, out: &mut [u8; 32]) -> usize {
    let mut digits = [0u8; 20];
    let ts = decimal(ts, &mut digits);
    match hash {
        MasheryHash::Md5 => {
            let mut h = Md5::new();
            h.update(apikey.as_bytes());
            h.update(secret.as_bytes());
            h.update(ts);
            out[..16].copy_from_slice(&h.finalize());
            16
        }
        MasheryHash::Sha256 => {
            let mut h = Sha256::new();
            h.update(apikey.as_bytes());
            h.update(secret.as_bytes());
            h.update(ts);
            out.copy_from_slice(&h.finalize());
            32
        }
    }
}

/// Decimal digits of `n` in `buf`, without allocating (verification tries up to
/// `2 * skew + 1` timestamps per request).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Checks `sig` (hex, any case) against the timestamps in `[now - skew, now + skew]`, nearest
/// to `now` first, each compared in constant time. Returns the matching timestamp. (Which
/// timestamp matched is not secret, so the search stops at the first match.)
pub fn mashery_verify(hash: MasheryHash, apikey: &str, secret: &str, sig: &str, now: u64, skew: u64) -> Option<u64> {
    let mut expected = [0u8; 32];
    let len = match hash {
        MasheryHash::Md5 => 16,
        MasheryHash::Sha256 => 32,
    };
    if sig.len() != len * 2 || hex::decode_to_slice(sig, &mut expected[..len]).is_err() {
        return None;
    }
    let mut candidate = [0u8; 32];
    let mut check = |ts: u64| {
        let n = digest(hash, apikey, secret, ts, &mut candidate);
        bool::from(candidate[..n].ct_eq(&expected[..len]))
    };
    if check(now) {
        return Some(now);
    }
    for d in 1..=skew {
        if let Some(ts) = now.checked_sub(d)
            && check(ts)
        {
            return Some(ts);
        }
        if let Some(ts) = now.checked_add(d)
            && check(ts)
        {
            return Some(ts);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_digits() {
        let mut b = [0u8; 20];
        assert_eq!(decimal(0, &mut b), b"0");
        assert_eq!(decimal(1_200_603_038, &mut b), b"1200603038");
        assert_eq!(decimal(u64::MAX, &mut b), b"18446744073709551615");
    }

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
