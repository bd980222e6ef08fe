//! Bearer JWT and Builtin token tests, through the engine.

use std::sync::Arc;

use base64::Engine as _;
use http::HeaderMap;
use portcullis_config::{Loaded, SecretMaterial, SidecarConfig};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use serde_json::{Value, json};

use super::B64;
use crate::{Denial, DenialKind, Engine, InMemoryLimiter, Listener, Outcome, RequestView};

/// The Builtin provider's token signing key in these tests (EC P-256).
const SIGNING_PEM: &str = include_str!("../../../signatures/tests/keys/test-key-ecc-p256.key");

const NOW: u64 = 1_764_000_000;
const JWKS: &str = "https://idp.example.com/jwks";

pub(super) struct Signer {
    kid: String,
    ed: Option<Ed25519KeyPair>,
    ec: Option<EcdsaKeyPair>,
}

impl Signer {
    pub(super) fn ed25519(kid: &str) -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let ed = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Self {
            kid: kid.into(),
            ed: Some(ed),
            ec: None,
        }
    }
    pub(super) fn es256(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        Self {
            kid: kid.into(),
            ed: None,
            ec: Some(ec),
        }
    }
    pub(super) fn jwk(&self) -> Value {
        match (&self.ed, &self.ec) {
            (Some(ed), _) => {
                json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "x": B64.encode(ed.public_key().as_ref())})
            }
            (_, Some(ec)) => {
                let p = ec.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "alg": "ES256", "use": "sig",
                       "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..65])})
            }
            _ => unreachable!(),
        }
    }
    pub(super) fn alg(&self) -> &'static str {
        if self.ed.is_some() { "EdDSA" } else { "ES256" }
    }
    pub(super) fn token_with(&self, header: Value, claims: &Value) -> String {
        let signed = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let sig = match (&self.ed, &self.ec) {
            (Some(ed), _) => ed.sign(signed.as_bytes()).as_ref().to_vec(),
            (_, Some(ec)) => ec
                .sign(&SystemRandom::new(), signed.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            _ => unreachable!(),
        };
        format!("{signed}.{}", B64.encode(sig))
    }
    pub(super) fn token(&self, claims: &Value) -> String {
        self.token_with(json!({"alg": self.alg(), "kid": self.kid, "typ": "at+jwt"}), claims)
    }
}

fn claims() -> Value {
    json!({"iss": "https://idp.example.com", "sub": "alice", "aud": ["finance-api", "other"],
           "exp": NOW + 300, "iat": NOW, "scope": "read write"})
}

fn engine(oauth2: Value, secrets: Value) -> Engine {
    engine_in("demo", oauth2, secrets)
}

fn engine_in(namespace: &str, oauth2: Value, secrets: Value) -> Engine {
    engine_on(namespace, oauth2, secrets, Arc::new(InMemoryLimiter::new()))
}

/// An engine counting with `limiter` (two engines on one limiter: a reload).
fn engine_on(namespace: &str, oauth2: Value, secrets: Value, limiter: Arc<InMemoryLimiter>) -> Engine {
    let mut auth = oauth2;
    auth["type"] = json!("OAuth2");
    let config = json!({"schemaVersion": 1, "generation": "g", "namespace": namespace,
        "profiles": [{"name": "idp", "auth": auth}],
        "routes": [{"name": "finance", "pathPrefix": "/api", "profiles": ["idp"],
                    "backend": {"type": "Local", "port": 8080}}]});
    let secrets = json!({"schemaVersion": 1, "generation": "g", "profiles": {"idp": secrets}});
    let loaded = Loaded {
        config: serde_json::from_value::<SidecarConfig>(config).unwrap(),
        secrets: serde_json::from_value::<SecretMaterial>(secrets).unwrap(),
    };
    Engine::compile(&loaded, limiter).unwrap()
}

fn jwt_engine(keys: &[&Signer]) -> Engine {
    let e = engine(
        json!({"provider": "Generic", "issuer": "https://idp.example.com", "jwksUri": JWKS,
               "audiences": ["finance-api"], "requiredScopes": ["read"]}),
        json!({}),
    );
    feed(&e, keys);
    e
}

fn feed(e: &Engine, keys: &[&Signer]) {
    let doc = json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
    let (uri, slot) = e.jwks().next().unwrap();
    assert_eq!(uri, JWKS);
    slot.store(super::JwkSet::from_json(doc.to_string().as_bytes()).unwrap());
}

pub(super) fn request(method: &'static str, path: &'static str, headers: &HeaderMap) -> RequestView<'static> {
    let headers: &'static HeaderMap = Box::leak(Box::new(headers.clone()));
    RequestView {
        method,
        host: Some("api.example.com"),
        authority: None,
        path,
        query: None,
        headers,
        peer: "10.0.0.1".parse().unwrap(),
        tls: false,
        listener: Listener::Inbound,
        client_cert: None,
        form: None,
    }
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    h
}

