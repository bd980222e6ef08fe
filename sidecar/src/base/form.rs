//! `application/x-www-form-urlencoded` encoding, as token and introspection requests and
//! query-string credentials need it. Pure; uses nothing of the crate (the encoding is
//! [`portcullis_signatures::percent_encode`], the one OAuth 1.0a signatures use).

/// Percent-encodes everything but the RFC 3986 unreserved characters.
pub use portcullis_signatures::percent_encode as form_encode;

/// Decodes `%XX` escapes and `+` (as a space), the way form bodies and query strings are
/// read; a malformed escape stays as it is.
pub fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
