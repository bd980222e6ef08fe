//! Verification cost of RFC 9421 requests (parse both headers, rebuild the base, check the
//! signature, the time window and required components), per algorithm.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use portcullis_signatures::rfc9421::{self, Policy, SignParams};
use portcullis_signatures::{Algorithm, Key, Message, ReplayCache};

const CREATED: u64 = 1_700_000_000;
const COMPONENTS: &[&str] = &["@method", "@authority", "@path", "@query", "content-type", "date"];

fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("api.example.com"));
    h.insert("date", HeaderValue::from_static("Tue, 14 Nov 2023 22:13:20 GMT"));
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("accept", HeaderValue::from_static("*/*"));
    h.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    h
}

fn message(h: &HeaderMap) -> Message<'_> {
    Message {
        method: "POST",
        scheme: "https",
        authority: "api.example.com",
        path: "/v1/orders/42",
        query: Some("expand=items&limit=10"),
        headers: h,
    }
}

fn signed(private: &Key, alg: Algorithm) -> HeaderMap {
    let mut h = request_headers();
    let p = SignParams::new("sig1", "k1", alg, CREATED, COMPONENTS);
    let s = rfc9421::sign(&message(&h), private, &p).unwrap();
    s.apply(&mut h).unwrap();
    h
}

fn bench(c: &mut Criterion) {
    let hmac = Key::hmac(b"a 32-byte shared secret for hmac").unwrap();
    let ed_private = Key::from_pem(include_str!("../tests/keys/test-key-ed25519.key")).unwrap();
    let ed_public = Key::from_pem(include_str!("../tests/keys/test-key-ed25519.pem")).unwrap();
    let ec_private = Key::from_pem(include_str!("../tests/keys/test-key-ecc-p256.key")).unwrap();
    let ec_public = Key::from_pem(include_str!("../tests/keys/test-key-ecc-p256.pem")).unwrap();
    let rsa_private = Key::from_pem(include_str!("../tests/keys/rsa2048-pkcs1.key")).unwrap();
    let rsa_public = Key::from_pem(include_str!("../tests/keys/rsa2048.pub")).unwrap();
    let policy = Policy {
        required_components: &["@method", "@path", "date"],
        ..Policy::new(&Algorithm::ALL, 300)
    };
    let now = CREATED + 10;

    for (name, alg, private, public) in [
        ("rfc9421_verify_hmac_sha256", Algorithm::HmacSha256, &hmac, &hmac),
        ("rfc9421_verify_ed25519", Algorithm::Ed25519, &ed_private, &ed_public),
        (
            "rfc9421_verify_ecdsa_p256_sha256",
            Algorithm::EcdsaP256Sha256,
            &ec_private,
            &ec_public,
        ),
        (
            "rfc9421_verify_rsa_v1_5_sha256",
            Algorithm::RsaV15Sha256,
            &rsa_private,
            &rsa_public,
        ),
    ] {
        let h = signed(private, alg);
        let keys = ("k1", public);
        rfc9421::verify(&message(&h), None, &keys, &policy, now).unwrap();
        c.bench_function(name, |b| {
            b.iter(|| rfc9421::verify(black_box(&message(&h)), None, &keys, &policy, now).unwrap())
        });
    }

    let h = signed(&hmac, Algorithm::HmacSha256);
    c.bench_function("rfc9421_sign_hmac_sha256", |b| {
        let p = SignParams::new("sig1", "k1", Algorithm::HmacSha256, CREATED, COMPONENTS);
        b.iter(|| rfc9421::sign(black_box(&message(&h)), &hmac, &p).unwrap())
    });

    let cache = ReplayCache::new(1 << 20);
    let mut i: u64 = 0;
    c.bench_function("replay_cache_check_and_insert", |b| {
        b.iter(|| {
            i += 1;
            cache
                .check_and_insert(&i.to_le_bytes(), now + 300 + (i % 1000), now)
                .unwrap_or(())
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