/// Status, identity or reason, and the `WWW-Authenticate` challenges.
fn decide(e: &Engine, token: &str, now: u64) -> (u16, String, Vec<String>) {
    let req = request("GET", "/api/x", &bearer(token));
    match e.decide(&req, now * 1000) {
        Outcome::Allow(a) => (200, a.identity.into_owned(), vec![]),
        Outcome::Deny(d) => match d.kind {
            DenialKind::Unauthorized { challenges } => (401, d.reason.into(), challenges.to_vec()),
            DenialKind::InsufficientScope { challenges } => (403, d.reason.into(), challenges.to_vec()),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn valid_tokens_admit_their_subject() {
    let ed = Signer::ed25519("k1");
    let ec = Signer::es256("k2");
    let e = jwt_engine(&[&ed, &ec]);
    assert_eq!(decide(&e, &ed.token(&claims()), NOW), (200, "alice".into(), vec![]));
    assert_eq!(decide(&e, &ec.token(&claims()), NOW).0, 200);
    // Without sub: client_id, then azp.
    let mut c = claims();
    c.as_object_mut().unwrap().remove("sub");
    c["azp"] = json!("app-7");
    assert_eq!(decide(&e, &ed.token(&c), NOW).1, "app-7");
    c["client_id"] = json!("app-8");
    assert_eq!(decide(&e, &ed.token(&c), NOW).1, "app-8");
    // scp as a list; aud as a string; no kid.
    let mut c = claims();
    c.as_object_mut().unwrap().remove("scope");
    c["scp"] = json!(["read"]);
    c["aud"] = json!("finance-api");
    let t = ed.token_with(json!({"alg": "EdDSA"}), &c);
    assert_eq!(decide(&e, &t, NOW).0, 200);
}

#[test]
fn expired_and_early_tokens_are_refused_with_invalid_token() {
    let ed = Signer::ed25519("k1");
    let e = jwt_engine(&[&ed]);
    let t = ed.token(&claims());
    assert_eq!(decide(&e, &t, NOW + 300 + 59).0, 200, "skew");
    let (status, reason, challenges) = decide(&e, &t, NOW + 300 + 61);
    assert_eq!((status, reason.as_str()), (401, "token expired"));
    assert_eq!(challenges, ["Bearer realm=\"finance\", error=\"invalid_token\""]);
    let mut c = claims();
    c["nbf"] = json!(NOW + 600);
    assert_eq!(decide(&e, &ed.token(&c), NOW).1, "token not yet valid");
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(decide(&e, &ed.token(&c), NOW).1, "token has no exp");
}

#[test]
fn wrong_issuer_or_audience_is_refused() {
    let ed = Signer::ed25519("k1");
    let e = jwt_engine(&[&ed]);
    let mut c = claims();
    c["iss"] = json!("https://evil.example.com");
    assert_eq!(decide(&e, &ed.token(&c), NOW).1, "token issuer not accepted");
    let mut c = claims();
    c["aud"] = json!(["other"]);
    assert_eq!(decide(&e, &ed.token(&c), NOW).1, "token audience not accepted");
    c.as_object_mut().unwrap().remove("aud");
    assert_eq!(decide(&e, &ed.token(&c), NOW).0, 401);
}

/// Google's ID tokens may name their issuer without the scheme; that spelling is accepted
/// for Google's issuer only, and nothing else is.
#[test]
fn googles_bare_issuer_is_accepted_for_google_only() {
    let ed = Signer::ed25519("k1");
    let google = engine(
        json!({"provider": "Google", "issuer": "https://accounts.google.com", "jwksUri": JWKS,
               "audiences": ["finance-api"]}),
        json!({}),
    );
    feed(&google, &[&ed]);
    for (iss, status) in [
        ("https://accounts.google.com", 200),
        ("accounts.google.com", 200),
        ("http://accounts.google.com", 401),
        ("accounts.google.com.evil.example", 401),
    ] {
        let mut c = claims();
        c["iss"] = json!(iss);
        assert_eq!(decide(&google, &ed.token(&c), NOW).0, status, "{iss}");
    }
    let e = jwt_engine(&[&ed]);
    let mut c = claims();
    c["iss"] = json!("idp.example.com");
    assert_eq!(decide(&e, &ed.token(&c), NOW).1, "token issuer not accepted");
}

#[test]
fn a_missing_scope_is_forbidden() {
    let ed = Signer::ed25519("k1");
    let e = jwt_engine(&[&ed]);
    let mut c = claims();
    c["scope"] = json!("write");
    let (status, _, challenges) = decide(&e, &ed.token(&c), NOW);
    assert_eq!(status, 403);
    assert_eq!(
        challenges,
        ["Bearer realm=\"finance\", error=\"insufficient_scope\", scope=\"read\""]
    );
}

#[test]
fn unknown_kids_ask_for_the_keys_again() {
    let ed = Signer::ed25519("k1");
    let new = Signer::ed25519("k2");
    let e = jwt_engine(&[&ed]);
    let (_, slot) = e.jwks().next().unwrap();
    assert!(!slot.take_unknown_kid());
    assert_eq!(decide(&e, &new.token(&claims()), NOW).1, "token key id unknown");
    assert!(slot.take_unknown_kid());
    assert!(!slot.take_unknown_kid());
    feed(&e, &[&ed, &new]);
    assert_eq!(decide(&e, &new.token(&claims()), NOW).0, 200);
    // A key under another key's kid does not verify.
    let impostor = Signer::ed25519("k1");
    assert_eq!(decide(&e, &impostor.token(&claims()), NOW).1, "bad token signature");
}

#[test]
fn no_keys_fail_closed() {
    let ed = Signer::ed25519("k1");
    let e = jwt_engine(&[]);
    assert_eq!(
        decide(&e, &ed.token(&claims()), NOW).1,
        "no token keys loaded (jwksUri not fetched)"
    );
}

#[test]
fn alg_none_and_hs256_with_public_keys_are_refused() {
    let ed = Signer::ed25519("k1");
    let e = jwt_engine(&[&ed]);
    let none = format!(
        "{}.{}.",
        B64.encode(json!({"alg": "none"}).to_string()),
        B64.encode(claims().to_string())
    );
    assert_eq!(decide(&e, &none, NOW).1, "token algorithm not accepted");
    // HS256 "signed" with the public key bytes (the classic confusion).
    let header = B64.encode(json!({"alg": "HS256", "kid": "k1"}).to_string());
    let signed = format!("{header}.{}", B64.encode(claims().to_string()));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, ed.ed.as_ref().unwrap().public_key().as_ref());
    let t = format!("{signed}.{}", B64.encode(ring::hmac::sign(&key, signed.as_bytes())));
    assert_eq!(decide(&e, &t, NOW).1, "token algorithm not accepted");
}

#[test]
fn tampered_tokens_are_refused() {
    let ed = Signer::ed25519("k1");
    let e = jwt_engine(&[&ed]);
    let t = ed.token(&claims());
    let parts: Vec<&str> = t.split('.').collect();
    let mut c = claims();
    c["sub"] = json!("root");
    let forged = format!("{}.{}.{}", parts[0], B64.encode(c.to_string()), parts[2]);
    assert_eq!(decide(&e, &forged, NOW).1, "bad token signature");
    assert_eq!(decide(&e, "opaque-token", NOW).1, "bearer token is not a JWT");
    // No token at all: a plain challenge.
    let req = request("GET", "/api/x", &HeaderMap::new());
    let Outcome::Deny(d) = e.decide(&req, NOW * 1000) else {
        panic!()
    };
    let DenialKind::Unauthorized { challenges } = d.kind else {
        panic!()
    };
    assert_eq!(challenges, ["Bearer realm=\"finance\""]);
}

const INTROSPECT: &str = "https://idp.example.com/introspect";

fn introspection_engine(extra: Value) -> Engine {
    let mut auth = json!({"provider": "Generic", "introspectionUrl": INTROSPECT,
        "issuer": "https://idp.example.com", "audiences": ["finance-api"], "requiredScopes": ["read"]});
    if let (Some(a), Value::Object(extra)) = (auth.as_object_mut(), extra) {
        a.extend(extra);
    }
    engine(
        auth,
        json!({"introspectionClient": {"clientId": "portcullis", "clientSecret": "intro-s3cret"}}),
    )
}

/// Asks the engine which token to introspect, and answers `response` for it.
fn answer(e: &Engine, token: &str, response: Value, now_ms: u64) {
    let headers = bearer(token);
    let req = request("GET", "/api/x", &headers);
    let wanted = e.introspection_wanted(&req, now_ms).expect("introspection wanted");
    assert_eq!(
        (wanted.route, wanted.profile, wanted.url()),
        ("finance", "idp", INTROSPECT)
    );
    assert_eq!(wanted.client_id(), "portcullis");
    assert_eq!(wanted.client_secret().expose(), "intro-s3cret");
    assert_eq!(wanted.token(), token);
    wanted.store(&response, now_ms).unwrap();
    assert!(e.introspection_wanted(&req, now_ms).is_none(), "answered");
}

fn wanted(e: &Engine, token: &str, now_ms: u64) -> bool {
    let headers = bearer(token);
    e.introspection_wanted(&request("GET", "/api/x", &headers), now_ms)
        .is_some()
}

#[test]
fn introspected_tokens_are_judged_like_jwts() {
    let e = introspection_engine(json!({}));
    let now_ms = NOW * 1000;
    // Not asked yet: the engine does no I/O and refuses.
    assert_eq!(decide(&e, "opaque-1", NOW).1, "token not introspected");
    answer(
        &e,
        "opaque-1",
        json!({"active": true, "scope": "read write", "client_id": "app-1", "sub": "alice",
               "iss": "https://idp.example.com", "aud": "finance-api", "exp": NOW + 300}),
        now_ms,
    );
    assert_eq!(decide(&e, "opaque-1", NOW), (200, "alice".into(), vec![]));
    // Without sub, the client is the caller; without exp, the answer alone counts.
    answer(
        &e,
        "opaque-2",
        json!({"active": true, "scope": "read", "client_id": "app-2", "iss": "https://idp.example.com",
               "aud": ["other", "finance-api"]}),
        now_ms,
    );
    assert_eq!(decide(&e, "opaque-2", NOW).1, "app-2");
    // Missing scope: 403 insufficient_scope, as for JWTs.
    answer(
        &e,
        "opaque-3",
        json!({"active": true, "scope": "write", "sub": "bob", "iss": "https://idp.example.com",
               "aud": "finance-api"}),
        now_ms,
    );
    let (status, reason, challenges) = decide(&e, "opaque-3", NOW);
    assert_eq!((status, reason.as_str()), (403, "token lacks a required scope"));
    assert_eq!(
        challenges,
        ["Bearer realm=\"finance\", error=\"insufficient_scope\", scope=\"read\""]
    );
    // Wrong issuer or audience, expired: 401 invalid_token.
    answer(
        &e,
        "opaque-4",
        json!({"active": true, "scope": "read", "sub": "eve", "iss": "https://evil.example.com",
               "aud": "finance-api"}),
        now_ms,
    );
    assert_eq!(decide(&e, "opaque-4", NOW).1, "token issuer not accepted");
    answer(
        &e,
        "opaque-5",
        json!({"active": true, "scope": "read", "sub": "eve", "iss": "https://idp.example.com",
               "aud": "other"}),
        now_ms,
    );
    assert_eq!(decide(&e, "opaque-5", NOW).1, "token audience not accepted");
    // Inactive: 401 "token not active", with the invalid_token challenge.
    answer(&e, "revoked", json!({"active": false}), now_ms);
    let (status, reason, challenges) = decide(&e, "revoked", NOW);
    assert_eq!((status, reason.as_str()), (401, "token not active"));
    assert_eq!(challenges, ["Bearer realm=\"finance\", error=\"invalid_token\""]);
}

#[test]
fn introspection_answers_expire_with_the_clock() {
    use super::introspection::{ACTIVE_TTL_MS, INACTIVE_TTL_MS};
    let e = introspection_engine(json!({}));
    let t0 = NOW * 1000;
    let active = json!({"active": true, "scope": "read", "sub": "alice", "iss": "https://idp.example.com",
                        "aud": "finance-api", "exp": NOW + 3600});
    answer(&e, "tok", active, t0);
    assert!(!wanted(&e, "tok", t0 + ACTIVE_TTL_MS - 1));
    assert_eq!(decide(&e, "tok", NOW + ACTIVE_TTL_MS / 1000 - 1).0, 200);
    // Past the TTL: asked again, and refused until then.
    assert!(wanted(&e, "tok", t0 + ACTIVE_TTL_MS));
    assert_eq!(
        decide(&e, "tok", NOW + ACTIVE_TTL_MS / 1000).1,
        "token not introspected"
    );
    // A token expiring sooner than the TTL is asked about again at its exp.
    let short = json!({"active": true, "scope": "read", "sub": "alice", "iss": "https://idp.example.com",
                       "aud": "finance-api", "exp": NOW + 5});
    answer(&e, "short", short, t0);
    assert!(!wanted(&e, "short", t0 + 4_999));
    assert!(wanted(&e, "short", t0 + 5_000));
    // Inactive answers are kept shorter.
    answer(&e, "revoked", json!({"active": false}), t0);
    assert!(!wanted(&e, "revoked", t0 + INACTIVE_TTL_MS - 1));
    assert!(wanted(&e, "revoked", t0 + INACTIVE_TTL_MS));
}

#[test]
fn no_introspection_on_behalf_of_a_client_outside_the_trusted_ranges() {
    let config = json!({"schemaVersion": 1, "generation": "g", "namespace": "demo",
        "profiles": [{"name": "idp", "trustedIpRanges": [{"from": "192.168.1.0", "to": "192.168.1.255"}],
                      "auth": {"type": "OAuth2", "provider": "Generic", "introspectionUrl": INTROSPECT}}],
        "routes": [{"name": "finance", "pathPrefix": "/api", "profiles": ["idp"],
                    "backend": {"type": "Local", "port": 8080}}]});
    let secrets = json!({"schemaVersion": 1, "generation": "g", "profiles": {"idp":
        {"introspectionClient": {"clientId": "portcullis", "clientSecret": "intro-s3cret"}}}});
    let loaded = Loaded {
        config: serde_json::from_value::<SidecarConfig>(config).unwrap(),
        secrets: serde_json::from_value::<SecretMaterial>(secrets).unwrap(),
    };
    let e = Engine::compile(&loaded, Arc::new(InMemoryLimiter::new())).unwrap();
    // The peer 10.0.0.1 is outside 192.168.1.0/24: the identity provider is not asked, and the
    // call is refused as any call from there would be (403: ranges come before credentials).
    assert!(!wanted(&e, "opaque", NOW * 1000));
    let req = request("GET", "/api/x", &bearer("opaque"));
    assert!(matches!(
        e.decide(&req, NOW * 1000),
        Outcome::Deny(Denial {
            kind: DenialKind::Forbidden,
            ..
        })
    ));
}

#[test]
fn introspection_is_asked_only_when_it_can_matter() {
    // No introspecting profile: never.
    let jwt = jwt_engine(&[]);
    assert!(!wanted(&jwt, "opaque", NOW * 1000));
    let e = introspection_engine(json!({}));
    // No bearer token, another route, another scheme: never.
    let none = HeaderMap::new();
    assert!(e.introspection_wanted(&request("GET", "/api/x", &none), 0).is_none());
    let headers = bearer("opaque");
    assert!(e.introspection_wanted(&request("GET", "/other", &headers), 0).is_none());
    assert!(
        e.introspection_wanted(&request("GET", "/api/../x", &headers), 0)
            .is_none()
    );
    let mut basic = HeaderMap::new();
    basic.insert("authorization", "Basic YTpi".parse().unwrap());
    assert!(e.introspection_wanted(&request("GET", "/api/x", &basic), 0).is_none());
    // Without local keys, even a JWT-shaped token is introspected.
    assert!(wanted(&e, "a.b.c", 0));
}

#[test]
fn with_a_jwks_too_jwts_are_verified_locally_and_opaque_tokens_introspected() {
    let ed = Signer::ed25519("k1");
    let e = introspection_engine(json!({"jwksUri": JWKS}));
    feed(&e, &[&ed]);
    let token = ed.token(&claims());
    assert!(!wanted(&e, &token, NOW * 1000));
    assert_eq!(decide(&e, &token, NOW), (200, "alice".into(), vec![]));
    assert!(wanted(&e, "opaque", NOW * 1000));
    answer(
        &e,
        "opaque",
        json!({"active": true, "scope": "read", "sub": "svc", "iss": "https://idp.example.com",
               "aud": "finance-api"}),
        NOW * 1000,
    );
    assert_eq!(decide(&e, "opaque", NOW).1, "svc");
}

#[test]
fn introspection_answers_outlive_reloads_and_secrets_stay_out_of_debug() {
    let limiter = Arc::new(InMemoryLimiter::new());
    let compile = || {
        let config = json!({"schemaVersion": 1, "generation": "g", "namespace": "demo",
            "profiles": [{"name": "idp", "auth": {"type": "OAuth2", "provider": "Generic",
                          "introspectionUrl": INTROSPECT}}],
            "routes": [{"name": "finance", "pathPrefix": "/api", "profiles": ["idp"],
                        "backend": {"type": "Local", "port": 8080}}]});
        let secrets = json!({"schemaVersion": 1, "generation": "g", "profiles": {"idp":
            {"introspectionClient": {"clientId": "portcullis", "clientSecret": "intro-s3cret"}}}});
        let loaded = Loaded {
            config: serde_json::from_value::<SidecarConfig>(config).unwrap(),
            secrets: serde_json::from_value::<SecretMaterial>(secrets).unwrap(),
        };
        Engine::compile(&loaded, limiter.clone()).unwrap()
    };
    let first = compile();
    let headers = bearer("opaque-secret-token");
    let req = request("GET", "/api/x", &headers);
    let wanted = first.introspection_wanted(&req, NOW * 1000).unwrap();
    let printed = format!("{wanted:?} {first:?}");
    assert!(
        !printed.contains("intro-s3cret") && !printed.contains("opaque-secret-token"),
        "{printed}"
    );
    wanted
        .store(&json!({"active": true, "sub": "alice"}), NOW * 1000)
        .unwrap();
    let second = compile();
    assert_eq!(
        decide(&second, "opaque-secret-token", NOW),
        (200, "alice".into(), vec![])
    );
}

#[test]
fn introspection_without_client_credentials_does_not_compile() {
    let config = json!({"schemaVersion": 1, "generation": "g", "namespace": "demo",
        "profiles": [{"name": "idp", "auth": {"type": "OAuth2", "provider": "Generic",
                      "introspectionUrl": INTROSPECT}}],
        "routes": [{"name": "finance", "pathPrefix": "/api", "profiles": ["idp"],
                    "backend": {"type": "Local", "port": 8080}}]});
    let loaded = Loaded {
        config: serde_json::from_value::<SidecarConfig>(config).unwrap(),
        secrets: serde_json::from_value::<SecretMaterial>(json!({"schemaVersion": 1, "generation": "g"})).unwrap(),
    };
    let err = Engine::compile(&loaded, Arc::new(InMemoryLimiter::new())).unwrap_err();
    assert!(err.to_string().contains("introspectionClient"), "{err}");
}

fn builtin() -> Engine {
    engine(
        json!({"provider": "Builtin", "builtinTokenTtlSeconds": 600, "requiredScopes": ["read"]}),
        json!({"oauth2SigningKeys": [{"name": "key-1", "pem": SIGNING_PEM}], "oauth2Clients": {"app-1": "s3cret", "app-2": "other"},
               "oauth2ClientScopes": {"app-1": ["read", "write"], "app-2": ["write"]}}),
    )
}

/// A token endpoint's answer, as a client reads it.
#[derive(Debug)]
pub(super) struct Issued {
    pub access_token: String,
    pub expires_in: u64,
    pub scope: Option<String>,
    pub refresh_token: Option<String>,
}

/// A token endpoint's refusal: its `error` and `Retry-After`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct TokenRefused {
    pub code: &'static str,
    pub retry_after: Option<u64>,
}

impl TokenRefused {
    pub fn code(&self) -> &'static str {
        self.code
    }
}

