//! OAuth1 profiles through the engine: requests signed by oauthlib (every method and
//! transport) admitted as their consumer, then refused as replays; what must be refused.

use std::sync::Arc;

use http::HeaderMap;
use portcullis_config::{Loaded, SecretMaterial, SidecarConfig};
use portcullis_signatures::oauth1::{self, Credentials, Request, SignatureMethod};
use serde_json::{Value, json};

use crate::{DenialKind, Engine, InMemoryLimiter, Listener, Outcome, RequestView};

const NOW: u64 = 1_764_000_000;
const SECRET: &str = "consumer s3cret";
const TOKEN_SECRET: &str = "token s3cret";

/// An engine with OAuth1 profile `partners` (its `extra` settings) on route `api` (every
/// path), consumers and tokens from `secrets`.
fn engine(extra: Value, secrets: Value) -> Engine {
    let mut auth = json!({"type": "OAuth1", "timestampWindowSeconds": 300});
    for (k, v) in extra.as_object().unwrap() {
        auth[k] = v.clone();
    }
    let config = json!({"schemaVersion": 1, "generation": "g", "namespace": "demo",
        "profiles": [{"name": "partners", "auth": auth}],
        "routes": [{"name": "api", "pathPrefix": "/", "profiles": ["partners"], "backend": {"type": "Local", "port": 8080}}]});
    let secrets = json!({"schemaVersion": 1, "generation": "g", "profiles": {"partners": secrets}});
    let loaded = Loaded {
        config: serde_json::from_value::<SidecarConfig>(config).unwrap(),
        secrets: serde_json::from_value::<SecretMaterial>(secrets).unwrap(),
    };
    Engine::compile(&loaded, Arc::new(InMemoryLimiter::new())).unwrap()
}

/// One request as sent.
struct Call {
    method: &'static str,
    https: bool,
    authority: String,
    path: String,
    query: Option<String>,
    form: Option<Vec<u8>>,
    headers: HeaderMap,
}

impl Call {
    fn get(path_and_query: &str) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (path_and_query.to_owned(), None),
        };
        Self {
            method: "GET",
            https: false,
            authority: "api.example.com".into(),
            path,
            query,
            form: None,
            headers: HeaderMap::new(),
        }
    }

    fn request(&self) -> Request<'_> {
        Request {
            method: self.method,
            scheme: if self.https { "https" } else { "http" },
            authority: &self.authority,
            path: &self.path,
            query: self.query.as_deref(),
            authorization: None,
            form: self.form.as_deref(),
        }
    }

    /// Signed in an `Authorization` header by `consumer` (with `token`) at `ts`.
    fn signed(mut self, consumer: &str, token: Option<&str>, method: SignatureMethod, ts: u64, nonce: &str) -> Self {
        let secrets = Credentials {
            consumer_secret: SECRET,
            token_secret: if token.is_some() { TOKEN_SECRET } else { "" },
            rsa: None,
        };
        let header =
            oauth1::authorization_header(&self.request(), consumer, token, method, ts, nonce, &secrets).unwrap();
        self.headers.insert("authorization", header.parse().unwrap());
        self
    }

    fn view(&self) -> RequestView<'_> {
        let host = self.authority.split(':').next().unwrap();
        RequestView {
            method: self.method,
            host: Some(host),
            authority: Some(&self.authority),
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            peer: "10.1.2.3".parse().unwrap(),
            tls: self.https,
            listener: Listener::Inbound,
            client_cert: None,
            form: self.form.as_deref(),
        }
    }
}

/// `Ok(identity)` or `Err((status, reason))` of deciding `call` at `now`.
fn decide(e: &Engine, call: &Call, now: u64) -> Result<String, (u16, String)> {
    match e.decide(&call.view(), now * 1000) {
        Outcome::Allow(a) => Ok(a.identity.into_owned()),
        Outcome::Deny(d) => {
            let status = match d.kind {
                DenialKind::Unauthorized { challenges } => {
                    assert_eq!(challenges, ["OAuth realm=\"api\"".to_string()]);
                    401
                }
                DenialKind::Forbidden => 403,
                other => panic!("{other:?}"),
            };
            Err((status, d.reason.to_owned()))
        }
        other => panic!("{other:?}"),
    }
}

