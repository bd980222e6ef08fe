//! draft-cavage-http-signatures-10: the draft's Appendix C examples and the verifier's refusals.

mod common;

use base64::Engine as _;
use common::*;
use http::{HeaderMap, HeaderValue};
use portcullis_signatures::cavage::{self, AlgorithmName, Policy, SignParams};
use portcullis_signatures::digest::{DigestAlgorithm, digest_header};
use portcullis_signatures::{Algorithm, Error, Key, Message};

/// Sun, 05 Jan 2014 21:31:40 GMT.
const DRAFT_DATE: u64 = 1388957500;
const ALL: &[Algorithm] = &Algorithm::ALL;

fn draft_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("example.com"));
    h.insert("date", HeaderValue::from_static("Sun, 05 Jan 2014 21:31:40 GMT"));
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert(
        "digest",
        HeaderValue::from_static("SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="),
    );
    h.insert("content-length", HeaderValue::from_static("18"));
    h
}

fn draft_message(h: &HeaderMap) -> Message<'_> {
    Message {
        method: "POST",
        scheme: "https",
        authority: "example.com",
        path: "/foo",
        query: Some("param=value&pet=dog"),
        headers: h,
    }
}

/// The draft's test key is 1024-bit RSA, which [`Key`] refuses; check its signatures with the
/// legacy verifier directly, over the signing strings this crate builds.
fn verify_with_draft_key(signing_string: &str, sig_b64: &str) {
    let pem = include_str!("keys/cavage-test.pub");
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let spki = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    let pkcs1 = &spki[22..]; // the fixed SPKI prefix of a 1024-bit rsaEncryption key
    let sig = base64::engine::general_purpose::STANDARD.decode(sig_b64).unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY, pkcs1)
        .verify(signing_string.as_bytes(), &sig)
        .expect("draft signature verifies over our signing string");
}

#[test]
fn draft_c1_default_test() {
    let h = draft_headers();
    let p = cavage::parse_params(r#"keyId="Test",algorithm="rsa-sha256",signature="SjWJWbWN7i0wzBvtPl8rbASWz5xQW6mcJmn+ibttBqtifLN7Sazz6m79cNfwwb8DMJ5cou1s7uEGKKCs+FLEEaDV5lp7q25WqS+lavg7T8hc0GppauB6hbgEKTwblDHYGEtbGmtdHgVCk9SuS13F0hZ8FD0k/5OxEPXe5WozsbM=""#).unwrap();
    assert_eq!(p.headers, ["date"]);
    let s = cavage::signing_string(&draft_message(&h), &p.headers, None, None).unwrap();
    assert_eq!(s, "date: Sun, 05 Jan 2014 21:31:40 GMT");
    verify_with_draft_key(
        &s,
        "SjWJWbWN7i0wzBvtPl8rbASWz5xQW6mcJmn+ibttBqtifLN7Sazz6m79cNfwwb8DMJ5cou1s7uEGKKCs+FLEEaDV5lp7q25WqS+lavg7T8hc0GppauB6hbgEKTwblDHYGEtbGmtdHgVCk9SuS13F0hZ8FD0k/5OxEPXe5WozsbM=",
    );
}

#[test]
fn draft_c2_basic_test() {
    let h = draft_headers();
    let headers: Vec<String> = ["(request-target)", "host", "date"].map(String::from).to_vec();
    let s = cavage::signing_string(&draft_message(&h), &headers, None, None).unwrap();
    assert_eq!(
        s,
        "(request-target): post /foo?param=value&pet=dog\nhost: example.com\ndate: Sun, 05 Jan 2014 21:31:40 GMT"
    );
    verify_with_draft_key(
        &s,
        "qdx+H7PHHDZgy4y/Ahn9Tny9V3GP6YgBPyUXMmoxWtLbHpUnXS2mg2+SbrQDMCJypxBLSPQR2aAjn7ndmw2iicw3HMbe8VfEdKFYRqzic+efkb3nndiv/x1xSHDJWeSWkx3ButlYSuBskLu6kd9Fswtemr3lgdDEmn04swr2Os0=",
    );
}

#[test]
fn draft_c3_all_headers_test() {
    let h = draft_headers();
    let headers: Vec<String> = [
        "(request-target)",
        "host",
        "date",
        "content-type",
        "digest",
        "content-length",
    ]
    .map(String::from)
    .to_vec();
    let s = cavage::signing_string(&draft_message(&h), &headers, None, None).unwrap();
    verify_with_draft_key(
        &s,
        "vSdrb+dS3EceC9bcwHSo4MlyKS59iFIrhgYkz8+oVLEEzmYZZvRs8rgOp+63LEM3v+MFHB32NfpB2bEKBIvB1q52LaEUHFv120V01IL+TAD48XaERZFukWgHoBTLMhYS2Gb51gWxpeIq8knRmPnYePbF5MOkR0Zkly4zKH7s1dE=",
    );
    // The body's Digest in the draft request is right.
    assert_eq!(
        digest_header(DigestAlgorithm::Sha256, RFC_BODY),
        "SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="
    );
}

#[test]
fn draft_section_2_3_signing_string() {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("example.org"));
    h.insert("date", HeaderValue::from_static("Tue, 07 Jun 2014 20:51:35 GMT"));
    h.insert(
        "x-example",
        HeaderValue::from_static("Example header with some whitespace.  "),
    );
    h.insert("x-emptyheader", HeaderValue::from_static(""));
    h.append("cache-control", HeaderValue::from_static("max-age=60"));
    h.append("cache-control", HeaderValue::from_static("must-revalidate"));
    let msg = Message {
        method: "GET",
        scheme: "https",
        authority: "example.org",
        path: "/foo",
        query: None,
        headers: &h,
    };
    let headers: Vec<String> = [
        "(request-target)",
        "(created)",
        "host",
        "date",
        "cache-control",
        "x-emptyheader",
        "x-example",
    ]
    .map(String::from)
    .to_vec();
    let s = cavage::signing_string(&msg, &headers, Some(1402170695), None).unwrap();
    assert_eq!(
        s,
        "(request-target): get /foo\n(created): 1402170695\nhost: example.org\ndate: Tue, 07 Jun 2014 20:51:35 GMT\ncache-control: max-age=60, must-revalidate\nx-emptyheader: \nx-example: Example header with some whitespace."
    );
}