pub(super) fn random() -> crate::ProviderRandom {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 96];
    SystemRandom::new().fill(&mut bytes).unwrap();
    crate::ProviderRandom {
        jti: bytes[..16].try_into().unwrap(),
        refresh: bytes[16..48].try_into().unwrap(),
        grant: super::grants::GrantRandom {
            id: bytes[48..64].try_into().unwrap(),
            code: bytes[64..96].try_into().unwrap(),
        },
    }
}

/// The provider's answer to `method path?query` with `body`, at `now` (Unix seconds).
pub(super) fn provider_call(
    e: &Engine,
    method: &'static str,
    path: &'static str,
    query: Option<&'static str>,
    headers: &HeaderMap,
    body: &str,
    now: u64,
) -> crate::Reply {
    // Token, revocation and introspection requests are forms (as clients send them).
    let mut headers = headers.clone();
    let form_call = ["/token", "/revoke", "/introspect"].iter().any(|p| path.ends_with(p));
    if form_call && !headers.contains_key("content-type") {
        headers.insert("content-type", "application/x-www-form-urlencoded".parse().unwrap());
    }
    let headers = &headers;
    let mut req = request(method, path, headers);
    req.query = query;
    let input = crate::CallInput {
        method,
        headers,
        query,
        body,
    };
    e.provider_endpoint(&req)
        .unwrap_or_else(|| panic!("{method} {path} is no provider endpoint"))
        .serve(&input, &random(), now * 1000, now * 1000)
}