fn consumers() -> Value {
    json!({"oauth1Consumers": {"partner-a": SECRET, "partner-b": SECRET},
           "oauth1Tokens": {"tok-a": {"consumerKey": "partner-a", "secret": TOKEN_SECRET}}})
}

#[test]
fn signed_calls_are_admitted_as_their_consumer_once() {
    let e = engine(json!({}), consumers());
    let call = Call::get("/v1/items?id=7&id=8").signed("partner-a", None, SignatureMethod::HmacSha1, NOW, "n1");
    assert_eq!(decide(&e, &call, NOW), Ok("partner-a".into()));
    assert_eq!(decide(&e, &call, NOW + 1), Err((401, "signature replayed".into())));
    // With token credentials, HMAC-SHA256.
    let call = Call::get("/v1/items").signed("partner-a", Some("tok-a"), SignatureMethod::HmacSha256, NOW, "n2");
    assert_eq!(decide(&e, &call, NOW), Ok("partner-a".into()));
    // The same nonce at another timestamp is another request (section 3.3).
    let call = Call::get("/v1/items?id=7&id=8").signed("partner-a", None, SignatureMethod::HmacSha1, NOW + 1, "n1");
    assert_eq!(decide(&e, &call, NOW + 1), Ok("partner-a".into()));
}

#[test]
fn what_was_signed_cannot_change() {
    let e = engine(json!({}), consumers());
    let signed = Call::get("/v1/items?id=7").signed("partner-a", None, SignatureMethod::HmacSha1, NOW, "n1");
    let refused = |mut call: Call, change: fn(&mut Call)| {
        change(&mut call);
        decide(&e, &call, NOW)
    };
    let bad = Err((401, "signature does not verify".into()));
    let again = || Call::get("/v1/items?id=7").signed("partner-a", None, SignatureMethod::HmacSha1, NOW, "n1");
    assert_eq!(refused(again(), |c| c.query = Some("id=8".into())), bad);
    assert_eq!(refused(again(), |c| c.query = Some("id=7&id=8".into())), bad);
    assert_eq!(refused(again(), |c| c.path = "/v1/other".into()), bad);
    assert_eq!(refused(again(), |c| c.method = "DELETE"), bad);
    assert_eq!(refused(again(), |c| c.authority = "api.example.com:8080".into()), bad);
    assert_eq!(refused(again(), |c| c.https = true), bad);
    // None of those used the signature up.
    assert_eq!(decide(&e, &signed, NOW), Ok("partner-a".into()));
}

#[test]
fn old_future_foreign_and_unknown_signatures_are_refused() {
    let e = engine(json!({}), consumers());
    let at = |ts: u64, nonce: &str| Call::get("/x").signed("partner-a", None, SignatureMethod::HmacSha1, ts, nonce);
    let window = Err((401, "oauth_timestamp outside the allowed window".into()));
    assert_eq!(decide(&e, &at(NOW - 301, "old"), NOW), window);
    assert_eq!(decide(&e, &at(NOW + 301, "future"), NOW), window);
    assert_eq!(decide(&e, &at(NOW - 300, "edge"), NOW), Ok("partner-a".into()));
    let unknown = Call::get("/x").signed("partner-z", None, SignatureMethod::HmacSha1, NOW, "n");
    assert_eq!(decide(&e, &unknown, NOW), Err((401, "unknown consumer key".into())));
    // A token belongs to its consumer: partner-b cannot sign with partner-a's.
    let foreign = Call::get("/x").signed("partner-b", Some("tok-a"), SignatureMethod::HmacSha1, NOW, "n");
    assert_eq!(decide(&e, &foreign, NOW), Err((401, "unknown token".into())));
    let forged = Call::get("/x").signed("partner-a", Some("tok-z"), SignatureMethod::HmacSha1, NOW, "n");
    assert_eq!(decide(&e, &forged, NOW), Err((401, "unknown token".into())));
    // No OAuth parameters at all: no credentials, and the OAuth challenge.
    assert_eq!(
        decide(&e, &Call::get("/x"), NOW),
        Err((401, "no OAuth 1.0a signature".into()))
    );
    // Two Authorization headers: a bad request, whichever would verify.
    let mut twice = at(NOW, "twice");
    twice.headers.append("authorization", "Basic YTpi".parse().unwrap());
    assert!(matches!(
        e.decide(&twice.view(), NOW * 1000),
        Outcome::BadRequest { .. }
    ));
}

