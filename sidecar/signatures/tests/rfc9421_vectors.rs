//! RFC 9421 Appendix B.2 test vectors and the verifier's refusals.

mod common;

use common::*;
use http::HeaderValue;
use portcullis_signatures::rfc9421::{self, Policy, SignParams};
use portcullis_signatures::{Algorithm, Error, Key, ReplayCache, ReplayError};

const NOW: u64 = RFC_CREATED + 10;
const ALL: &[Algorithm] = &Algorithm::ALL;

fn with_sig(input: &str, sig: &str) -> http::HeaderMap {
    let mut h = rfc_request_headers();
    h.insert("signature-input", HeaderValue::from_str(input).unwrap());
    h.insert("signature", HeaderValue::from_str(sig).unwrap());
    h
}

fn rsa_pss_public() -> Key {
    key(include_str!("keys/test-key-rsa-pss.pem"))
}

#[test]
fn b21_minimal_rsa_pss() {
    let h = with_sig(
        r#"sig-b21=();created=1618884473;keyid="test-key-rsa-pss";nonce="b3k2pp5k7z-50gnwp.yemd""#,
        "sig-b21=:d2pmTvmbncD3xQm8E9ZV2828BjQWGgiwAaw5bAkgibUopemLJcWDy/lkbbHAve4cRAtx31Iq786U7it++wgGxbtRxf8Udx7zFZsckzXaJMkA7ChG52eSkFxykJeNqsrWH5S+oxNFlD4dzVuwe8DhTSja8xxbR/Z2cOGdCbzR72rgFWhzx2VjBqJzsPLMIQKhO4DGezXehhWwE56YCE+O6c0mKZsfxVrogUvA4HELjVKWmAvtl6UnCh8jYzuVG5WSb/QEVPnP5TmcAnLH1g+s++v6d4s8m0gCw1fV5/SITLq9mhho8K3+7EPYTU8IU1bLhdxO5Nyt8C8ssinQ98Xw9Q==:",
    );
    let k = rsa_pss_public();
    let v = rfc9421::verify(
        &rfc_message(&h),
        None,
        &("test-key-rsa-pss", &k),
        &Policy::new(ALL, 60),
        NOW,
    )
    .unwrap();
    assert_eq!(v.alg, Algorithm::RsaPssSha512);
    assert_eq!(v.nonce.as_deref(), Some("b3k2pp5k7z-50gnwp.yemd"));
    // Only rsa-v1_5 allowed: the same signature is refused.
    let err = rfc9421::verify(
        &rfc_message(&h),
        None,
        &("test-key-rsa-pss", &k),
        &Policy::new(&[Algorithm::RsaV15Sha256], 60),
        NOW,
    )
    .unwrap_err();
    assert_eq!(err, Error::BadSignature);
}