fn round_trip(private: &Key, public: &Key, alg: Algorithm, name: AlgorithmName, expect_alg_param: &str) {
    let mut h = draft_headers();
    let headers = ["(request-target)", "host", "date", "digest"];
    let p = SignParams {
        key_id: "k1",
        alg,
        algorithm_name: name,
        headers: &headers,
        created: None,
        expires: None,
    };
    let signed = cavage::sign(&draft_message(&h), private, &p).unwrap();
    assert!(
        signed.params.starts_with(&format!(
            "keyId=\"k1\",algorithm=\"{expect_alg_param}\",headers=\"(request-target) host date digest\",signature=\""
        )),
        "{}",
        signed.params
    );
    h.insert("signature", HeaderValue::from_str(signed.signature_header()).unwrap());
    let now = DRAFT_DATE + 30;
    let v = cavage::verify(
        &draft_message(&h),
        Some(RFC_BODY),
        &("k1", public),
        &Policy::new(ALL, 300),
        now,
    )
    .unwrap();
    assert_eq!(v.alg, alg);
    assert_eq!(v.created, DRAFT_DATE);
    assert!(v.digest_checked);
    assert_eq!(v.valid_until, DRAFT_DATE + 301);

    // As Authorization: Signature.
    let mut h2 = draft_headers();
    h2.insert(
        "authorization",
        HeaderValue::from_str(&signed.authorization_header()).unwrap(),
    );
    cavage::verify(
        &draft_message(&h2),
        Some(RFC_BODY),
        &("k1", public),
        &Policy::new(ALL, 300),
        now,
    )
    .unwrap();

    // A changed body, path, stale Date, a Date from the future.
    assert_eq!(
        cavage::verify(
            &draft_message(&h),
            Some(b"{}"),
            &("k1", public),
            &Policy::new(ALL, 300),
            now
        ),
        Err(Error::DigestMismatch("Digest"))
    );
    let mut msg = draft_message(&h);
    msg.path = "/other";
    assert_eq!(
        cavage::verify(&msg, None, &("k1", public), &Policy::new(ALL, 300), now),
        Err(Error::BadSignature)
    );
    assert!(matches!(
        cavage::verify(
            &draft_message(&h),
            None,
            &("k1", public),
            &Policy::new(ALL, 300),
            DRAFT_DATE + 301
        ),
        Err(Error::Stale { .. })
    ));
    assert!(matches!(
        cavage::verify(
            &draft_message(&h),
            None,
            &("k1", public),
            &Policy::new(ALL, 300),
            DRAFT_DATE - 60
        ),
        Err(Error::FromTheFuture { .. })
    ));
}