pub(super) fn token_request_at(e: &Engine, headers: &HeaderMap, body: &str, now: u64) -> Result<Issued, TokenRefused> {
    let reply = provider_call(e, "POST", "/api/oauth2/token", None, headers, body, now);
    let b = reply.body.unwrap_or(Value::Null);
    let s = |name: &str| b.get(name).and_then(Value::as_str).map(str::to_owned);
    if reply.status == 200 {
        Ok(Issued {
            access_token: s("access_token").unwrap(),
            expires_in: b["expires_in"].as_u64().unwrap(),
            scope: s("scope"),
            refresh_token: s("refresh_token"),
        })
    } else {
        // The RFC 6749 codes the provider answers with.
        const CODES: [&str; 8] = [
            "invalid_client",
            "invalid_request",
            "invalid_grant",
            "invalid_scope",
            "unsupported_grant_type",
            "unauthorized_client",
            "too_many_requests",
            "temporarily_unavailable",
        ];
        let code = s("error").unwrap();
        Err(TokenRefused {
            code: CODES
                .iter()
                .find(|c| **c == code)
                .unwrap_or_else(|| panic!("unknown error {code}")),
            retry_after: reply.retry_after_secs,
        })
    }
}

fn token_request(e: &Engine, headers: &HeaderMap, body: &str) -> Result<Issued, TokenRefused> {
    token_request_at(e, headers, body, NOW)
}