#[test]
fn b22_selective_rsa_pss() {
    let h = with_sig(
        r#"sig-b22=("@authority" "content-digest");created=1618884473;keyid="test-key-rsa-pss""#,
        "sig-b22=:Fee1uy9YGZq5UUwwYU6vz4dZNvfw3GYrFl1L6YlVIyUMuWswWDNSvql4dVtSeidYjYZUm7SBCENIb5KYy2ByoC3bI+7gydd2i4OAT5lyDtmeapnAa8uP/b9xUpg+VSPElbBs6JWBIQsd+nMdHDe+ls/IwVMwXktC37SqsnbNyhNp6kcvcWpevjzFcD2VqdZleUz4jN7P+W5A3wHiMGfIjIWn36KXNB+RKyrlGnIS8yaBBrom5rcZWLrLbtg6VlrH1+/07RV+kgTh/l10h8qgpl9zQHu7mWbDKTq0tJ8K4ywcPoC4s2I4rU88jzDKDGdTTQFZoTVZxZmuTM1FvHfzIw==:",
    );
    let k = rsa_pss_public();
    let v = rfc9421::verify(
        &rfc_message(&h),
        Some(RFC_BODY),
        &("test-key-rsa-pss", &k),
        &Policy::new(ALL, 60),
        NOW,
    )
    .unwrap();
    assert!(v.digest_checked);
    // The body changed: the digest no longer matches.
    let err = rfc9421::verify(
        &rfc_message(&h),
        Some(br#"{"hello": "world!"}"#),
        &("test-key-rsa-pss", &k),
        &Policy::new(ALL, 60),
        NOW,
    )
    .unwrap_err();
    assert_eq!(err, Error::DigestMismatch("Content-Digest"));
}

#[test]
fn b23_full_coverage_rsa_pss() {
    let input = r#"sig-b23=("date" "@method" "@path" "@query" "@authority" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-rsa-pss""#;
    let h = with_sig(
        input,
        "sig-b23=:bbN8oArOxYoyylQQUU6QYwrTuaxLwjAC9fbY2F6SVWvh0yBiMIRGOnMYwZ/5MR6fb0Kh1rIRASVxFkeGt683+qRpRRU5p2voTp768ZrCUb38K0fUxN0O0iC59DzYx8DFll5GmydPxSmme9v6ULbMFkl+V5B1TP/yPViV7KsLNmvKiLJH1pFkh/aYA2HXXZzNBXmIkoQoLd7YfW91kE9o/CCoC1xMy7JA1ipwvKvfrs65ldmlu9bpG6A9BmzhuzF8Eim5f8ui9eH8LZH896+QIF61ka39VBrohr9iyMUJpvRX2Zbhl5ZJzSRxpJyoEZAFL2FUo5fTIztsDZKEgM4cUA==:",
    );
    let k = rsa_pss_public();
    let mut policy = Policy::new(ALL, 60);
    policy.required_components = &["@method", "@path", "@query", "date", "content-digest"];
    rfc9421::verify(
        &rfc_message(&h),
        Some(RFC_BODY),
        &("test-key-rsa-pss", &k),
        &policy,
        NOW,
    )
    .unwrap();

    // The expected base, from the RFC.
    let sfv::Member::InnerList(list) = &sfv::parse_dictionary(input).unwrap()[0].1 else {
        panic!()
    };
    let (base, _) = rfc9421::signature_base(&rfc_message(&h), list).unwrap();
    assert_eq!(
        base,
        concat!(
            "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n",
            "\"@method\": POST\n",
            "\"@path\": /foo\n",
            "\"@query\": ?param=Value&Pet=dog\n",
            "\"@authority\": example.com\n",
            "\"content-type\": application/json\n",
            "\"content-digest\": sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:\n",
            "\"content-length\": 18\n",
            "\"@signature-params\": (\"date\" \"@method\" \"@path\" \"@query\" \"@authority\" \"content-type\" \"content-digest\" \"content-length\");created=1618884473;keyid=\"test-key-rsa-pss\""
        )
    );

    // A changed component (the path) is refused.
    let mut msg = rfc_message(&h);
    msg.path = "/bar";
    let err = rfc9421::verify(&msg, None, &("test-key-rsa-pss", &k), &policy, NOW).unwrap_err();
    assert_eq!(err, Error::BadSignature);
}

use portcullis_signatures::sfv;

#[test]
fn b24_ecdsa_p256_response_base() {
    // B.2.4 signs a response (@status); the base is given by the RFC, so check the crypto on it.
    let base = concat!(
        "\"@status\": 200\n",
        "\"content-type\": application/json\n",
        "\"content-digest\": sha-512=:mEWXIS7MaLRuGgxOBdODa3xqM1XdEvxoYhvlCFJ41QJgJc4GTsPp29l5oGX69wWdXymyU0rjJuahq4l5aGgfLQ==:\n",
        "\"content-length\": 23\n",
        "\"@signature-params\": (\"@status\" \"content-type\" \"content-digest\" \"content-length\");created=1618884473;keyid=\"test-key-ecc-p256\""
    );
    let sig = base64_decode("wNmSUAhwb5LxtOtOpNa6W5xj067m5hFrj0XQ4fvpaCLx0NKocgPquLgyahnzDnDAUy5eCdlYUEkLIj+32oiasw==");
    let public = key(include_str!("keys/test-key-ecc-p256.pem"));
    public
        .verify(Algorithm::EcdsaP256Sha256, base.as_bytes(), &sig)
        .unwrap();
    let private = key(include_str!("keys/test-key-ecc-p256.key"));
    private
        .verify(Algorithm::EcdsaP256Sha256, base.as_bytes(), &sig)
        .unwrap();
    assert_eq!(
        public.verify(Algorithm::EcdsaP256Sha256, b"something else", &sig),
        Err(Error::BadSignature)
    );
    // And a request signed with the private key verifies with the public one.
    let h = rfc_request_headers();
    let comps = ["@method", "@path", "@authority", "content-digest"];
    let p = SignParams::new(
        "sig1",
        "test-key-ecc-p256",
        Algorithm::EcdsaP256Sha256,
        RFC_CREATED,
        &comps,
    );
    let signed = rfc9421::sign(&rfc_message(&h), &private, &p).unwrap();
    let mut h2 = rfc_request_headers();
    signed.apply(&mut h2).unwrap();
    let v = rfc9421::verify(
        &rfc_message(&h2),
        Some(RFC_BODY),
        &("test-key-ecc-p256", &public),
        &Policy::new(ALL, 60),
        NOW,
    )
    .unwrap();
    assert_eq!(v.alg, Algorithm::EcdsaP256Sha256);
}

#[test]
fn b25_hmac_sha256() {
    let secret = Key::hmac(&shared_secret()).unwrap();
    let h = rfc_request_headers();
    let comps = ["date", "@authority", "content-type"];
    let mut p = SignParams::new(
        "sig-b25",
        "test-shared-secret",
        Algorithm::HmacSha256,
        RFC_CREATED,
        &comps,
    );
    p.include_alg = false;
    let signed = rfc9421::sign(&rfc_message(&h), &secret, &p).unwrap();
    assert_eq!(
        signed.base,
        concat!(
            "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n",
            "\"@authority\": example.com\n",
            "\"content-type\": application/json\n",
            "\"@signature-params\": (\"date\" \"@authority\" \"content-type\");created=1618884473;keyid=\"test-shared-secret\""
        )
    );
    assert_eq!(
        signed.signature_input,
        r#"sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret""#
    );
    assert_eq!(
        signed.signature,
        "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:"
    );

    let h = with_sig(&signed.signature_input, &signed.signature);
    let v = rfc9421::verify(
        &rfc_message(&h),
        None,
        &("test-shared-secret", &secret),
        &Policy::new(&[Algorithm::HmacSha256], 60),
        NOW,
    )
    .unwrap();
    assert_eq!(
        (v.label.as_str(), v.key_id.as_str(), v.alg),
        ("sig-b25", "test-shared-secret", Algorithm::HmacSha256)
    );
    assert_eq!(v.valid_until, RFC_CREATED + 61);

    // The wrong secret, a stale or future created, an algorithm not allowed, an unknown key.
    let wrong = Key::hmac(b"not the secret").unwrap();
    assert_eq!(
        rfc9421::verify(
            &rfc_message(&h),
            None,
            &("test-shared-secret", &wrong),
            &Policy::new(ALL, 60),
            NOW
        ),
        Err(Error::BadSignature)
    );
    assert!(matches!(
        rfc9421::verify(
            &rfc_message(&h),
            None,
            &("test-shared-secret", &secret),
            &Policy::new(ALL, 60),
            RFC_CREATED + 61
        ),
        Err(Error::Stale { .. })
    ));
    assert!(matches!(
        rfc9421::verify(
            &rfc_message(&h),
            None,
            &("test-shared-secret", &secret),
            &Policy::new(ALL, 60),
            RFC_CREATED - 6
        ),
        Err(Error::FromTheFuture { .. })
    ));
    assert!(matches!(
        rfc9421::verify(
            &rfc_message(&h),
            None,
            &("test-shared-secret", &secret),
            &Policy::new(&[Algorithm::Ed25519], 60),
            NOW
        ),
        Err(Error::AlgorithmNotAllowed(_))
    ));
    assert_eq!(
        rfc9421::verify(&rfc_message(&h), None, &("other", &secret), &Policy::new(ALL, 60), NOW),
        Err(Error::UnknownKey("test-shared-secret".into()))
    );
    let mut policy = Policy::new(ALL, 60);
    policy.required_components = &["@method"];
    assert_eq!(
        rfc9421::verify(&rfc_message(&h), None, &("test-shared-secret", &secret), &policy, NOW),
        Err(Error::NotCovered("@method".into()))
    );
    // A changed covered header.
    let mut h2 = h.clone();
    h2.insert("content-type", HeaderValue::from_static("text/plain"));
    assert_eq!(
        rfc9421::verify(
            &rfc_message(&h2),
            None,
            &("test-shared-secret", &secret),
            &Policy::new(ALL, 60),
            NOW
        ),
        Err(Error::BadSignature)
    );
    // Replay: the second time inside the window is refused.
    let cache = ReplayCache::new(1024);
    cache.check_and_insert(&v.replay_key, v.valid_until, NOW).unwrap();
    assert_eq!(
        cache.check_and_insert(&v.replay_key, v.valid_until, NOW + 1),
        Err(ReplayError::Replay)
    );
}

#[test]
fn b26_ed25519() {
    let private = key(include_str!("keys/test-key-ed25519.key"));
    let public = key(include_str!("keys/test-key-ed25519.pem"));
    let h = rfc_request_headers();
    let comps = [
        "date",
        "@method",
        "@path",
        "@authority",
        "content-type",
        "content-length",
    ];
    let mut p = SignParams::new("sig-b26", "test-key-ed25519", Algorithm::Ed25519, RFC_CREATED, &comps);
    p.include_alg = false;
    let signed = rfc9421::sign(&rfc_message(&h), &private, &p).unwrap();
    assert_eq!(
        signed.base,
        concat!(
            "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n",
            "\"@method\": POST\n",
            "\"@path\": /foo\n",
            "\"@authority\": example.com\n",
            "\"content-type\": application/json\n",
            "\"content-length\": 18\n",
            "\"@signature-params\": (\"date\" \"@method\" \"@path\" \"@authority\" \"content-type\" \"content-length\");created=1618884473;keyid=\"test-key-ed25519\""
        )
    );
    assert_eq!(
        signed.signature,
        "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:"
    );
    let h = with_sig(&signed.signature_input, &signed.signature);
    rfc9421::verify(
        &rfc_message(&h),
        None,
        &("test-key-ed25519", &public),
        &Policy::new(ALL, 60),
        NOW,
    )
    .unwrap();
    let other = key(include_str!("keys/ed-other.pub"));
    assert_eq!(
        rfc9421::verify(
            &rfc_message(&h),
            None,
            &("test-key-ed25519", &other),
            &Policy::new(ALL, 60),
            NOW
        ),
        Err(Error::BadSignature)
    );
}

#[test]
fn rsa_v15_round_trip_all_key_encodings() {
    let private = key(include_str!("keys/rsa2048-pkcs1.key"));
    let spki = key(include_str!("keys/rsa2048.pub"));
    let pkcs1 = key(include_str!("keys/rsa2048-pkcs1.pub"));
    let mut h = rfc_request_headers();
    let comps = [
        "@method",
        "@target-uri",
        "@scheme",
        "@request-target",
        "content-digest",
        "\"@query-param\";name=\"Pet\"",
    ];
    for alg in [Algorithm::RsaV15Sha256, Algorithm::RsaPssSha512] {
        let mut p = SignParams::new("sig1", "rsa", alg, RFC_CREATED, &comps);
        p.expires = Some(RFC_CREATED + 30);
        p.nonce = Some("n-1");
        p.tag = Some("portcullis");
        let signed = rfc9421::sign(&rfc_message(&h), &private, &p).unwrap();
        assert!(
            signed
                .base
                .contains("\"@target-uri\": https://example.com/foo?param=Value&Pet=dog\n"),
            "{}",
            signed.base
        );
        assert!(signed.base.contains("\"@query-param\";name=\"Pet\": dog\n"));
        assert!(signed.base.contains("\"@request-target\": /foo?param=Value&Pet=dog\n"));
        assert!(signed.signature_input.ends_with(&format!(
            ";created=1618884473;expires=1618884503;keyid=\"rsa\";alg=\"{alg}\";nonce=\"n-1\";tag=\"portcullis\""
        )));
        h.remove("signature-input");
        h.remove("signature");
        signed.apply(&mut h).unwrap();
        for k in [&spki, &pkcs1, &private] {
            let v = rfc9421::verify(
                &rfc_message(&h),
                Some(RFC_BODY),
                &("rsa", k),
                &Policy::new(ALL, 60),
                NOW,
            )
            .unwrap();
            assert_eq!(v.alg, alg);
            assert_eq!(v.valid_until, RFC_CREATED + 30);
        }
        assert!(matches!(
            rfc9421::verify(
                &rfc_message(&h),
                None,
                &("rsa", &spki),
                &Policy::new(ALL, 60),
                RFC_CREATED + 30
            ),
            Err(Error::Expired { .. })
        ));
        // alg says rsa; an EC key under the same keyId does not fit.
        let ec = key(include_str!("keys/ec-other.p8"));
        assert!(matches!(
            rfc9421::verify(&rfc_message(&h), None, &("rsa", &ec), &Policy::new(ALL, 60), NOW),
            Err(Error::KeyMismatch { .. })
        ));
    }
}

#[test]
fn sign_refuses_missing_components_and_bad_params() {
    let secret = Key::hmac(b"s").unwrap();
    let h = rfc_request_headers();
    let msg = rfc_message(&h);
    let p = SignParams::new("sig1", "k", Algorithm::HmacSha256, 1, &["x-missing"]);
    assert_eq!(
        rfc9421::sign(&msg, &secret, &p),
        Err(Error::MissingComponent("\"x-missing\"".into()))
    );
    let p = SignParams::new("Sig1", "k", Algorithm::HmacSha256, 1, &["@method"]);
    assert!(matches!(rfc9421::sign(&msg, &secret, &p), Err(Error::InvalidParams(_))));
    let p = SignParams::new("sig1", "k", Algorithm::Ed25519, 1, &["@method"]);
    assert!(matches!(
        rfc9421::sign(&msg, &secret, &p),
        Err(Error::KeyMismatch { .. })
    ));
    let public = key(include_str!("keys/test-key-ed25519.pem"));
    let p = SignParams::new("sig1", "k", Algorithm::Ed25519, 1, &["@method"]);
    assert_eq!(rfc9421::sign(&msg, &public, &p), Err(Error::NotASigningKey));
}

#[test]
fn verify_refuses_malformed_headers() {
    let secret = Key::hmac(b"s").unwrap();
    let h = rfc_request_headers();
    assert_eq!(
        rfc9421::verify(&rfc_message(&h), None, &("k", &secret), &Policy::new(ALL, 60), NOW),
        Err(Error::MissingSignature("Signature-Input"))
    );
    for (input, sig) in [
        ("sig1=(", "sig1=:AAAA:"),
        (r#"sig1=("@method");created=1618884473;keyid="k""#, "sig1=AAAA"),
        (r#"sig1=("@method");created=1618884473;keyid="k""#, "sig2=:AAAA:"),
        (r#"sig1=("@method");created=1618884473"#, "sig1=:AAAA:"),
        (
            r#"sig1=("@method" "@method");created=1618884473;keyid="k""#,
            "sig1=:AAAA:",
        ),
    ] {
        let h = with_sig(input, sig);
        let err = rfc9421::verify(&rfc_message(&h), None, &("k", &secret), &Policy::new(ALL, 60), NOW).unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }), "{input} / {sig}: {err}");
    }
    let h = with_sig(r#"sig1=("@method");keyid="k""#, "sig1=:AAAA:");
    assert_eq!(
        rfc9421::verify(&rfc_message(&h), None, &("k", &secret), &Policy::new(ALL, 60), NOW),
        Err(Error::MissingCreated)
    );
    let h = with_sig(
        r#"sig1=("@method");created=1618884473;keyid="k";alg="rsa-sha1""#,
        "sig1=:AAAA:",
    );
    assert_eq!(
        rfc9421::verify(&rfc_message(&h), None, &("k", &secret), &Policy::new(ALL, 60), NOW),
        Err(Error::AlgorithmNotAllowed("rsa-sha1".into()))
    );
}

#[test]
fn errors_never_carry_key_material() {
    let secret = Key::hmac(b"super-secret-value").unwrap();
    assert!(!format!("{secret:?}").contains("super"));
    let e = Key::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----").unwrap_err();
    assert!(!e.to_string().contains("AAAA"));
}

#[test]
fn key_parsing() {
    use portcullis_signatures::KeyKind;
    for (pem, kind, private) in [
        (include_str!("keys/test-key-rsa-pss.key"), KeyKind::Rsa, true),
        (include_str!("keys/test-key-rsa-pss.pem"), KeyKind::Rsa, false),
        (include_str!("keys/rsa2048-pkcs1.key"), KeyKind::Rsa, true),
        (include_str!("keys/rsa2048-pkcs1.pub"), KeyKind::Rsa, false),
        (include_str!("keys/test-key-ecc-p256.key"), KeyKind::EcP256, true),
        (include_str!("keys/ec-other.p8"), KeyKind::EcP256, true),
        (include_str!("keys/test-key-ecc-p256.pem"), KeyKind::EcP256, false),
        (include_str!("keys/test-key-ed25519.key"), KeyKind::Ed25519, true),
        (include_str!("keys/ed-other.key"), KeyKind::Ed25519, true),
        (include_str!("keys/test-key-ed25519.pem"), KeyKind::Ed25519, false),
    ] {
        let k = Key::from_secret(pem.as_bytes()).unwrap();
        assert_eq!((k.kind(), k.can_sign()), (kind, private), "{pem}");
    }
    assert_eq!(Key::from_secret(b"plain secret").unwrap().kind(), KeyKind::Hmac);
    assert_eq!(
        Key::from_pem(include_str!("keys/rsa1024.key")).unwrap_err(),
        Error::InvalidKey("RSA key shorter than 2048 bits")
    );
    assert_eq!(
        Key::from_pem(include_str!("keys/cavage-test.pub")).unwrap_err(),
        Error::InvalidKey("RSA key shorter than 2048 bits")
    );
    assert!(Key::hmac(b"").is_err());
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// ECDSA signatures are malleable: (r, s) and (r, n - s) both verify. The replay key is built
/// from what was signed, so the re-encoded signature is still caught as a replay.
#[test]
fn ecdsa_malleated_signature_is_still_a_replay() {
    use base64::Engine as _;
    let private = key(include_str!("keys/test-key-ecc-p256.key"));
    let public = key(include_str!("keys/test-key-ecc-p256.pem"));
    let h = rfc_request_headers();
    let comps = ["@method", "@path", "@authority", "date"];
    let p = SignParams::new("sig1", "ec", Algorithm::EcdsaP256Sha256, RFC_CREATED, &comps);
    let signed = rfc9421::sign(&rfc_message(&h), &private, &p).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let sig = b64
        .decode(signed.signature.trim_start_matches("sig1=:").trim_end_matches(':'))
        .unwrap();
    // s' = n - s over P-256's group order.
    const N: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6,
        0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
    ];
    let mut malleated = sig.clone();
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = N[i] as i16 - sig[32 + i] as i16 - borrow;
        malleated[32 + i] = d.rem_euclid(256) as u8;
        borrow = i16::from(d < 0);
    }
    assert_ne!(sig, malleated);
    let cache = ReplayCache::new(64);
    let mut first = None;
    for s in [&sig, &malleated] {
        let mut h2 = rfc_request_headers();
        h2.insert(
            "signature-input",
            HeaderValue::from_str(&signed.signature_input).unwrap(),
        );
        h2.insert(
            "signature",
            HeaderValue::from_str(&format!("sig1=:{}:", b64.encode(s))).unwrap(),
        );
        let Ok(v) = rfc9421::verify(&rfc_message(&h2), None, &("ec", &public), &Policy::new(ALL, 60), NOW) else {
            continue; // a verifier that refuses high-s is fine too
        };
        match first {
            None => {
                cache.check_and_insert(&v.replay_key, v.valid_until, NOW).unwrap();
                first = Some(v.replay_key);
            }
            Some(k) => {
                assert_eq!(k, v.replay_key);
                assert_eq!(
                    cache.check_and_insert(&v.replay_key, v.valid_until, NOW),
                    Err(ReplayError::Replay)
                );
            }
        }
    }
    assert!(first.is_some());
}

#[test]
fn key_maps_resolve() {
    use portcullis_signatures::KeyResolver;
    use std::sync::Arc;
    let mut m: std::collections::HashMap<String, Arc<Key>> = std::collections::HashMap::new();
    m.insert("a".into(), Arc::new(Key::hmac(b"x").unwrap()));
    assert!(m.resolve("a").is_some());
    assert!(m.resolve("b").is_none());
    let mut b: std::collections::BTreeMap<String, Key> = std::collections::BTreeMap::new();
    b.insert("a".into(), Key::hmac(b"x").unwrap());
    assert!(b.resolve("a").is_some());
}

#[test]
fn required_components_accept_equivalent_coverage() {
    let secret = Key::hmac(b"s").unwrap();
    let h = rfc_request_headers();
    let comps = ["@method", "@target-uri"];
    let p = SignParams::new("sig1", "k", Algorithm::HmacSha256, RFC_CREATED, &comps);
    let signed = rfc9421::sign(&rfc_message(&h), &secret, &p).unwrap();
    let h = with_sig(&signed.signature_input, &signed.signature);
    let mut policy = Policy::new(ALL, 60);
    policy.required_components = &["@method", "@path", "@query", "@authority", "host", "@scheme"];
    rfc9421::verify(&rfc_message(&h), None, &("k", &secret), &policy, NOW).unwrap();
    policy.required_components = &["date"];
    assert_eq!(
        rfc9421::verify(&rfc_message(&h), None, &("k", &secret), &policy, NOW),
        Err(Error::NotCovered("date".into()))
    );
}