#[test]
fn round_trips_every_algorithm() {
    let hmac = Key::hmac(b"shared secret").unwrap();
    round_trip(
        &hmac,
        &hmac,
        Algorithm::HmacSha256,
        AlgorithmName::Legacy,
        "hmac-sha256",
    );
    round_trip(&hmac, &hmac, Algorithm::HmacSha256, AlgorithmName::Hs2019, "hs2019");
    let rsa = key(include_str!("keys/rsa2048-pkcs1.key"));
    let rsa_pub = key(include_str!("keys/rsa2048.pub"));
    round_trip(
        &rsa,
        &rsa_pub,
        Algorithm::RsaV15Sha256,
        AlgorithmName::Legacy,
        "rsa-sha256",
    );
    round_trip(&rsa, &rsa_pub, Algorithm::RsaV15Sha256, AlgorithmName::Hs2019, "hs2019");
    round_trip(&rsa, &rsa_pub, Algorithm::RsaPssSha512, AlgorithmName::Hs2019, "hs2019");
    let ec = key(include_str!("keys/test-key-ecc-p256.key"));
    let ec_pub = key(include_str!("keys/test-key-ecc-p256.pem"));
    round_trip(
        &ec,
        &ec_pub,
        Algorithm::EcdsaP256Sha256,
        AlgorithmName::Legacy,
        "ecdsa-sha256",
    );
    let ed = key(include_str!("keys/test-key-ed25519.key"));
    let ed_pub = key(include_str!("keys/test-key-ed25519.pem"));
    round_trip(
        &ed,
        &ed_pub,
        Algorithm::Ed25519,
        AlgorithmName::Legacy,
        "ed25519-sha512",
    );
}

#[test]
fn created_and_expires_pseudo_headers() {
    let ed = key(include_str!("keys/test-key-ed25519.key"));
    let mut h = draft_headers();
    let headers = ["(request-target)", "(created)", "(expires)", "host"];
    let p = SignParams {
        key_id: "k1",
        alg: Algorithm::Ed25519,
        algorithm_name: AlgorithmName::Hs2019,
        headers: &headers,
        created: Some(5000),
        expires: Some(5100),
    };
    let signed = cavage::sign(&draft_message(&h), &ed, &p).unwrap();
    assert!(signed.signing_string.contains("(created): 5000\n(expires): 5100\n"));
    assert!(signed.params.contains(",created=5000,expires=5100,"));
    h.insert("signature", HeaderValue::from_str(&signed.params).unwrap());
    let mut policy = Policy::new(ALL, 300);
    policy.required_headers = &["@method", "@path", "@authority"];
    let v = cavage::verify(&draft_message(&h), None, &("k1", &ed), &policy, 5050).unwrap();
    assert_eq!((v.created, v.expires, v.valid_until), (5000, Some(5100), 5100));
    assert!(matches!(
        cavage::verify(&draft_message(&h), None, &("k1", &ed), &policy, 5100),
        Err(Error::Expired { .. })
    ));
    policy.required_headers = &["date"];
    assert_eq!(
        cavage::verify(&draft_message(&h), None, &("k1", &ed), &policy, 5050),
        Err(Error::NotCovered("date".into()))
    );
    // (created) without a created value cannot be signed.
    let p = SignParams { created: None, ..p };
    assert_eq!(
        cavage::sign(&draft_message(&h), &ed, &p),
        Err(Error::MissingComponent("(created)".into()))
    );
}

