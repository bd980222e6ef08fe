#![allow(dead_code)]

use base64::Engine as _;
use http::{HeaderMap, HeaderValue};
use portcullis_signatures::{Key, Message};

pub const RFC_CREATED: u64 = 1618884473;

pub fn key(pem: &str) -> Key {
    Key::from_pem(pem).unwrap()
}

pub fn shared_secret() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(include_str!("../keys/test-shared-secret.b64").trim())
        .unwrap()
}

/// RFC 9421's test request (`POST /foo?param=Value&Pet=dog` to example.com).
pub fn rfc_request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("example.com"));
    h.insert("date", HeaderValue::from_static("Tue, 20 Apr 2021 02:07:55 GMT"));
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert(
        "content-digest",
        HeaderValue::from_static(
            "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
        ),
    );
    h.insert("content-length", HeaderValue::from_static("18"));
    h
}

pub const RFC_BODY: &[u8] = br#"{"hello": "world"}"#;

pub fn rfc_message(headers: &HeaderMap) -> Message<'_> {
    Message {
        method: "POST",
        scheme: "https",
        authority: "example.com",
        path: "/foo",
        query: Some("param=Value&Pet=dog"),
        headers,
    }
}