#[test]
fn builtin_issues_tokens_the_engine_accepts() {
    let e = builtin();
    let issued = token_request(
        &e,
        &HeaderMap::new(),
        "grant_type=client_credentials&client_id=app-1&client_secret=s3cret",
    )
    .unwrap();
    assert_eq!(issued.expires_in, 600);
    // No scope asked for: every scope the client may have.
    assert_eq!(issued.scope.as_deref(), Some("read write"));
    assert_eq!(
        decide(&e, &issued.access_token, NOW + 10),
        (200, "app-1".into(), vec![])
    );
    assert_eq!(decide(&e, &issued.access_token, NOW + 600 + 61).1, "token expired");
    // client_secret_basic, with a scope that lacks the required one.
    let mut h = HeaderMap::new();
    let basic = base64::engine::general_purpose::STANDARD.encode("app-2:other");
    h.insert("authorization", format!("Basic {basic}").parse().unwrap());
    let issued = token_request(&e, &h, "grant_type=client_credentials&scope=write").unwrap();
    assert_eq!(decide(&e, &issued.access_token, NOW).0, 403);
    // Another engine with the same clients accepts the token (replicas, reloads).
    assert_eq!(decide(&builtin(), &issued.access_token, NOW).0, 403);
    // With a scope taken from the client, it does not.
    let narrowed = engine(
        json!({"provider": "Builtin", "builtinTokenTtlSeconds": 600, "requiredScopes": ["read"]}),
        json!({"oauth2SigningKeys": [{"name": "key-1", "pem": SIGNING_PEM}], "oauth2Clients": {"app-1": "s3cret", "app-2": "other"},
               "oauth2ClientScopes": {"app-1": ["read", "write"]}}),
    );
    assert_eq!(
        decide(&narrowed, &issued.access_token, NOW).1,
        "token's client changed or removed"
    );
    // Nor does the same-named profile of another namespace with the same clients.
    let elsewhere = engine_in(
        "other-team",
        json!({"provider": "Builtin", "builtinTokenTtlSeconds": 600, "requiredScopes": ["read"]}),
        json!({"oauth2SigningKeys": [{"name": "key-1", "pem": SIGNING_PEM}], "oauth2Clients": {"app-1": "s3cret", "app-2": "other"},
               "oauth2ClientScopes": {"app-1": ["read", "write"], "app-2": ["write"]}}),
    );
    assert_eq!(
        decide(&elsewhere, &issued.access_token, NOW).1,
        "token's client changed or removed"
    );
    // With other secrets, it does not.
    let other = engine(
        json!({"provider": "Builtin", "builtinTokenTtlSeconds": 600}),
        json!({"oauth2SigningKeys": [{"name": "key-1", "pem": SIGNING_PEM}], "oauth2Clients": {"app-1": "changed", "app-2": "other"}}),
    );
    assert_eq!(
        decide(&other, &issued.access_token, NOW).1,
        "token's client changed or removed"
    );
}

