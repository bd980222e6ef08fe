//! Numbers as header values (`RateLimit-*`, `Retry-After`), made without the two copies
//! `HeaderValue::from(u64)` makes, and a configuration's limits made once when it is compiled.

use http::HeaderValue;

/// A configuration's limits (its profiles' `rateLimitPerMinute` and quotas) as header values,
/// made once when it is compiled: each answer under a limit shares its `RateLimit-Limit`
/// value instead of formatting and copying it.
#[derive(Debug, Default)]
pub struct LimitValues(Box<[(u32, HeaderValue)]>);

impl LimitValues {
    pub fn new(limits: impl IntoIterator<Item = u32>) -> Self {
        let mut limits: Vec<u32> = limits.into_iter().collect();
        limits.sort_unstable();
        limits.dedup();
        Self(limits.into_iter().map(|n| (n, number_value(n.into()))).collect())
    }

    /// `n` as a header value: the configuration's own, else made now.
    pub fn value(&self, n: u32) -> HeaderValue {
        match self.0.binary_search_by_key(&n, |(limit, _)| *limit) {
            Ok(at) => self.0[at].1.clone(),
            Err(_) => number_value(n.into()),
        }
    }
}

/// `n` as a header value: below 100 (a reset in seconds, mostly) a static string, nothing
/// allocated; else formatted on the stack and copied once (`From<u64>` allocates twice).
pub fn number_value(n: u64) -> HeaderValue {
    const PAIRS: &str = "00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";
    match n {
        0..10 => HeaderValue::from_static(&PAIRS[2 * n as usize + 1..2 * n as usize + 2]),
        10..100 => HeaderValue::from_static(&PAIRS[2 * n as usize..2 * n as usize + 2]),
        _ => {
            let mut text = [0u8; 20];
            let mut at = text.len();
            let mut left = n;
            while left > 0 {
                at -= 1;
                text[at] = b'0' + (left % 10) as u8;
                left /= 10;
            }
            HeaderValue::from_bytes(&text[at..]).unwrap_or(HeaderValue::from_static("0"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_header_values() {
        for n in [
            0,
            7,
            10,
            42,
            99,
            100,
            59_999,
            100_000_000,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            assert_eq!(number_value(n).to_str().unwrap(), n.to_string(), "{n}");
        }
    }

    #[test]
    fn configured_limits_are_shared_and_others_made() {
        let limits = LimitValues::new([100_000_000, 60, 5_000, 60]);
        assert_eq!(limits.0.len(), 3);
        for n in [100_000_000, 60, 5_000, 7, 61, 0, u32::MAX] {
            let value = limits.value(n);
            assert_eq!(value.to_str().unwrap(), n.to_string(), "{n}");
            // A configured limit's value is the configuration's own bytes, not a new copy.
            let configured = limits
                .0
                .iter()
                .find(|(l, _)| *l == n)
                .map(|(_, v)| v.as_bytes().as_ptr());
            assert_eq!(configured.is_some(), [100_000_000, 60, 5_000].contains(&n), "{n}");
            if let Some(ptr) = configured {
                assert_eq!(value.as_bytes().as_ptr(), ptr, "{n}");
            }
        }
        assert_eq!(LimitValues::default().value(5_000), "5000");
    }
}
