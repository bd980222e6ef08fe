//! Parsers never panic on hostile input: random and mutated signature headers, PEM and DER.

mod common;

use common::*;
use http::HeaderValue;
use portcullis_signatures::rfc9421::{self, Policy};
use portcullis_signatures::{Algorithm, Key, cavage, sfv};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const ALPHABET: &[u8] = b"abcz09=;,:()\" ?*-_./+@\\\t\x7fAZ";

fn mutate(rng: &mut Rng, seed: &str) -> String {
    let mut b = seed.as_bytes().to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(3) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b.remove(i);
            }
            1 => {
                let i = rng.below(b.len() + 1);
                b.insert(i, ALPHABET[rng.below(ALPHABET.len())]);
            }
            _ if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = ALPHABET[rng.below(ALPHABET.len())];
            }
            _ => {}
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

#[test]
fn structured_field_and_header_parsers_never_panic() {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let inputs = [
        r#"sig1=("@method" "@authority" "@path");created=1618884473;keyid="test-key";alg="ed25519""#,
        "sig1=:d2pmTvmbncD3xQm8E9ZV2828BjQWGgiwAaw5bAkgibUopem==:",
        r#"sig1=("@query-param";name="Pet" "content-digest";key="sha-512");created=1;nonce="x""#,
    ];
    let secret = Key::hmac(b"s").unwrap();
    for _ in 0..3000 {
        let seed = inputs[rng.below(inputs.len())];
        let s = mutate(&mut rng, seed);
        let _ = sfv::parse_dictionary(&s);
        let _ = sfv::parse_item(&s);
        let _ = cavage::parse_params(&s);
        let mut h = rfc_request_headers();
        if let (Ok(a), Ok(b)) = (
            HeaderValue::from_str(&s),
            HeaderValue::from_str(&mutate(&mut rng, inputs[1])),
        ) {
            h.insert("signature-input", a);
            h.insert("signature", b);
            let _ = rfc9421::verify(
                &rfc_message(&h),
                Some(RFC_BODY),
                &("test-key", &secret),
                &Policy::new(&Algorithm::ALL, 60),
                RFC_CREATED,
            );
        }
    }
}

#[test]
fn key_parsing_never_panics_on_corrupted_der() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let pems = [
        include_str!("keys/test-key-rsa-pss.key"),
        include_str!("keys/test-key-ecc-p256.key"),
        include_str!("keys/test-key-ecc-p256.pem"),
        include_str!("keys/test-key-ed25519.key"),
        include_str!("keys/rsa2048-pkcs1.pub"),
        include_str!("keys/ec-other.p8"),
    ];
    let mut rng = Rng(0xdeadbeefcafef00d);
    for _ in 0..2000 {
        let pem = pems[rng.below(pems.len())];
        let label_line = pem.lines().next().unwrap();
        let end_line = pem.lines().last().unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let mut der = b64.decode(body).unwrap();
        for _ in 0..=rng.below(3) {
            let i = rng.below(der.len());
            match rng.below(3) {
                0 => der[i] ^= 1 << rng.below(8),
                1 => der.truncate(i.max(1)),
                _ => der[i] = rng.next() as u8,
            }
        }
        let text = format!("{label_line}\n{}\n{end_line}\n", b64.encode(&der));
        let _ = Key::from_pem(&text);
    }
}

#[test]
fn shared_state_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Key>();
    assert_send_sync::<portcullis_signatures::ReplayCache>();
    assert_send_sync::<std::collections::HashMap<String, std::sync::Arc<Key>>>();
}

/// Issue 15, item 3: huge signature headers are refused by their bounds (number of members,
/// components, parameters), not parsed in full, and repeated keys cost no more than others.
#[test]
fn huge_signature_headers_are_refused_by_their_bounds() {
    let n = 7000;
    let members: Vec<String> = (0..n).map(|i| format!("m{i}=1")).collect();
    let err = sfv::parse_dictionary(&members.join(", ")).unwrap_err();
    assert!(err.contains("more than 32 dictionary members"), "{err}");
    // One key repeated: one member, the last value.
    let repeated = vec!["a=1"; n].join(", ") + ", a=2";
    let dict = sfv::parse_dictionary(&repeated).unwrap();
    assert_eq!(dict.len(), 1);

    let components: Vec<String> = (0..n).map(|i| format!("\"h{i}\"")).collect();
    let input = format!(
        "sig1=({});created={RFC_CREATED};keyid=\"test-key\"",
        components.join(" ")
    );
    let err = sfv::parse_dictionary(&input).unwrap_err();
    assert!(err.contains("more than 64 items"), "{err}");
    let params: Vec<String> = (0..n).map(|i| format!(";p{i}=1")).collect();
    let err = sfv::parse_item(&format!("\"@method\"{}", params.concat())).unwrap_err();
    assert!(err.contains("more than 16 parameters"), "{err}");

    // Through the verifier: refused as malformed before any component is looked up.
    let result = verify_fields(&input, "sig1=:AAAA:");
    assert!(
        matches!(
            &result,
            Err(portcullis_signatures::Error::Malformed {
                what: "Signature-Input",
                ..
            })
        ),
        "{result:?}"
    );

    // draft-cavage: parameters and header names.
    let many: Vec<String> = (0..n).map(|i| format!("p{i}=\"x\"")).collect();
    let err = cavage::parse_params(&format!("keyId=\"k\",signature=\"AAAA\",{}", many.join(","))).unwrap_err();
    assert!(err.to_string().contains("more than 16 parameters"), "{err}");
    let names: Vec<String> = (0..n).map(|i| format!("h{i}")).collect();
    let value = format!(
        "keyId=\"k\",headers=\"(request-target) {}\",signature=\"AAAA\"",
        names.join(" ")
    );
    let err = cavage::parse_params(&value).unwrap_err();
    assert!(err.to_string().contains("more than 64 headers"), "{err}");
}

/// A signature by an unknown key costs its parameters only: the key is looked up before the
/// covered components are (a request may carry 32 signatures of 64 components each). Here
/// every member covers a component twice, which would be refused as malformed if the
/// components were read first: the answer is the unknown key.
#[test]
fn an_unknown_key_is_refused_before_the_components_are_read() {
    let components: Vec<String> = (0..64).map(|i| format!("\"h{}\"", i % 63)).collect();
    let members: Vec<String> = (0..32)
        .map(|m| format!("s{m}=({});created={RFC_CREATED};keyid=\"nobody\"", components.join(" ")))
        .collect();
    let sigs: Vec<String> = (0..32).map(|m| format!("s{m}=:AAAA:")).collect();
    let result = verify_fields(&members.join(", "), &sigs.join(", "));
    assert!(
        matches!(&result, Err(portcullis_signatures::Error::UnknownKey(k)) if k == "nobody"),
        "{result:?}"
    );
}

/// RFC 9421 verification of the test request with these `Signature-Input` and `Signature`
/// fields, against the key `test-key` (an HMAC secret).
fn verify_fields(input: &str, signature: &str) -> Result<(), portcullis_signatures::Error> {
    let secret = Key::hmac(b"s").unwrap();
    let mut h = rfc_request_headers();
    h.insert("signature-input", HeaderValue::from_str(input).unwrap());
    h.insert("signature", HeaderValue::from_str(signature).unwrap());
    rfc9421::verify(
        &rfc_message(&h),
        None,
        &("test-key", &secret),
        &Policy::new(&Algorithm::ALL, 60),
        RFC_CREATED,
    )
    .map(drop)
}
