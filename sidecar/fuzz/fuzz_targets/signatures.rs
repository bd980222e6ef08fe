//! HTTP message signature and digest headers as a client sends them: RFC 9421
//! (`Signature-Input`, `Signature`), draft-cavage (`Signature`, `Authorization: Signature`),
//! `Content-Digest` and `Digest`. Must never panic, whatever the headers say.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_fuzz::FuzzRequest;
use portcullis_signatures::{Key, Message, cavage, digest, rfc9421};

fuzz_target!(|data: &[u8]| {
    let Some(req) = FuzzRequest::parse(data) else { return };
    let key = Key::from_secret(b"hmac secret").expect("an HMAC key");
    let keys = ("gw-1", &key);
    let msg = Message {
        method: &req.method,
        scheme: if req.tls { "https" } else { "http" },
        authority: req.host.as_deref().unwrap_or("h"),
        path: &req.path,
        query: req.query.as_deref(),
        headers: &req.headers,
    };
    let now = 1_795_000_000;
    let algorithms: &[_] = &portcullis_signatures::Algorithm::ALL;
    let _ = rfc9421::verify(&msg, None, &keys, &rfc9421::Policy::new(algorithms, 300), now);
    let _ = cavage::verify(&msg, None, &keys, &cavage::Policy::new(algorithms, 300), now);
    let body = req.query.as_deref().unwrap_or_default().as_bytes();
    for value in req.headers.get_all("content-digest") {
        let _ = digest::verify_content_digest(value.to_str().unwrap_or_default(), body);
    }
    for value in req.headers.get_all("digest") {
        let _ = digest::verify_digest_header(value.to_str().unwrap_or_default(), body);
    }
});