const OTHER_PEM: &str = include_str!("../../../signatures/tests/keys/ec-other.key");

fn builtin_with_keys(keys: &[(&str, &str)]) -> Engine {
    let keys: Vec<Value> = keys.iter().map(|(n, pem)| json!({"name": n, "pem": pem})).collect();
    engine(
        json!({"provider": "Builtin", "builtinTokenTtlSeconds": 600}),
        json!({"oauth2SigningKeys": keys, "oauth2Clients": {"app-1": "s3cret"}, "oauth2ClientScopes": {"app-1": ["read"]}}),
    )
}

fn client_token(e: &Engine) -> String {
    let body = "grant_type=client_credentials&client_id=app-1&client_secret=s3cret";
    token_request(e, &HeaderMap::new(), body).unwrap().access_token
}

/// Builtin tokens are ES256 under the newest key (its `kid`); after a rotation the old key
/// still verifies its tokens; the JWK Set publishes every key and verifies the tokens.
#[test]
fn builtin_tokens_are_es256_under_rotating_keys() {
    let old = builtin_with_keys(&[("key-100", SIGNING_PEM)]);
    let token = client_token(&old);
    let header: Value = serde_json::from_slice(&B64.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(header, json!({"alg": "ES256", "typ": "at+jwt", "kid": "key-100"}));
    // Rotated: the new key signs, the old one still verifies.
    let rotated = builtin_with_keys(&[("key-200", OTHER_PEM), ("key-100", SIGNING_PEM)]);
    assert_eq!(decide(&rotated, &token, NOW).0, 200);
    let fresh = client_token(&rotated);
    let h: Value = serde_json::from_slice(&B64.decode(fresh.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(h["kid"], "key-200");
    // Once the old key is dropped, its tokens are no more.
    let dropped = builtin_with_keys(&[("key-200", OTHER_PEM)]);
    assert_eq!(decide(&dropped, &token, NOW).1, "token algorithm not accepted");
    assert_eq!(decide(&dropped, &fresh, NOW).0, 200);
    // The same kid on another key: a bad signature.
    let swapped = builtin_with_keys(&[("key-100", OTHER_PEM)]);
    assert_eq!(decide(&swapped, &token, NOW).1, "bad token signature");
    // The JWK Set: both keys, public only, and each verifies what it signed.
    let e = rotated;
    let jwks = match &e.profiles[0].auth {
        crate::Auth::OAuth2(o) => o.builtin().unwrap().jwks(),
        _ => unreachable!(),
    };
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert!(
        keys.iter()
            .all(|k| k["kty"] == "EC" && k["alg"] == "ES256" && k.get("d").is_none())
    );
    let set = super::JwkSet::from_json(jwks.to_string().as_bytes()).unwrap();
    for t in [&token, &fresh] {
        let (signed, sig) = t.rsplit_once('.').unwrap();
        let h: Value = serde_json::from_slice(&B64.decode(t.split('.').next().unwrap()).unwrap()).unwrap();
        let k = set.keys.iter().find(|k| k.kid.as_deref() == h["kid"].as_str()).unwrap();
        k.key
            .verify(
                portcullis_signatures::Algorithm::EcdsaP256Sha256,
                signed.as_bytes(),
                &B64.decode(sig).unwrap(),
            )
            .unwrap();
    }
    // A key that cannot sign ES256 does not compile.
    let loaded = Loaded {
        config: serde_json::from_value(json!({"schemaVersion": 1, "generation": "g", "namespace": "demo",
            "profiles": [{"name": "idp", "auth": {"type": "OAuth2", "provider": "Builtin", "builtinTokenTtlSeconds": 600}}],
            "routes": []}))
        .unwrap(),
        secrets: serde_json::from_value(json!({"schemaVersion": 1, "generation": "g",
            "profiles": {"idp": {"oauth2SigningKeys": [{"name": "key-1", "pem": "not a key"}], "oauth2Clients": {"a": "b"}}}}))
        .unwrap(),
    };
    let err = Engine::compile(&loaded, Arc::new(InMemoryLimiter::new()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"key-1\" is not an EC P-256 private key"), "{err}");
}

/// A client gets only the scopes its Secret allows: asking for more is `invalid_scope`, never a
/// token that carries it.
#[test]
fn builtin_grants_only_the_scopes_a_client_may_have() {
    let e = builtin();
    let none = HeaderMap::new();
    let grant = |client: &str, secret: &str, scope: &str| {
        let body = format!("grant_type=client_credentials&client_id={client}&client_secret={secret}{scope}");
        token_request(&e, &none, &body).map(|i| i.scope).map_err(|e| e.code)
    };
    assert_eq!(grant("app-1", "s3cret", "&scope=write"), Ok(Some("write".into())));
    assert_eq!(
        grant("app-1", "s3cret", "&scope=write+read+write"),
        Ok(Some("write read".into()))
    );
    assert_eq!(grant("app-2", "other", "&scope=read"), Err("invalid_scope"));
    assert_eq!(grant("app-2", "other", "&scope=write+admin"), Err("invalid_scope"));
    assert_eq!(grant("app-2", "other", ""), Ok(Some("write".into())));
    // A client without scopes in its Secret gets a token without any, which the profile's
    // required scope then refuses.
    let bare = engine(
        json!({"provider": "Builtin", "builtinTokenTtlSeconds": 600, "requiredScopes": ["read"]}),
        json!({"oauth2SigningKeys": [{"name": "key-1", "pem": SIGNING_PEM}], "oauth2Clients": {"app-1": "s3cret"}}),
    );
    let issued = token_request(
        &bare,
        &none,
        "grant_type=client_credentials&client_id=app-1&client_secret=s3cret",
    )
    .unwrap();
    assert_eq!(issued.scope, None);
    assert_eq!(decide(&bare, &issued.access_token, NOW).0, 403);
    let asked = "grant_type=client_credentials&client_id=app-1&client_secret=s3cret&scope=read";
    assert_eq!(token_request(&bare, &none, asked).unwrap_err().code(), "invalid_scope");
}

#[test]
fn builtin_scopes_must_name_clients_and_be_scope_tokens() {
    let compile = |secrets: Value| {
        let config = json!({"schemaVersion": 1, "generation": "g", "namespace": "n",
            "profiles": [{"name": "idp", "auth": {"type": "OAuth2", "provider": "Builtin", "builtinTokenTtlSeconds": 600}}],
            "routes": [{"name": "api", "pathPrefix": "/api", "profiles": ["idp"], "backend": {"type": "Local", "port": 8080}}]});
        let loaded = Loaded {
            config: serde_json::from_value::<SidecarConfig>(config).unwrap(),
            secrets: serde_json::from_value::<SecretMaterial>(
                json!({"schemaVersion": 1, "generation": "g", "profiles": {"idp": secrets}}),
            )
            .unwrap(),
        };
        Engine::compile(&loaded, Arc::new(InMemoryLimiter::new()))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let err = compile(json!({"oauth2SigningKeys": [{"name": "key-1", "pem": SIGNING_PEM}], "oauth2Clients": {"app-1": "s"}, "oauth2ClientScopes": {"app-9": ["read"]}})).unwrap_err();
    assert!(err.contains("\"app-9\", which is not a client"), "{err}");
    let err = compile(json!({"oauth2SigningKeys": [{"name": "key-1", "pem": SIGNING_PEM}], "oauth2Clients": {"app-1": "s"}, "oauth2ClientScopes": {"app-1": ["a\"b"]}})).unwrap_err();
    assert!(err.contains("not a valid scope"), "{err}");
    compile(json!({"oauth2SigningKeys": [{"name": "key-1", "pem": SIGNING_PEM}], "oauth2Clients": {"app-1": "s"}, "oauth2ClientScopes": {"app-1": ["read"]}})).unwrap();
}

/// Client secrets cannot be guessed at line rate: wrong ones count like wrong passwords
/// (per client id and per address), and beyond the budget even the right one gets 429.
#[test]
fn builtin_client_secrets_are_throttled() {
    let e = builtin();
    let none = HeaderMap::new();
    let body = |secret: &str| format!("grant_type=client_credentials&client_id=app-1&client_secret={secret}");
    let per_client = crate::throttle::Budget::default().per_user;
    for n in 0..per_client {
        let err = token_request(&e, &none, &body(&format!("guess-{n}"))).unwrap_err();
        assert_eq!(err.code(), "invalid_client", "guess {n}");
    }
    match token_request(&e, &none, &body("s3cret")) {
        Err(TokenRefused {
            retry_after: Some(retry_after_secs),
            ..
        }) => assert!((1..=60).contains(&retry_after_secs)),
        other => panic!("{other:?}"),
    }
    // Another client from the same address still gets its token (the address has budget left).
    let other = "grant_type=client_credentials&client_id=app-2&client_secret=other";
    assert!(token_request(&e, &none, other).is_ok());
}

#[test]
fn builtin_refuses_wrong_clients_and_grants() {
    let e = builtin();
    let none = HeaderMap::new();
    let r = |body| token_request(&e, &none, body).map(|_| ()).map_err(|e| e.code);
    assert_eq!(
        r("grant_type=client_credentials&client_id=app-1&client_secret=wrong"),
        Err("invalid_client")
    );
    assert_eq!(
        r("grant_type=client_credentials&client_id=nobody&client_secret=s3cret"),
        Err("invalid_client")
    );
    assert_eq!(r("grant_type=client_credentials"), Err("invalid_client"));
    assert_eq!(
        r("grant_type=password&client_id=app-1&client_secret=s3cret"),
        Err("unsupported_grant_type")
    );
    assert_eq!(
        r("grant_type=client_credentials&client_id=app-1&client_secret=s3cret&scope=a%22b"),
        Err("invalid_scope")
    );
    // Not the endpoint: GET, another path, a route without a Builtin profile.
    assert!(
        e.provider_endpoint(&request("GET", "/api/oauth2/token", &none))
            .is_none()
    );
    assert!(
        e.provider_endpoint(&request("POST", "/api/x/oauth2/token", &none))
            .is_none()
    );
    assert!(
        jwt_engine(&[])
            .provider_endpoint(&request("POST", "/api/oauth2/token", &none))
            .is_none()
    );
    // A forged HS256 token (the key is not the client secret) is refused.
    let header = B64.encode(json!({"alg": "HS256"}).to_string());
    let signed = format!(
        "{header}.{}",
        B64.encode(json!({"sub": "x", "exp": NOW + 60, "scope": "read"}).to_string())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret");
    let t = format!("{signed}.{}", B64.encode(ring::hmac::sign(&key, signed.as_bytes())));
    assert_eq!(decide(&e, &t, NOW).1, "token algorithm not accepted");
}

#[test]
fn the_token_endpoint_judges_the_client_address_like_the_api() {
    let config = json!({"schemaVersion": 1, "generation": "g", "namespace": "demo",
        "trustedProxies": ["10.0.0.0/8"],
        "profiles": [{"name": "idp", "auth": {"type": "OAuth2", "provider": "Builtin", "builtinTokenTtlSeconds": 600},
                      "trustedIpRanges": [{"from": "192.168.1.0", "to": "192.168.1.255"}]}],
        "routes": [{"name": "finance", "pathPrefix": "/api", "profiles": ["idp"],
                    "backend": {"type": "Local", "port": 8080}}]});
    let secrets = json!({"schemaVersion": 1, "generation": "g",
        "profiles": {"idp": {"oauth2SigningKeys": [{"name": "key-1", "pem": SIGNING_PEM}], "oauth2Clients": {"app-1": "s3cret"}}}});
    let loaded = Loaded {
        config: serde_json::from_value::<SidecarConfig>(config).unwrap(),
        secrets: serde_json::from_value::<SecretMaterial>(secrets).unwrap(),
    };
    let e = Engine::compile(&loaded, Arc::new(InMemoryLimiter::new())).unwrap();
    let endpoint = |xff: Option<&str>| {
        let mut h = HeaderMap::new();
        if let Some(xff) = xff {
            h.insert("x-forwarded-for", xff.parse().unwrap());
        }
        let t = e
            .provider_endpoint(&request("POST", "/api/oauth2/token", &h))
            .expect("token endpoint");
        (t.client_ip.to_string(), t.from_trusted_address())
    };
    // The peer 10.0.0.1 is a trusted proxy: the client is the address it forwards for.
    assert_eq!(endpoint(Some("192.168.1.7")), ("192.168.1.7".into(), true));
    assert_eq!(endpoint(Some("203.0.113.9")), ("203.0.113.9".into(), false));
    assert_eq!(endpoint(None), ("10.0.0.1".into(), false));
}

#[test]
fn jwks_documents_skip_unusable_keys() {
    let doc = json!({"keys": [
        {"kty": "RSA", "kid": "r", "n": B64.encode([0xc0u8; 256]), "e": "AQAB"},
        {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"},
        {"kty": "oct", "k": "c2VjcmV0"},
        {"kty": "OKP", "crv": "Ed25519", "use": "enc", "x": B64.encode([1u8; 32])},
    ]});
    let set = super::JwkSet::from_json(doc.to_string().as_bytes()).unwrap();
    assert_eq!(set.len(), 1, "only the RSA key is usable");
    assert!(super::JwkSet::from_json(b"{}").is_err());
}

/// The INTEGERs at the top level of a DER SEQUENCE, as unsigned big-endian bytes.
fn der_integers(der: &[u8]) -> Vec<Vec<u8>> {
    fn len(d: &[u8], i: &mut usize) -> usize {
        let first = d[*i] as usize;
        *i += 1;
        if first < 0x80 {
            return first;
        }
        let mut n = 0;
        for _ in 0..first & 0x7f {
            n = n << 8 | d[*i] as usize;
            *i += 1;
        }
        n
    }
    let mut i = 1;
    len(der, &mut i);
    let mut out = Vec::new();
    while i < der.len() && der[i] == 0x02 {
        i += 1;
        let n = len(der, &mut i);
        let v = &der[i..i + n];
        out.push(v.strip_prefix(&[0]).unwrap_or(v).to_vec());
        i += n;
    }
    out
}

#[test]
fn rs256_tokens_verify_with_an_rsa_jwk() {
    let pem = include_str!("../../../signatures/tests/keys/rsa2048-pkcs1.key");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body).unwrap();
    let ints = der_integers(&der);
    let (n, e) = (&ints[1], &ints[2]);
    let doc = json!({"keys": [{"kty": "RSA", "kid": "rsa", "alg": "RS256", "n": B64.encode(n), "e": B64.encode(e)}]});
    let e = engine(
        json!({"provider": "Generic", "jwksUri": JWKS, "requiredScopes": ["read"]}),
        json!({}),
    );
    let (_, slot) = e.jwks().next().unwrap();
    slot.store(super::JwkSet::from_json(doc.to_string().as_bytes()).unwrap());
    let key = portcullis_signatures::Key::from_pem(pem).unwrap();
    let sign = |alg: &str, a: portcullis_signatures::Algorithm| {
        let signed = format!(
            "{}.{}",
            B64.encode(json!({"alg": alg, "kid": "rsa"}).to_string()),
            B64.encode(claims().to_string())
        );
        format!("{signed}.{}", B64.encode(key.sign(a, signed.as_bytes()).unwrap()))
    };
    use portcullis_signatures::Algorithm::{RsaPssSha512, RsaV15Sha256};
    assert_eq!(
        decide(&e, &sign("RS256", RsaV15Sha256), NOW),
        (200, "alice".into(), vec![])
    );
    // The JWKS restricts the key to RS256.
    assert_eq!(decide(&e, &sign("PS512", RsaPssSha512), NOW).1, "bad token signature");
}

#[test]
fn key_sets_outlive_reloads() {
    let ed = Signer::ed25519("k1");
    let limiter = Arc::new(InMemoryLimiter::new());
    let compile = || {
        let config = json!({"schemaVersion": 1, "generation": "g", "namespace": "demo",
            "profiles": [{"name": "idp", "auth": {"type": "OAuth2", "provider": "Generic", "jwksUri": JWKS}}],
            "routes": [{"name": "finance", "pathPrefix": "/api", "profiles": ["idp"],
                        "backend": {"type": "Local", "port": 8080}}]});
        let loaded = Loaded {
            config: serde_json::from_value::<SidecarConfig>(config).unwrap(),
            secrets: serde_json::from_value::<SecretMaterial>(json!({"schemaVersion": 1, "generation": "g"})).unwrap(),
        };
        Engine::compile(&loaded, limiter.clone()).unwrap()
    };
    let first = compile();
    feed(&first, &[&ed]);
    let second = compile();
    let mut c = claims();
    c.as_object_mut().unwrap().remove("scope");
    assert_eq!(decide(&second, &ed.token(&c), NOW).0, 200);
}

mod delegation;
