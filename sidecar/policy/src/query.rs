//! Query strings, read without allocating unless a value is percent-encoded.

use std::borrow::Cow;

/// The value of the first `name=value` pair of `query` (form-urlencoded), decoded.
pub fn query_param<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k).as_deref() == Some(name)).then(|| decode(v)).flatten()
    })
}

/// Whether `name` is the name of more than one pair of `query`.
pub fn repeated(query: &str, name: &str) -> bool {
    query
        .split('&')
        .filter(|pair| decode(pair.split_once('=').map_or(pair, |(k, _)| k)).as_deref() == Some(name))
        .nth(1)
        .is_some()
}

/// Percent- and `+`-decoding; `None` when the result is not UTF-8.
fn decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() && hex(bytes[i + 1]).is_some() && hex(bytes[i + 2]).is_some() => {
                out.push(hex(bytes[i + 1])? << 4 | hex(bytes[i + 2])?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_decodes() {
        assert_eq!(query_param("a=1&apikey=k1&sig=s", "apikey").as_deref(), Some("k1"));
        assert_eq!(query_param("apikey=k1&apikey=k2", "apikey").as_deref(), Some("k1"));
        assert_eq!(query_param("xapikey=k1", "apikey"), None);
        assert_eq!(query_param("apikey", "apikey").as_deref(), Some(""));
        assert_eq!(query_param("api%6Bey=a%2Bb+c", "apikey").as_deref(), Some("a+b c"));
        assert_eq!(query_param("apikey=100%", "apikey").as_deref(), Some("100%"));
        assert_eq!(query_param("apikey=%ff", "apikey"), None, "not UTF-8");
        assert!(matches!(query_param("apikey=plain", "apikey"), Some(Cow::Borrowed(_))));
        assert!(repeated("apikey=k1&apikey=k2", "apikey"));
        assert!(repeated("apikey=k1&a=1&api%6Bey", "apikey"));
        assert!(!repeated("apikey=k1&xapikey=k2", "apikey"));
        assert!(!repeated("a=1", "apikey"));
    }
}