#[test]
fn tokens_are_required_when_the_profile_says_so() {
    let e = engine(json!({"requireToken": true}), consumers());
    let two_legged = Call::get("/x").signed("partner-a", None, SignatureMethod::HmacSha1, NOW, "n");
    assert_eq!(
        decide(&e, &two_legged, NOW),
        Err((401, "token credentials required".into()))
    );
    let three_legged = Call::get("/x").signed("partner-a", Some("tok-a"), SignatureMethod::HmacSha1, NOW, "n");
    assert_eq!(decide(&e, &three_legged, NOW), Ok("partner-a".into()));
}

#[test]
fn plaintext_only_when_listed_and_over_https() {
    let plaintext = |https: bool| {
        let mut call = Call::get("/x");
        call.https = https;
        call.signed(
            "partner-a",
            Some("tok-a"),
            SignatureMethod::Plaintext,
            NOW,
            &format!("p{https}"),
        )
    };
    let default = engine(json!({}), consumers());
    assert_eq!(
        decide(&default, &plaintext(true), NOW),
        Err((401, "signature method not allowed".into()))
    );
    let listed = engine(json!({"signatureMethods": ["PLAINTEXT"]}), consumers());
    assert_eq!(decide(&listed, &plaintext(true), NOW), Ok("partner-a".into()));
    assert_eq!(
        decide(&listed, &plaintext(false), NOW),
        Err((401, "PLAINTEXT signature over plain HTTP".into()))
    );
    // ... and the listed methods only.
    let hmac = Call::get("/x").signed("partner-a", None, SignatureMethod::HmacSha1, NOW, "h");
    assert_eq!(
        decide(&listed, &hmac, NOW),
        Err((401, "signature method not allowed".into()))
    );
}

#[test]
fn a_signed_form_body_is_read_before_deciding() {
    let e = engine(json!({}), consumers());
    let mut call = Call::get("/orders");
    call.method = "POST";
    call.headers.insert(
        "content-type",
        "application/x-www-form-urlencoded; charset=utf-8".parse().unwrap(),
    );
    call.form = Some(b"item=42&qty=1".to_vec());
    let call = call.signed("partner-a", None, SignatureMethod::HmacSha1, NOW, "f1");
    assert_eq!(e.form_wanted(&call.view()), Some("api"));
    assert_eq!(decide(&e, &call, NOW), Ok("partner-a".into()));
    // The body is signed: another quantity does not verify.
    let mut changed = Call::get("/orders");
    changed.method = "POST";
    changed.headers = call.headers.clone();
    changed.form = Some(b"item=42&qty=100".to_vec());
    assert_eq!(
        decide(&e, &changed, NOW),
        Err((401, "signature does not verify".into()))
    );
    // Another media type (or two Content-Type headers) is not a signed form.
    let mut json_body = Call::get("/orders");
    json_body
        .headers
        .insert("content-type", "application/json".parse().unwrap());
    assert_eq!(e.form_wanted(&json_body.view()), None);
    json_body
        .headers
        .insert("content-type", "application/x-www-form-urlencoded".parse().unwrap());
    json_body
        .headers
        .append("content-type", "application/json".parse().unwrap());
    assert_eq!(e.form_wanted(&json_body.view()), None);
    // A profile of another type never asks for the body.
    let basic = Engine::compile(
        &Loaded {
            config: serde_json::from_value(json!({"schemaVersion": 1, "generation": "g", "namespace": "demo",
                "profiles": [{"name": "b", "auth": {"type": "Basic"}}],
                "routes": [{"name": "api", "pathPrefix": "/", "profiles": ["b"], "backend": {"type": "Local", "port": 8080}}]}))
            .unwrap(),
            secrets: serde_json::from_value(json!({"schemaVersion": 1, "generation": "g",
                "profiles": {"b": {"basic": {"username": "u", "password": "p"}}}}))
            .unwrap(),
        },
        Arc::new(InMemoryLimiter::new()),
    )
    .unwrap();
    assert!(!basic.reads_forms());
    assert_eq!(basic.form_wanted(&call.view()), None);
}

