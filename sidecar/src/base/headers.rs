//! Header hygiene between the client and the app: hop-by-hop headers removed, forwarding
//! headers set, and the `X-Portcullis-*` headers only ever written by the sidecar.

use std::net::IpAddr;

use bytes::Bytes;
use http::HeaderMap;
use http::header::{CONNECTION, HeaderName, HeaderValue, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};

/// Prefix of the headers that carry the sidecar's verdict to the app.
pub const PORTCULLIS_PREFIX: &str = "x-portcullis-";
/// The identity that was admitted (`anonymous`, the Basic user, the API key, ...).
pub const IDENTITY: HeaderName = HeaderName::from_static("x-portcullis-identity");
/// The profile that admitted the call.
pub const PROFILE: HeaderName = HeaderName::from_static("x-portcullis-profile");
/// The route that matched.
pub const ROUTE: HeaderName = HeaderName::from_static("x-portcullis-route");

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Removes the headers that describe one connection rather than the message (RFC 9110
/// section 7.6.1): `Connection` and every header it names, `Keep-Alive`, `TE`, `Trailer`,
/// `Transfer-Encoding`, `Upgrade` and every `Proxy-*`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names first: most messages carry none of these.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let hop: Vec<HeaderName> = headers.keys().filter(|k| is_hop_by_hop(k)).cloned().collect();
    for name in hop {
        headers.remove(name);
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    [CONNECTION, KEEP_ALIVE, TE, TRAILER, TRANSFER_ENCODING, UPGRADE].contains(name)
        || name.as_str().starts_with("proxy-")
}

/// Removes every `X-Portcullis-*` header: only the sidecar may set them.
pub fn remove_portcullis(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(PORTCULLIS_PREFIX))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// Appends `peer` to `X-Forwarded-For` (joining earlier values into one line) and sets
/// `X-Forwarded-Proto`.
pub fn set_forwarded(headers: &mut HeaderMap, peer: IpAddr, proto: &'static str) {
    let mut chain = Vec::with_capacity(48);
    for value in headers.get_all(&X_FORWARDED_FOR) {
        let value = value.as_bytes().trim_ascii();
        if !value.is_empty() {
            chain.extend_from_slice(value);
            chain.extend_from_slice(b", ");
        }
    }
    push_ip(&mut chain, peer);
    // Earlier values (valid header values) and an address: cannot fail.
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(chain)) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
}

/// Appends `ip` in its usual text form (IPv4 without going through `fmt`).
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// Sets one verdict header; a value that is not a valid header value is left out (and
/// reported as `false`).
pub fn set_verdict(headers: &mut HeaderMap, name: HeaderName, value: &str) -> bool {
    match HeaderValue::from_str(value) {
        Ok(v) => {
            headers.insert(name, v);
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn spoofed_verdict_headers_go() {
        let mut h = map(&[
            ("x-portcullis-identity", "admin"),
            ("X-Portcullis-Other", "1"),
            ("x-kept", "y"),
        ]);
        remove_portcullis(&mut h);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = map(&[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2")]);
        set_forwarded(&mut h, "10.0.0.1".parse().unwrap(), "http");
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, "::1".parse().unwrap(), "https");
        assert_eq!(h["x-forwarded-for"], "::1");
        let mut h = map(&[("x-forwarded-for", " "), ("x-forwarded-for", "9.9.9.9 ")]);
        set_forwarded(&mut h, "192.168.0.1".parse().unwrap(), "http");
        assert_eq!(h["x-forwarded-for"], "9.9.9.9, 192.168.0.1");
    }

    #[test]
    fn addresses_print_as_std_does() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.99.100.255",
            "127.0.0.1",
            "2001:db8::1",
            "::ffff:1.2.3.4",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
    }

    #[test]
    fn clean_messages_are_left_alone() {
        let mut h = map(&[("host", "a"), ("accept", "*/*"), ("x-proxy-like", "kept")]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 3);
    }
}
