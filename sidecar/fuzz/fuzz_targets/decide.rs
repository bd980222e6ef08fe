//! Any request through the whole decision: routing, path and host normal forms, forwarded
//! addresses, every credential parser (Basic, API key and its signature, RFC 9421 and
//! draft-cavage signatures, bearer tokens) and the Builtin token endpoint. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_fuzz::{FuzzRequest, engine};

const NOW_MS: u64 = 1_795_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Some(req) = FuzzRequest::parse(data) else { return };
    let engine = engine();
    let view = req.view();
    if let Some(endpoint) = engine.token_endpoint(&view) {
        let body = req.query.as_deref().unwrap_or_default();
        let _ = endpoint.issue(&req.headers, body, NOW_MS / 1000, NOW_MS);
    }
    let _ = engine.introspection_wanted(&view, NOW_MS);
    let _ = engine.decide(&view, NOW_MS);
});