/// Every request oauthlib signed (`portcullis-signatures`' vectors: each method, header,
/// query and body transport, RSA-SHA1 with a PEM public key) is admitted as its consumer, once.
#[test]
fn requests_signed_by_oauthlib_are_admitted_once() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../signatures/tests");
    let vectors: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/oauth1/vectors.json")).unwrap()).unwrap();
    let rsa = std::fs::read_to_string(format!("{dir}/keys/rsa2048-pkcs1.pub")).unwrap();
    let mut consumers = serde_json::Map::new();
    let mut tokens = serde_json::Map::new();
    let mut calls = Vec::new();
    for v in &vectors {
        let s = |k: &str| v[k].as_str().map(str::to_owned);
        let method: &'static str = match v["method"].as_str().unwrap() {
            "GET" => "GET",
            "POST" => "POST",
            "PUT" => "PUT",
            "DELETE" => "DELETE",
            other => panic!("{other}"),
        };
        let mut call = Call {
            method,
            https: v["scheme"] == "https",
            authority: s("authority").unwrap(),
            path: s("path").unwrap(),
            query: s("query"),
            form: s("form").map(String::into_bytes),
            headers: HeaderMap::new(),
        };
        if let Some(a) = s("authorization") {
            call.headers.insert("authorization", a.parse().unwrap());
        }
        if call.form.is_some() {
            call.headers
                .insert("content-type", "application/x-www-form-urlencoded".parse().unwrap());
        }
        let mut req = call.request();
        req.authorization = v["authorization"].as_str();
        let parsed = oauth1::parse(&req).unwrap();
        let consumer = v["consumer_key"].as_str().unwrap();
        let secret = match v["signature_method"].as_str().unwrap() {
            "RSA-SHA1" => rsa.clone(),
            _ => s("consumer_secret").unwrap(),
        };
        consumers.insert(consumer.into(), json!(secret));
        if let Some(token) = &parsed.token {
            tokens.insert(
                token.clone(),
                json!({"consumerKey": consumer, "secret": v["token_secret"]}),
            );
        }
        calls.push((call, consumer.to_owned(), parsed.timestamp));
    }
    let e = engine(
        json!({"signatureMethods": ["HMAC-SHA1", "HMAC-SHA256", "RSA-SHA1", "PLAINTEXT"]}),
        json!({"oauth1Consumers": consumers, "oauth1Tokens": tokens}),
    );
    for (call, consumer, ts) in &calls {
        assert_eq!(
            decide(&e, call, *ts),
            Ok(consumer.clone()),
            "{} {}",
            call.method,
            call.path
        );
        assert_eq!(
            decide(&e, call, *ts),
            Err((401, "signature replayed".into())),
            "{} {}",
            call.method,
            call.path
        );
    }
}