#[test]
fn refusals() {
    let hmac = Key::hmac(b"shared secret").unwrap();
    let h = draft_headers();
    assert!(matches!(
        cavage::verify(
            &draft_message(&h),
            None,
            &("k1", &hmac),
            &Policy::new(ALL, 300),
            DRAFT_DATE
        ),
        Err(Error::MissingSignature(_))
    ));
    let mut h2 = draft_headers();
    h2.insert("authorization", HeaderValue::from_static("Bearer abc"));
    assert!(matches!(
        cavage::verify(
            &draft_message(&h2),
            None,
            &("k1", &hmac),
            &Policy::new(ALL, 300),
            DRAFT_DATE
        ),
        Err(Error::MissingSignature(_))
    ));
    for (value, want) in [
        (r#"algorithm="hmac-sha256",signature="AAAA""#, "malformed"),
        (r#"keyId="k1",algorithm="hmac-sha256""#, "malformed"),
        (r#"keyId="k1",algorithm="hmac-sha256",signature="!!!""#, "malformed"),
        (r#"keyId="k1",keyId="k2",signature="AAAA""#, "malformed"),
        (r#"keyId="k1",algorithm="hmac-sha1",signature="AAAA""#, "not allowed"),
        (r#"keyId="k1",algorithm="rsa-sha256",signature="AAAA""#, "does not fit"),
        (
            r#"keyId="nobody",algorithm="hmac-sha256",signature="AAAA""#,
            "unknown keyId",
        ),
        (
            r#"keyId="k1",algorithm="hmac-sha256",headers="host",signature="AAAA""#,
            "no creation time",
        ),
        (
            r#"keyId="k1",algorithm="hmac-sha256",signature="AAAA""#,
            "does not verify",
        ),
    ] {
        let mut h = draft_headers();
        h.insert("signature", HeaderValue::from_str(value).unwrap());
        let err = cavage::verify(
            &draft_message(&h),
            None,
            &("k1", &hmac),
            &Policy::new(ALL, 300),
            DRAFT_DATE,
        )
        .unwrap_err();
        assert!(err.to_string().contains(want), "{value}: {err}");
    }
    // An allowed list without HMAC refuses an HMAC signature even when it is right.
    let mut h = draft_headers();
    let p = SignParams {
        key_id: "k1",
        alg: Algorithm::HmacSha256,
        algorithm_name: AlgorithmName::Legacy,
        headers: &["date"],
        created: None,
        expires: None,
    };
    h.insert(
        "signature",
        HeaderValue::from_str(&cavage::sign(&draft_message(&h), &hmac, &p).unwrap().params).unwrap(),
    );
    assert!(matches!(
        cavage::verify(
            &draft_message(&h),
            None,
            &("k1", &hmac),
            &Policy::new(&[Algorithm::Ed25519], 300),
            DRAFT_DATE
        ),
        Err(Error::AlgorithmNotAllowed(_))
    ));
}

/// `created` / `expires` outside the signing string are not trusted: anyone could change them.
#[test]
fn unsigned_created_and_expires_are_ignored() {
    let hmac = Key::hmac(b"shared secret").unwrap();
    let mut h = draft_headers();
    let p = SignParams {
        key_id: "k1",
        alg: Algorithm::HmacSha256,
        algorithm_name: AlgorithmName::Hs2019,
        headers: &["(request-target)", "date"],
        created: None,
        expires: None,
    };
    let signed = cavage::sign(&draft_message(&h), &hmac, &p).unwrap();
    // An attacker adds a fresh created and a short expires to the (stale) signed request.
    let now = DRAFT_DATE + 1000;
    let forged = format!("created={now},expires={},{}", now + 1, signed.params);
    h.insert("signature", HeaderValue::from_str(&forged).unwrap());
    let err = cavage::verify(&draft_message(&h), None, &("k1", &hmac), &Policy::new(ALL, 300), now).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Stale {
                created: DRAFT_DATE,
                ..
            }
        ),
        "{err}"
    );
    // Fresh: accepted, and the replay window ignores the unsigned expires.
    let v = cavage::verify(
        &draft_message(&h),
        None,
        &("k1", &hmac),
        &Policy::new(ALL, 300),
        DRAFT_DATE + 10,
    )
    .unwrap();
    assert_eq!(
        (v.created, v.expires, v.valid_until),
        (DRAFT_DATE, None, DRAFT_DATE + 301)
    );
    // Without a signed Date or (created) there is no creation time at all.
    let p = SignParams {
        headers: &["(request-target)", "host"],
        ..p
    };
    let signed = cavage::sign(&draft_message(&h), &hmac, &p).unwrap();
    let forged = format!("created={now},{}", signed.params);
    h.insert("signature", HeaderValue::from_str(&forged).unwrap());
    assert_eq!(
        cavage::verify(&draft_message(&h), None, &("k1", &hmac), &Policy::new(ALL, 300), now),
        Err(Error::MissingCreated)
    );
}
