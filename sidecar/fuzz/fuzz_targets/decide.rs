//! Any request through the whole decision: routing, path and host normal forms, forwarded
//! addresses, every credential parser (Basic, API key and its signature, RFC 9421 and
//! draft-cavage signatures, bearer tokens) and the Builtin provider's endpoints (token,
//! revocation, authorization, grant API, introspection). Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_fuzz::{FuzzRequest, engine};
use portcullis_policy::oauth2::grants::GrantRandom;
use portcullis_policy::{CallInput, ProviderRandom};

const NOW_MS: u64 = 1_795_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Some(req) = FuzzRequest::parse(data) else { return };
    let engine = engine();
    let view = req.view();
    if let Some(endpoint) = engine.provider_endpoint(&view) {
        // The query doubles as the body (a form, or JSON for the grant API).
        let body = req.query.as_deref().unwrap_or_default();
        let input = CallInput {
            method: &req.method,
            headers: &req.headers,
            query: req.query.as_deref(),
            body,
        };
        let random = ProviderRandom {
            jti: [1; 16],
            refresh: [2; 32],
            grant: GrantRandom { id: [3; 16], code: [4; 32] },
        };
        let _ = endpoint.needs(&input);
        let _ = endpoint.serve(&input, &random, NOW_MS, NOW_MS);
    }
    let _ = engine.introspection_wanted(&view, NOW_MS);
    let _ = engine.decide(&view, NOW_MS);
});