#[test]
fn bad_consumer_material_is_refused_at_compile_time() {
    let compile = |secrets: Value| {
        let config = json!({"schemaVersion": 1, "generation": "g", "namespace": "demo",
            "profiles": [{"name": "partners", "auth": {"type": "OAuth1", "timestampWindowSeconds": 300}}],
            "routes": []});
        let loaded = Loaded {
            config: serde_json::from_value::<SidecarConfig>(config).unwrap(),
            secrets: serde_json::from_value::<SecretMaterial>(
                json!({"schemaVersion": 1, "generation": "g", "profiles": {"partners": secrets}}),
            )
            .unwrap(),
        };
        Engine::compile(&loaded, Arc::new(InMemoryLimiter::new()))
            .err()
            .map(|e| e.to_string())
    };
    let orphan = compile(json!({"oauth1Consumers": {"a": "s"},
        "oauth1Tokens": {"t": {"consumerKey": "b", "secret": "x"}}}))
    .unwrap();
    assert!(orphan.contains("\"b\"") && !orphan.contains("\"x\""), "{orphan}");
    let pem =
        compile(json!({"oauth1Consumers": {"a": "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n"}}))
            .unwrap();
    assert!(pem.contains("\"a\"") && !pem.contains("not a key"), "{pem}");
    assert!(compile(json!({"oauth1Consumers": {"a": "s"}})).is_none());
}

#[test]
fn a_nonce_is_remembered_through_the_last_second_its_timestamp_is_admitted() {
    let e = engine(json!({}), consumers());
    let call = Call::get("/x").signed("partner-a", None, SignatureMethod::HmacSha1, NOW, "edge");
    assert_eq!(decide(&e, &call, NOW), Ok("partner-a".into()));
    // `NOW + 300` is still within the window: the nonce must still be known.
    assert_eq!(decide(&e, &call, NOW + 300), Err((401, "signature replayed".into())));
    assert_eq!(
        decide(&e, &call, NOW + 301),
        Err((401, "oauth_timestamp outside the allowed window".into()))
    );
}

#[test]
fn a_form_among_other_content_types_is_refused_and_other_schemes_do_not_ride_along() {
    let e = engine(json!({}), consumers());
    let signed = |ct: &[&str]| {
        let mut call = Call::get("/orders");
        call.method = "POST";
        for t in ct {
            call.headers.append("content-type", t.parse().unwrap());
        }
        call.signed(
            "partner-a",
            None,
            SignatureMethod::HmacSha1,
            NOW,
            &format!("ct{}", ct.len()),
        )
    };
    for types in [
        &["application/x-www-form-urlencoded", "application/json"][..],
        &["application/json", "application/x-www-form-urlencoded"][..],
        &["application/json, application/x-www-form-urlencoded"][..],
        &["application/x-www-form-urlencoded, text/plain"][..],
    ] {
        let call = signed(types);
        assert_eq!(e.form_wanted(&call.view()), None, "{types:?}");
        assert_eq!(
            decide(&e, &call, NOW),
            Err((401, "ambiguous Content-Type for a form body".into())),
            "{types:?}"
        );
    }
    // A Basic header beside a signature in the query: refused, not passed on unchecked.
    let mut call = Call::get("/x");
    let header = {
        let c = Call::get("/x").signed("partner-a", None, SignatureMethod::HmacSha1, NOW, "q");
        c.headers["authorization"].to_str().unwrap().to_owned()
    };
    let params = header
        .strip_prefix("OAuth ")
        .unwrap()
        .replace(", ", "&")
        .replace('"', "");
    call.query = Some(params.clone());
    assert_eq!(decide(&e, &call, NOW), Ok("partner-a".into()));
    let mut with_basic = Call::get("/x");
    with_basic.query = Some(params.replace("oauth_nonce=q", "oauth_nonce=q2"));
    with_basic
        .headers
        .insert("authorization", "Basic YTpi".parse().unwrap());
    assert_eq!(
        decide(&e, &with_basic, NOW),
        Err((401, "Authorization header of another scheme".into()))
    );
    // A percent-encoded name of the consumer key still counts as an OAuth request.
    let mut encoded = Call::get("/x");
    encoded.query = Some(params.replace("oauth_consumer_key", "oauth%5Fconsumer_key"));
    assert_ne!(decide(&e, &encoded, NOW), Err((401, "no OAuth 1.0a signature".into())));
}
