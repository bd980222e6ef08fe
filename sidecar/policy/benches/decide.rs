//! Time per decision on the hot path: route match among 50 routes, client IP behind a
//! trusted proxy, 1,000 trusted ranges, an API key with its Mashery signature, and both the
//! org allowance and the profile limit taken.
//!
//! `cargo bench -p portcullis-policy --bench decide`

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use portcullis_config::{Loaded, SecretMaterial, SidecarConfig};
use portcullis_policy::{Engine, InMemoryLimiter, Listener, Outcome, RequestView};
use portcullis_signatures::{Algorithm, Key, Message, rfc9421};
use portcullis_signatures::{MasheryHash, mashery_sig};
use serde_json::json;

const KEY: &str = "2fvmer3qbk7f3jnqneg58bu2";
const SECRET: &str = "qvxkmw57pec7";

fn engine() -> Engine {
    let ranges: Vec<_> = (0..1000u32)
        .map(|i| {
            let base = 0x0a00_0000 + i * 256;
            json!({"from": IpAddr::from(base.to_be_bytes()), "to": IpAddr::from((base + 200).to_be_bytes())})
        })
        .collect();
    let mut routes: Vec<_> = (0..49)
        .map(|i| {
            json!({"name": format!("r{i:02}"), "pathPrefix": format!("/svc{i}"), "profiles": ["partners"],
            "backend": {"type": "Local", "port": 8080}})
        })
        .collect();
    routes.push(
        json!({"name": "catalog", "hosts": ["api.example.com"], "pathPrefix": "/catalog",
        "profiles": ["partners"], "backend": {"type": "Local", "port": 8080}}),
    );
    let config = json!({
        "schemaVersion": 1, "generation": "g", "namespace": "bench",
        "orgAllowance": u32::MAX, "trustedProxies": ["192.168.0.0/16"],
        "profiles": [{"name": "partners", "auth": {"type": "ApiKey", "keyParam": "apikey",
            "signature": {"param": "sig", "algorithm": "MD5", "clockSkewSeconds": 300}},
            "trustedIpRanges": ranges, "rateLimitPerMinute": u32::MAX}],
        "routes": routes,
    });
    let mut keys = serde_json::Map::new();
    for i in 0..1000 {
        keys.insert(format!("key{i:05}"), json!("s"));
    }
    keys.insert(KEY.into(), json!(SECRET));
    let secrets = json!({"schemaVersion": 1, "generation": "g", "profiles": {"partners": {"apiKeys": keys}}});
    let loaded = Loaded {
        config: serde_json::from_value::<SidecarConfig>(config).unwrap(),
        secrets: serde_json::from_value::<SecretMaterial>(secrets).unwrap(),
    };
    Engine::compile(&loaded, Arc::new(InMemoryLimiter::new())).unwrap()
}

fn bench(c: &mut Criterion) {
    let engine = engine();
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    // A client whose clock is 2 s behind: three hashes.
    let sig = mashery_sig(MasheryHash::Md5, KEY, SECRET, now_ms / 1000 - 2);
    let query = format!("apikey={KEY}&sig={sig}&page=2");
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", "10.0.77.100".parse().unwrap());
    let req = RequestView {
        method: "GET",
        host: Some("api.example.com"),
        authority: Some("api.example.com"),
        path: "/catalog/items/42",
        query: Some(&query),
        headers: &headers,
        peer: "192.168.3.4".parse().unwrap(),
        tls: false,
        listener: Listener::Inbound,
        client_cert: None,
        form: None,
    };
    assert!(matches!(engine.decide(&req, now_ms), Outcome::Allow(_)));
    c.bench_function(
        "decide: route + xff + 1000 ranges + apikey md5 sig + org and profile limits",
        |b| {
            b.iter(|| {
                let outcome = engine.decide(black_box(&req), now_ms);
                assert!(matches!(outcome, Outcome::Allow(_)));
            })
        },
    );
    let anonymous = RequestView {
        query: None,
        path: "/svc48/x",
        ..req
    };
    c.bench_function("decide: no route", |b| {
        b.iter(|| {
            engine.decide(
                black_box(&RequestView {
                    path: "/nowhere",
                    ..anonymous
                }),
                now_ms,
            )
        })
    });
}

/// An HttpSignature (RFC 9421, hmac-sha256) profile among 1,000 keys.
fn signing_engine() -> Engine {
    let config = json!({
        "schemaVersion": 1, "generation": "g", "namespace": "bench",
        "profiles": [{"name": "signed", "auth": {"type": "HttpSignature", "standard": "RFC9421",
            "algorithms": ["hmac-sha256"], "requiredComponents": ["@method", "@path"], "maxAgeSeconds": 300}}],
        "routes": [{"name": "orders", "hosts": ["api.example.com"], "pathPrefix": "/orders",
            "profiles": ["signed"], "backend": {"type": "Local", "port": 8080}}],
    });
    let mut keys = serde_json::Map::new();
    for i in 0..1000 {
        keys.insert(format!("gw-{i:04}"), json!(format!("secret number {i}")));
    }
    let secrets = json!({"schemaVersion": 1, "generation": "g", "profiles": {"signed": {"signatureKeys": keys}}});
    let loaded = Loaded {
        config: serde_json::from_value::<SidecarConfig>(config).unwrap(),
        secrets: serde_json::from_value::<SecretMaterial>(secrets).unwrap(),
    };
    Engine::compile(&loaded, Arc::new(InMemoryLimiter::new())).unwrap()
}

fn bench_signature(c: &mut Criterion) {
    let engine = signing_engine();
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let mut headers = HeaderMap::new();
    headers.insert("host", "api.example.com".parse().unwrap());
    let key = Key::from_secret(b"secret number 617").unwrap();
    let components = ["@method", "@authority", "@path", "@query"];
    let params = rfc9421::SignParams::new("sig1", "gw-0617", Algorithm::HmacSha256, now_ms / 1000 - 2, &components);
    let msg = Message {
        method: "GET",
        scheme: "http",
        authority: "api.example.com",
        path: "/orders/42",
        query: Some("page=2"),
        headers: &headers,
    };
    rfc9421::sign(&msg, &key, &params).unwrap().apply(&mut headers).unwrap();
    let req = RequestView {
        method: "GET",
        host: Some("api.example.com"),
        authority: Some("api.example.com"),
        path: "/orders/42",
        query: Some("page=2"),
        headers: &headers,
        peer: "192.168.3.4".parse().unwrap(),
        tls: false,
        listener: Listener::Inbound,
        client_cert: None,
        form: None,
    };
    assert!(matches!(engine.decide(&req, now_ms), Outcome::Allow(_)));
    // Every later call verifies the signature in full, then finds it in the replay cache.
    c.bench_function(
        "decide: RFC 9421 hmac-sha256 signature verified, then refused as a replay",
        |b| {
            b.iter(|| {
                let outcome = engine.decide(black_box(&req), now_ms);
                assert!(matches!(outcome, Outcome::Deny(_)));
            })
        },
    );
}

criterion_group!(benches, bench, bench_signature);
criterion_main!(benches);
