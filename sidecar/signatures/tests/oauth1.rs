//! OAuth 1.0a (RFC 5849): the RFC's own examples, requests signed by a third-party client
//! (oauthlib, `oauth1/vectors.py`), and what must be refused.

use portcullis_signatures::oauth1::{self, Credentials, Request, SignatureMethod, base_string, encode, parse, verify};
use portcullis_signatures::{Error, Key};
use serde_json::Value;

fn key(name: &str) -> Key {
    let path = format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"));
    Key::from_pem(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// RFC 5849 section 3.4.1.1: the example request's base string, byte for byte (its query
/// with an encoded `=` and `%`, an empty value, a space; its form body with `+`; a repeated
/// name; `realm` and the signature left out; the default port dropped).
#[test]
fn the_rfc_base_string_example() {
    let req = Request {
        method: "post",
        scheme: "HTTP",
        authority: "Example.com:80",
        path: "/request",
        query: Some("b5=%3D%253D&a3=a&c%40=&a2=r%20b"),
        authorization: Some(
            "OAuth realm=\"Example\", oauth_consumer_key=\"9djdj82h48djs9d2\", \
             oauth_token=\"kkk9d7dh3k39sjv7\", oauth_signature_method=\"HMAC-SHA1\", \
             oauth_timestamp=\"137131201\", oauth_nonce=\"7d8f3e4a\", \
             oauth_signature=\"bYT5CMsGcbgUdFHObYMEfcx6bsw%3D\"",
        ),
        form: Some(b"c2&a3=2+q"),
    };
    let signed = parse(&req).unwrap();
    assert_eq!(signed.consumer_key, "9djdj82h48djs9d2");
    assert_eq!(signed.token.as_deref(), Some("kkk9d7dh3k39sjv7"));
    assert_eq!(signed.timestamp, 137131201);
    assert_eq!(
        base_string(&req, signed.params()),
        "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q\
         %26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_\
         key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_m\
         ethod%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk\
         9d7dh3k39sjv7"
    );
}

/// RFC 5849 section 1.2: the photos example verifies with its client and token secrets,
/// and not with another token secret.
#[test]
fn the_rfc_hmac_sha1_example_verifies() {
    let req = Request {
        method: "GET",
        scheme: "http",
        authority: "photos.example.net",
        path: "/photos",
        query: Some("file=vacation.jpg&size=original"),
        authorization: Some(
            "OAuth realm=\"Photos\", oauth_consumer_key=\"dpf43f3p2l4k3l03\", \
             oauth_token=\"nnch734d00sl2jdk\", oauth_signature_method=\"HMAC-SHA1\", \
             oauth_timestamp=\"137131202\", oauth_nonce=\"chapoH\", \
             oauth_signature=\"MdpQcU8iPSUjWoN%2FUDMsK2sui9I%3D\"",
        ),
        form: None,
    };
    let signed = parse(&req).unwrap();
    let secrets = Credentials {
        consumer_secret: "kd94hf93k423kf44",
        token_secret: "pfkkdhi9sl3r4s00",
        rsa: None,
    };
    verify(&req, &signed, &secrets, false).unwrap();
    let wrong = Credentials {
        token_secret: "pfkkdhi9sl3r4s01",
        ..secrets
    };
    assert_eq!(verify(&req, &signed, &wrong, false), Err(Error::BadSignature));
}

fn vectors() -> Vec<Value> {
    let path = format!("{}/tests/oauth1/vectors.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn request_of(v: &Value) -> Request<'_> {
    Request {
        method: v["method"].as_str().unwrap(),
        scheme: v["scheme"].as_str().unwrap(),
        authority: v["authority"].as_str().unwrap(),
        path: v["path"].as_str().unwrap(),
        query: v["query"].as_str(),
        authorization: v["authorization"].as_str(),
        form: v["form"].as_str().map(str::as_bytes),
    }
}

/// Every request oauthlib signed (each method; header, query and body transport; duplicates,
/// `+`, escapes, a non-default port, UTF-8) verifies, and fails once anything signed changes.
#[test]
fn requests_signed_by_oauthlib_verify() {
    let rsa = key("rsa2048-pkcs1.pub");
    for v in vectors() {
        let name = v["name"].as_str().unwrap();
        let req = request_of(&v);
        let secrets = Credentials {
            consumer_secret: v["consumer_secret"].as_str().unwrap(),
            token_secret: v["token_secret"].as_str().unwrap(),
            rsa: Some(&rsa),
        };
        let signed = parse(&req).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(signed.consumer_key, v["consumer_key"].as_str().unwrap(), "{name}");
        assert_eq!(signed.method.name(), v["signature_method"].as_str().unwrap(), "{name}");
        verify(&req, &signed, &secrets, true).unwrap_or_else(|e| panic!("{name}: {e}"));

        // A changed method, path, authority or query, or another client secret, is refused.
        let plaintext = signed.method == SignatureMethod::Plaintext;
        for (what, changed) in [
            ("method", Request { method: "PATCH", ..req }),
            ("path", Request { path: "/other", ..req }),
            (
                "authority",
                Request {
                    authority: "evil.example",
                    ..req
                },
            ),
            (
                "query",
                Request {
                    query: Some("added=1"),
                    ..req
                },
            ),
        ] {
            let outcome = parse(&changed).and_then(|s| verify(&changed, &s, &secrets, true));
            if plaintext {
                assert!(outcome.is_ok(), "{name}: PLAINTEXT signs no part of the request");
            } else {
                assert!(outcome.is_err(), "{name}: a changed {what} still verifies");
            }
        }
        if signed.method != SignatureMethod::RsaSha1 {
            let wrong = Credentials {
                consumer_secret: "another secret",
                ..secrets
            };
            assert_eq!(verify(&req, &signed, &wrong, true), Err(Error::BadSignature), "{name}");
        }
    }
}

/// The client side agrees with oauthlib: the signature this crate makes for a vector's
/// request, timestamp and nonce is the one oauthlib made (HMAC is deterministic; RSA-SHA1 is
/// only verified).
#[test]
fn signing_agrees_with_oauthlib() {
    for v in vectors() {
        let name = v["name"].as_str().unwrap();
        let Some(header) = v["authorization"].as_str() else {
            continue;
        };
        let req = Request {
            authorization: None,
            ..request_of(&v)
        };
        let theirs = Request {
            authorization: Some(header),
            ..req
        };
        let signed = parse(&theirs).unwrap();
        if signed.method == SignatureMethod::RsaSha1 {
            continue;
        }
        let secrets = Credentials {
            consumer_secret: v["consumer_secret"].as_str().unwrap(),
            token_secret: v["token_secret"].as_str().unwrap(),
            rsa: None,
        };
        let ours = oauth1::authorization_header(
            &req,
            &signed.consumer_key,
            signed.token.as_deref(),
            signed.method,
            signed.timestamp,
            &signed.nonce,
            &secrets,
        )
        .unwrap();
        let signature_of = |h: &str| {
            h.split(',')
                .find_map(|p| p.trim().strip_prefix("oauth_signature=").map(str::to_owned))
                .unwrap()
        };
        assert_eq!(signature_of(&ours), signature_of(header), "{name}");
    }
}

#[test]
fn plaintext_only_over_tls() {
    let v = vectors()
        .into_iter()
        .find(|v| v["signature_method"] == "PLAINTEXT")
        .unwrap();
    let req = request_of(&v);
    let secrets = Credentials {
        consumer_secret: v["consumer_secret"].as_str().unwrap(),
        token_secret: v["token_secret"].as_str().unwrap(),
        rsa: None,
    };
    let signed = parse(&req).unwrap();
    verify(&req, &signed, &secrets, true).unwrap();
    assert!(matches!(
        verify(&req, &signed, &secrets, false),
        Err(Error::AlgorithmNotAllowed(_))
    ));
}

fn header_request(authorization: &str) -> Request<'_> {
    Request {
        method: "GET",
        scheme: "https",
        authority: "api.example.com",
        path: "/",
        query: None,
        authorization: Some(authorization),
        form: None,
    }
}

const GOOD: &str = "oauth_consumer_key=\"k\", oauth_signature_method=\"HMAC-SHA1\", \
                    oauth_timestamp=\"1700000000\", oauth_nonce=\"n\", oauth_signature=\"c2ln\"";

/// Malformed protocol parameters are refused with an error naming the parameter, before any
/// signature is computed.
#[test]
fn malformed_parameters_are_refused() {
    assert!(parse(&header_request(&format!("OAuth {GOOD}"))).is_ok());
    let cases = [
        // A protocol parameter twice: in the header, and in the header and the query.
        (
            format!("OAuth {GOOD}, oauth_nonce=\"m\""),
            None,
            "oauth_nonce appears more than once",
        ),
        (
            format!("OAuth {GOOD}"),
            Some("oauth_nonce=m"),
            "oauth_nonce appears more than once",
        ),
        (
            GOOD.replace(", oauth_nonce=\"n\"", "")
                .replace("oauth_consumer", "OAuth oauth_consumer"),
            None,
            "oauth_nonce is missing",
        ),
        (
            format!("OAuth {}", GOOD.replace("1700000000", "-5")),
            None,
            "oauth_timestamp",
        ),
        (
            format!("OAuth {}", GOOD.replace("1700000000", "")),
            None,
            "oauth_timestamp",
        ),
        (
            format!("OAuth {}", GOOD.replace("HMAC-SHA1", "HMAC-MD5")),
            None,
            "HMAC-MD5",
        ),
        (
            format!("OAuth {}", GOOD.replace("HMAC-SHA1", "hmac-sha1")),
            None,
            "hmac-sha1",
        ),
        (format!("OAuth {GOOD}, oauth_version=\"2.0\""), None, "oauth_version"),
        (
            format!("OAuth {}", GOOD.replace("\"n\"", "\"%zz\"")),
            None,
            "percent escape",
        ),
        (
            format!("OAuth {}", GOOD.replace("\"n\"", "\"%+1\"")),
            None,
            "percent escape",
        ),
        (format!("OAuth {}", GOOD.replace("\"n\"", "n")), None, "quoted string"),
        (format!("OAuth {}", GOOD.replace("\"n\"", "\"%FF\"")), None, "UTF-8"),
        ("Bearer abc".to_owned(), None, "oauth_consumer_key is missing"),
    ];
    for (header, query, expected) in cases {
        let req = Request {
            query,
            ..header_request(&header)
        };
        let error = parse(&req).expect_err(&header).to_string();
        assert!(error.contains(expected), "{header:?} {query:?}: {error}");
    }
    // A bound on the parameters read.
    let many: String = (0..300).map(|i| format!("p{i}=1&")).collect();
    let header = format!("OAuth {GOOD}");
    let req = Request {
        query: Some(&many),
        ..header_request(&header)
    };
    assert!(parse(&req).unwrap_err().to_string().contains("more than 256"));
}

/// Section 3.6 encoding and 3.4.1.2 base URIs: default ports dropped, others kept, scheme and
/// host lower-cased, the path as sent.
#[test]
fn encoding_and_base_uri() {
    assert_eq!(encode("Ladies + Gentlemen"), "Ladies%20%2B%20Gentlemen");
    assert_eq!(encode("An encoded string!"), "An%20encoded%20string%21");
    assert_eq!(encode("Dogs, Cats & Mice"), "Dogs%2C%20Cats%20%26%20Mice");
    assert_eq!(encode("☃"), "%E2%98%83");
    assert_eq!(encode("-._~azAZ09"), "-._~azAZ09");
    let base = |scheme, authority, path| {
        let req = Request {
            scheme,
            authority,
            path,
            ..header_request("")
        };
        base_string(&req, &[])
    };
    assert_eq!(
        base("HTTPS", "Api.Example.com:443", "/A%20b"),
        "GET&https%3A%2F%2Fapi.example.com%2FA%2520b&"
    );
    assert_eq!(
        base("http", "api.example.com:8080", ""),
        "GET&http%3A%2F%2Fapi.example.com%3A8080%2F&"
    );
    assert_eq!(
        base("https", "[::1]:8443", "/"),
        "GET&https%3A%2F%2F%5B%3A%3A1%5D%3A8443%2F&"
    );
    assert_eq!(base("https", "[::1]", "/"), "GET&https%3A%2F%2F%5B%3A%3A1%5D%2F&");
}

/// The replay key separates clients, tokens, nonces and timestamps, whatever they contain.
#[test]
fn replay_keys_do_not_collide() {
    let signed = |header: &str| parse(&header_request(header)).unwrap().replay_key();
    let a = signed(&format!("OAuth {GOOD}"));
    let b = signed(&format!("OAuth {}", GOOD.replace("\"n\"", "\"n&1700000000\"")));
    let c = signed(&format!("OAuth {GOOD}, oauth_token=\"t\""));
    let d = signed(&format!("OAuth {}", GOOD.replace("1700000000", "1700000001")));
    assert_eq!(a, signed(&format!("OAuth {GOOD}")));
    for other in [&b, &c, &d] {
        assert_ne!(&a, other);
    }
    // Not a credential: the key carries no signature.
    assert!(!a.contains("c2ln"));
}
