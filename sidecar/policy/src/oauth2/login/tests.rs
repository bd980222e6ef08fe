//! Sign-in tests: sealed cookies, the authorization redirect, callbacks, ID tokens,
//! sessions through the engine, return paths and the used-once memory.

use std::sync::Arc;

use base64::Engine as _;
use http::HeaderMap;
use portcullis_config::{Loaded, SecretMaterial, SidecarConfig};
use serde_json::{Value, json};

use super::*;
use crate::oauth2::JwkSet;
use crate::oauth2::tests::Signer;
use crate::{DenialKind, Engine, InMemoryLimiter, Listener, LoginRedirect, LoginStep, Outcome, RequestView};

const NOW: u64 = 1_764_000_000;
const ISS: &str = "https://op.example.com";
const KEY_A: [u8; 32] = [7; 32];
const KEY_B: [u8; 32] = [9; 32];

fn b64(k: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(k)
}

fn random(n: u8) -> Random {
    Random {
        state: [n; 16],
        nonce: [n + 1; 16],
        verifier: [n + 2; 32],
        seal: [n + 3; 12],
    }
}

fn discovered() -> Discovered {
    Discovered {
        issuer: ISS.into(),
        authorization_endpoint: format!("{ISS}/auth"),
        token_endpoint: format!("{ISS}/token"),
        jwks_uri: format!("{ISS}/jwks"),
        end_session_endpoint: Some(format!("{ISS}/session/end")),
    }
}

/// An engine with profile `people` (sign-in) on route `app` (`/`), session keys `keys`.
fn engine_with(keys: &[[u8; 32]], login_extra: Value, signer: &Signer) -> Engine {
    engine_on(keys, login_extra, json!({}), signer)
}

/// [`engine_with`] with `route_extra`'s fields (`sslOnly`, `tls`) on the route.
fn engine_on(keys: &[[u8; 32]], login_extra: Value, route_extra: Value, signer: &Signer) -> Engine {
    let mut login = json!({"issuer": ISS, "discoveryUrl": format!("{ISS}/.well-known/openid-configuration"),
        "clientId": "portcullis", "redirectPath": "/oauth2/callback", "logoutPath": "/oauth2/logout",
        "scopes": ["openid", "email"], "sessionMaxSeconds": 3600});
    for (k, v) in login_extra.as_object().unwrap() {
        login[k] = v.clone();
    }
    let mut route =
        json!({"name": "app", "pathPrefix": "/", "profiles": ["people"], "backend": {"type": "Local", "port": 8080}});
    for (k, v) in route_extra.as_object().unwrap() {
        route[k] = v.clone();
    }
    let config = json!({"schemaVersion": 1, "generation": "g", "namespace": "demo",
        "profiles": [{"name": "people", "auth": {"type": "OAuth2", "provider": "Generic", "issuer": ISS, "login": login}}],
        "routes": [route]});
    let session_keys: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| json!({"name": format!("key-{}", 100 - i), "key": b64(k)}))
        .collect();
    let secrets = json!({"schemaVersion": 1, "generation": "g",
        "profiles": {"people": {"login": {"clientSecret": "s3cret", "sessionKeys": session_keys}}}});
    let loaded = Loaded {
        config: serde_json::from_value::<SidecarConfig>(config).unwrap(),
        secrets: serde_json::from_value::<SecretMaterial>(secrets).unwrap(),
    };
    let e = Engine::compile(&loaded, Arc::new(InMemoryLimiter::new())).unwrap();
    let provider = &e.login_providers()[0];
    assert_eq!(
        &*provider.url,
        "https://op.example.com/.well-known/openid-configuration"
    );
    provider.slot.store(discovered());
    let doc = json!({"keys": [signer.jwk()]});
    provider
        .slot
        .keys
        .store(JwkSet::from_json(doc.to_string().as_bytes()).unwrap());
    e
}

fn login(e: &Engine) -> &Login {
    e.login_of_route("app").unwrap().1
}

fn cookies(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    let v: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !v.is_empty() {
        h.insert("cookie", v.join("; ").parse().unwrap());
    }
    h
}

/// The value of a `Set-Cookie` line.
fn value(set_cookie: &str) -> &str {
    set_cookie.split(';').next().unwrap().split_once('=').unwrap().1
}

/// The cookie name of a `Set-Cookie` line.
fn name_of(set_cookie: &str) -> &str {
    set_cookie.split_once('=').unwrap().0
}

fn query_of(location: &str, name: &str) -> String {
    let q = location.split_once('?').unwrap().1;
    crate::query::query_param(q, name).unwrap().into_owned()
}

fn id_claims(nonce: &str) -> Value {
    json!({"iss": ISS, "sub": "248289761001", "aud": "portcullis", "exp": NOW + 600, "iat": NOW,
           "nonce": nonce, "email": "Jane@Example.com", "email_verified": true})
}

fn view<'a>(path: &'a str, query: Option<&'a str>, headers: &'a HeaderMap, tls: bool) -> RequestView<'a> {
    RequestView {
        method: "GET",
        host: Some("app.example.com"),
        authority: Some("app.example.com"),
        path,
        query,
        headers,
        peer: "10.0.0.1".parse().unwrap(),
        tls,
        listener: Listener::Inbound,
        client_cert: None,
        form: None,
    }
}

#[test]
fn sealed_values_open_only_under_their_keys_and_purpose() {
    let a = SessionKeys::new(&[&b64(&KEY_A)]).unwrap();
    let sealed = a.seal(b"p", b"hello", [1; 12]);
    assert_eq!(a.open(b"p", &sealed).as_deref(), Some(&b"hello"[..]));
    assert_eq!(a.open(b"other purpose", &sealed), None);
    // Rotation: a new key in front still opens what the old one sealed; a foreign key does not.
    let rotated = SessionKeys::new(&[&b64(&KEY_B), &b64(&KEY_A)]).unwrap();
    assert_eq!(rotated.open(b"p", &sealed).as_deref(), Some(&b"hello"[..]));
    let foreign = SessionKeys::new(&[&b64(&KEY_B)]).unwrap();
    assert_eq!(foreign.open(b"p", &sealed), None);
    // Any flipped bit is refused.
    let mut raw = B64.decode(&sealed).unwrap();
    for i in [0, 5, 20, raw.len() - 1] {
        raw[i] ^= 1;
        assert_eq!(a.open(b"p", &B64.encode(&raw)), None, "byte {i}");
        raw[i] ^= 1;
    }
    assert_eq!(a.open(b"p", "not base64!"), None);
    assert_eq!(a.open(b"p", &"A".repeat(5000)), None);
    assert!(SessionKeys::new(&[&b64(&[1; 16])]).is_err());
    assert!(SessionKeys::new(&[]).is_err());
}

#[test]
fn start_sends_the_browser_to_the_provider_with_state_nonce_and_pkce() {
    let signer = Signer::es256("op1");
    let e = engine_with(&[KEY_A], json!({}), &signer);
    let l = login(&e);
    let redirect = l.redirect_uri("app.example.com", true);
    assert_eq!(redirect, "https://app.example.com/oauth2/callback");
    let (location, set_cookie) = l.start(&discovered(), &redirect, "/reports?q=1", &random(1), NOW);
    assert!(location.starts_with("https://op.example.com/auth?response_type=code&client_id=portcullis&"));
    assert_eq!(query_of(&location, "redirect_uri"), redirect);
    assert_eq!(query_of(&location, "scope"), "openid email");
    assert_eq!(query_of(&location, "code_challenge_method"), "S256");
    assert_eq!(query_of(&location, "state"), B64.encode([1u8; 16]));
    assert_eq!(query_of(&location, "nonce"), B64.encode([2u8; 16]));
    let verifier = B64.encode([3u8; 32]);
    assert_eq!(query_of(&location, "code_challenge"), pkce_challenge(&verifier));
    assert!(
        !location.contains(&verifier),
        "the verifier never leaves the browser's sealed cookie"
    );
    // One cookie per sign-in under way, named after its state, `__Host-` so that no sibling
    // subdomain can set one.
    assert_eq!(name_of(&set_cookie), l.pending_cookie_name(&B64.encode([1u8; 16])));
    assert!(set_cookie.starts_with("__Host-portcullis-login-people-"));
    assert!(set_cookie.ends_with("; Path=/; Max-Age=600; HttpOnly; Secure; SameSite=Lax"));
    assert!(!set_cookie.contains(&verifier));
}

#[test]
fn callbacks_are_checked_against_the_sealed_state() {
    let signer = Signer::es256("op1");
    let e = engine_with(&[KEY_A], json!({}), &signer);
    let l = login(&e);
    let (location, set_cookie) = l.start(
        &discovered(),
        "https://app.example.com/oauth2/callback",
        "/r",
        &random(1),
        NOW,
    );
    let state = query_of(&location, "state");
    let jar = cookies(&[(name_of(&set_cookie), value(&set_cookie))]);
    let ok = l
        .callback(Some(&format!("code=abc&state={state}")), &jar, NOW + 5)
        .unwrap();
    assert_eq!(ok.code, "abc");
    assert_eq!(ok.pending.return_to, "/r");
    assert_eq!(ok.pending.verifier, B64.encode([3u8; 32]));
    // A forged state, no cookie, a cookie from another sign-in, a stale one.
    let err = |q: &str, h: &HeaderMap, at: u64| l.callback(Some(q), h, at).unwrap_err();
    assert_eq!(err("code=abc&state=forged", &jar, NOW), LoginError::BadState);
    assert_eq!(
        err(&format!("code=abc&state={state}"), &HeaderMap::new(), NOW),
        LoginError::BadState
    );
    let (other_loc, other_cookie) = l.start(&discovered(), "x", "/", &random(40), NOW);
    let other = cookies(&[(name_of(&other_cookie), value(&other_cookie))]);
    assert_eq!(
        err(&format!("code=abc&state={state}"), &other, NOW),
        LoginError::BadState
    );
    // ... even under this sign-in's cookie name: it seals another state.
    let renamed = cookies(&[(name_of(&set_cookie), value(&other_cookie))]);
    assert_eq!(
        err(&format!("code=abc&state={state}"), &renamed, NOW),
        LoginError::BadState
    );
    // Two sign-ins under way in one browser (two tabs): each completes with its own cookie.
    let both = cookies(&[
        (name_of(&set_cookie), value(&set_cookie)),
        (name_of(&other_cookie), value(&other_cookie)),
    ]);
    assert!(l.callback(Some(&format!("code=abc&state={state}")), &both, NOW).is_ok());
    // The same name twice (a tossed cookie beside the real one): neither is used.
    let twice = cookies(&[
        (name_of(&set_cookie), value(&set_cookie)),
        (name_of(&set_cookie), value(&set_cookie)),
    ]);
    assert_eq!(
        err(&format!("code=abc&state={state}"), &twice, NOW),
        LoginError::BadState
    );
    assert!(
        l.callback(
            Some(&format!("code=c&state={}", query_of(&other_loc, "state"))),
            &other,
            NOW
        )
        .is_ok()
    );
    assert_eq!(
        err(&format!("code=abc&state={state}"), &jar, NOW + 600),
        LoginError::StateExpired
    );
    // Tampered cookie, repeated parameters, the provider's error, no code.
    let mut raw = B64.decode(value(&set_cookie)).unwrap();
    raw[30] ^= 4;
    let tampered = cookies(&[(name_of(&set_cookie), &B64.encode(&raw))]);
    assert_eq!(
        err(&format!("code=abc&state={state}"), &tampered, NOW),
        LoginError::BadState
    );
    assert_eq!(
        err(&format!("code=a&state={state}&state=x"), &jar, NOW),
        LoginError::BadState
    );
    assert_eq!(
        err(&format!("code=a&code=b&state={state}"), &jar, NOW),
        LoginError::BadState
    );
    assert_eq!(
        err(&format!("error=access_denied&state={state}"), &jar, NOW),
        LoginError::ProviderRefused
    );
    assert_eq!(err(&format!("state={state}"), &jar, NOW), LoginError::NoCode);
}

#[test]
fn id_tokens_are_verified_with_nonce_audience_and_expiry() {
    let signer = Signer::es256("op1");
    let e = engine_with(&[KEY_A], json!({}), &signer);
    let l = login(&e);
    let answer = |claims: &Value| {
        json!({"id_token": signer.token_with(json!({"alg": "ES256", "kid": "op1"}), claims),
                                         "refresh_token": "rt-1", "token_type": "Bearer"})
        .to_string()
    };
    let s = l
        .accept_tokens(answer(&id_claims("n1")).as_bytes(), Some("n1"), None, NOW)
        .unwrap();
    assert_eq!(s.subject, "248289761001");
    assert_eq!(s.email.as_deref(), Some("jane@example.com"));
    assert_eq!((s.expires, s.ends), (NOW + 600, NOW + 3600));
    assert_eq!(s.refresh_token.as_deref(), Some("rt-1"));
    let refused = |c: Value, nonce: Option<&str>| l.accept_tokens(answer(&c).as_bytes(), nonce, None, NOW).unwrap_err();
    assert_eq!(refused(id_claims("n1"), Some("n2")), LoginError::WrongNonce);
    let mut c = id_claims("n1");
    c.as_object_mut().unwrap().remove("nonce");
    assert_eq!(refused(c, Some("n1")), LoginError::WrongNonce);
    let mut c = id_claims("n1");
    c["aud"] = json!("another-client");
    assert_eq!(refused(c, Some("n1")), LoginError::BadIdToken);
    let mut c = id_claims("n1");
    c["iss"] = json!("https://evil.example.com");
    assert_eq!(refused(c, Some("n1")), LoginError::BadIdToken);
    let mut c = id_claims("n1");
    c["exp"] = json!(NOW - 3600);
    assert_eq!(refused(c, Some("n1")), LoginError::BadIdToken);
    // Signed by a key the provider does not publish.
    let stranger = Signer::es256("op1");
    let forged = json!({"id_token": stranger.token_with(json!({"alg": "ES256", "kid": "op1"}), &id_claims("n1"))});
    assert_eq!(
        l.accept_tokens(forged.to_string().as_bytes(), Some("n1"), None, NOW)
            .unwrap_err(),
        LoginError::BadIdToken
    );
    assert_eq!(
        l.accept_tokens(b"{}", Some("n1"), None, NOW).unwrap_err(),
        LoginError::NoIdToken
    );
    // A refresh keeps the session's end and its refresh token when no new one comes.
    let refreshed = json!({"id_token": signer.token_with(json!({"alg": "ES256", "kid": "op1"}), &id_claims("other"))});
    let s2 = l
        .accept_tokens(refreshed.to_string().as_bytes(), None, Some(&s), NOW + 500)
        .unwrap();
    assert_eq!((s2.ends, s2.refresh_token.as_deref()), (s.ends, Some("rt-1")));
    let mut c = id_claims("x");
    c["sub"] = json!("someone-else");
    let swapped = json!({"id_token": signer.token_with(json!({"alg": "ES256", "kid": "op1"}), &c)});
    assert_eq!(
        l.accept_tokens(swapped.to_string().as_bytes(), None, Some(&s), NOW)
            .unwrap_err(),
        LoginError::BadIdToken
    );
}

#[test]
fn allowed_domains_and_emails_need_a_verified_email() {
    let signer = Signer::es256("op1");
    let e = engine_with(
        &[KEY_A],
        json!({"allowedDomains": ["example.com"], "allowedEmails": ["bob@partner.org"]}),
        &signer,
    );
    let l = login(&e);
    let try_with = |email: &str, verified: bool| {
        let mut c = id_claims("n");
        c["email"] = json!(email);
        c["email_verified"] = json!(verified);
        let a = json!({"id_token": signer.token_with(json!({"alg": "ES256", "kid": "op1"}), &c)});
        l.accept_tokens(a.to_string().as_bytes(), Some("n"), None, NOW)
            .map(|s| s.subject)
    };
    assert!(try_with("jane@example.com", true).is_ok());
    assert!(try_with("bob@partner.org", true).is_ok());
    assert_eq!(try_with("jane@example.com", false), Err(LoginError::NotAllowed));
    assert_eq!(try_with("eve@evil.com", true), Err(LoginError::NotAllowed));
    assert_eq!(try_with("eve@notexample.com", true), Err(LoginError::NotAllowed));
}

/// The account rules hold for bearer tokens too: a person sign-in refuses cannot reach the
/// app by sending their ID token in `Authorization` (found by the black-box review).
#[test]
fn bearer_tokens_of_a_sign_in_profile_meet_its_account_rules() {
    let signer = Signer::es256("op1");
    let e = engine_with(
        &[KEY_A],
        json!({"allowedDomains": ["example.com"], "allowedEmails": ["bob@partner.org"]}),
        &signer,
    );
    let decide = |claims: &Value| {
        let token = signer.token_with(json!({"alg": "ES256", "kid": "op1"}), claims);
        let mut h = HeaderMap::new();
        h.insert("authorization", format!("Bearer {token}").parse().unwrap());
        match e.decide(&view("/x", None, &h, true), NOW * 1000) {
            Outcome::Allow(a) => Ok(a.identity.into_owned()),
            Outcome::Deny(d) => Err(d.reason),
            other => panic!("{other:?}"),
        }
    };
    let with = |email: Option<&str>, verified: bool| {
        let mut c = id_claims("n");
        match email {
            Some(email) => c["email"] = json!(email),
            None => drop(c.as_object_mut().unwrap().remove("email")),
        }
        c["email_verified"] = json!(verified);
        c
    };
    assert_eq!(decide(&with(Some("Jane@Example.com"), true)), Ok("248289761001".into()));
    assert_eq!(decide(&with(Some("bob@partner.org"), true)), Ok("248289761001".into()));
    for (claims, what) in [
        (with(Some("mallory@evil.com"), true), "another domain"),
        (with(Some("jane@example.com"), false), "an unverified email"),
        (with(None, true), "no email"),
        (with(Some("mallory@evil.com@example.com.evil"), true), "a look-alike"),
    ] {
        assert_eq!(decide(&claims), Err("token's account not allowed"), "{what}");
    }
    // Without account rules any verified token of the provider for this client is admitted.
    let open = engine_with(&[KEY_A], json!({}), &signer);
    let token = signer.token_with(json!({"alg": "ES256", "kid": "op1"}), &with(None, false));
    let mut h = HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    assert!(matches!(
        open.decide(&view("/x", None, &h, true), NOW * 1000),
        Outcome::Allow(_)
    ));
}

#[test]
fn sessions_admit_browsers_through_the_engine_and_bearer_tokens_still_work() {
    let signer = Signer::es256("op1");
    let e = engine_with(&[KEY_A], json!({}), &signer);
    let l = login(&e);
    let session = Session {
        subject: "248289761001".into(),
        email: Some("jane@example.com".into()),
        expires: NOW + 600,
        ends: NOW + 3600,
        refresh_token: Some("rt".into()),
    };
    let set_cookie = l.session_cookie(&session, [5; 12], NOW).unwrap();
    assert!(set_cookie.starts_with("__Host-portcullis-session-people="));
    assert!(set_cookie.ends_with("; Path=/; Max-Age=3600; HttpOnly; Secure; SameSite=Lax"));
    assert!(
        !set_cookie.contains("rt") || !set_cookie.contains("jane"),
        "sealed, not readable"
    );
    let jar = cookies(&[("other", "1"), ("__Host-portcullis-session-people", value(&set_cookie))]);
    let decide = |h: &HeaderMap, at: u64| match e.decide(&view("/x", None, h, true), at * 1000) {
        Outcome::Allow(a) => Ok((a.identity.into_owned(), a.told.and_then(|t| t.email))),
        Outcome::Deny(d) => match d.kind {
            DenialKind::Unauthorized { challenges } => Err((d.reason, challenges.to_vec())),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    assert_eq!(
        decide(&jar, NOW),
        Ok(("248289761001".into(), Some("jane@example.com".into())))
    );
    assert_eq!(
        decide(&jar, NOW + 600),
        Err(("session expired", vec!["Bearer realm=\"app\"".to_string()]))
    );
    assert_eq!(decide(&HeaderMap::new(), NOW).unwrap_err().0, "no bearer token");
    // Tampered, or sealed under a key this profile does not hold: no session.
    let mut raw = B64.decode(value(&set_cookie)).unwrap();
    raw[40] ^= 1;
    assert_eq!(
        decide(
            &cookies(&[("__Host-portcullis-session-people", &B64.encode(&raw))]),
            NOW
        )
        .unwrap_err()
        .0,
        "no valid session"
    );
    let foreign = engine_with(&[KEY_B], json!({}), &signer);
    let foreign_cookie = login(&foreign).session_cookie(&session, [5; 12], NOW).unwrap();
    assert_eq!(
        decide(
            &cookies(&[("__Host-portcullis-session-people", value(&foreign_cookie))]),
            NOW
        )
        .unwrap_err()
        .0,
        "no valid session"
    );
    // After a rotation (new key in front, old kept), the old session still opens.
    let rotated = engine_with(&[KEY_B, KEY_A], json!({}), &signer);
    assert!(matches!(
        rotated.decide(&view("/x", None, &jar, true), NOW * 1000),
        Outcome::Allow(_)
    ));
    // Bearer tokens from the provider are verified with its discovered keys.
    let mut bearer = HeaderMap::new();
    let token = signer.token_with(json!({"alg": "ES256", "kid": "op1"}), &id_claims("n"));
    bearer.insert("authorization", format!("Bearer {token}").parse().unwrap());
    assert_eq!(decide(&bearer, NOW).unwrap().0, "248289761001");
    // ... for this client only: the provider's token for another client is refused.
    let mut other = id_claims("n");
    other["aud"] = json!("someone-else");
    let token = signer.token_with(json!({"alg": "ES256", "kid": "op1"}), &other);
    bearer.insert("authorization", format!("Bearer {token}").parse().unwrap());
    assert!(decide(&bearer, NOW).is_err());
    // Refresh: wanted once the session is within a minute of its expiry, not before.
    assert!(e.refresh_wanted(&view("/x", None, &jar, true), NOW).is_none());
    let wanted = e.refresh_wanted(&view("/x", None, &jar, true), NOW + 550).unwrap();
    assert_eq!(
        (wanted.profile, wanted.session.refresh_token.as_deref()),
        ("people", Some("rt"))
    );
    assert!(
        e.refresh_wanted(&view("/x", None, &jar, true), NOW + 3600).is_none(),
        "past its end"
    );
}

#[test]
fn login_endpoints_are_found_on_the_route_host() {
    let signer = Signer::es256("op1");
    let e = engine_with(&[KEY_A], json!({}), &signer);
    let h = HeaderMap::new();
    let cb = e
        .login_endpoint(&view("/oauth2/callback", Some("code=x"), &h, true))
        .unwrap();
    assert_eq!(
        (cb.step, cb.profile, cb.https, cb.https_required),
        (LoginStep::Callback, "people", true, false)
    );
    let out = e.login_endpoint(&view("/oauth2/logout", None, &h, false)).unwrap();
    assert_eq!(out.step, LoginStep::Logout);
    assert!(e.login_endpoint(&view("/oauth2/other", None, &h, true)).is_none());
    let l = login(&e);
    assert_eq!(
        l.logout_location(Some(&discovered()), "https://app.example.com/"),
        "https://op.example.com/session/end?client_id=portcullis&post_logout_redirect_uri=https%3A%2F%2Fapp.example.com%2F"
    );
    assert_eq!(l.logout_location(None, "/"), "/");
    assert_eq!(
        l.clear_session(),
        "__Host-portcullis-session-people=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax"
    );
    let pending = l.clear_pending(Some("code=c&state=abc")).unwrap();
    assert_eq!(name_of(&pending), l.pending_cookie_name("abc"));
    assert!(pending.ends_with("=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax"));
    assert_eq!(l.clear_pending(Some("code=c")), None);
}

#[test]
fn return_paths_stay_on_this_host() {
    for ok in ["/", "/a/b?c=d", "/reports"] {
        assert_eq!(safe_return_path(ok), Some(ok));
    }
    for bad in [
        "//evil.example/x",
        "/\\evil.example",
        "https://evil.example/",
        "evil",
        "",
        "/a\\b",
        "/a b",
        "/\u{7f}",
    ] {
        assert_eq!(safe_return_path(bad), None, "{bad:?}");
    }
    assert_eq!(safe_return_path(&format!("/{}", "a".repeat(2000))), None);
}

#[test]
fn states_and_codes_are_used_once_within_a_bound() {
    let used = UsedOnce::new(2);
    assert_eq!(used.first_use("code", "c1", NOW + 600, NOW), Ok(()));
    assert_eq!(
        used.first_use("code", "c1", NOW + 600, NOW + 1),
        Err(LoginError::Replayed)
    );
    assert_eq!(used.first_use("state", "c1", NOW + 600, NOW + 1), Ok(()), "kinds apart");
    // Full of live entries: refused (fail closed) rather than forgotten.
    assert_eq!(
        used.first_use("code", "c2", NOW + 600, NOW + 2),
        Err(LoginError::Replayed)
    );
    // Expired entries make room.
    assert_eq!(used.first_use("code", "c2", NOW + 1200, NOW + 600), Ok(()));
    assert_eq!(used.len(), 1);
}

#[test]
fn discovery_documents_must_name_the_issuer() {
    let doc = json!({"issuer": ISS, "authorization_endpoint": format!("{ISS}/auth"), "token_endpoint": format!("{ISS}/token"),
                     "jwks_uri": format!("{ISS}/jwks"), "code_challenge_methods_supported": ["S256"]});
    let d = Discovered::from_json(doc.to_string().as_bytes(), ISS, true).unwrap();
    assert_eq!(
        (d.token_endpoint.as_str(), d.end_session_endpoint),
        ("https://op.example.com/token", None)
    );
    assert!(matches!(
        Discovered::from_json(doc.to_string().as_bytes(), "https://other.example.com", true),
        Err(DiscoveryError::WrongIssuer { .. })
    ));
    let mut plain = doc.clone();
    plain["token_endpoint"] = json!("http://op.example.com/token");
    assert_eq!(
        Discovered::from_json(plain.to_string().as_bytes(), ISS, true),
        Err(DiscoveryError::BadUrl("token_endpoint"))
    );
    assert!(Discovered::from_json(plain.to_string().as_bytes(), ISS, false).is_ok());
    let mut no_pkce = doc.clone();
    no_pkce["code_challenge_methods_supported"] = json!(["plain"]);
    assert_eq!(
        Discovered::from_json(no_pkce.to_string().as_bytes(), ISS, true),
        Err(DiscoveryError::NoPkce)
    );
    assert_eq!(
        Discovered::from_json(b"[]", ISS, true),
        Err(DiscoveryError::Missing("issuer"))
    );
}

#[test]
fn browsers_are_sent_to_sign_in_and_api_clients_keep_the_401() {
    let signer = Signer::es256("op1");
    let e = engine_with(&[KEY_A], json!({}), &signer);
    let with = |pairs: &[(&str, &str)]| {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    };
    let redirect = |h: &HeaderMap, method: &'static str, tls: bool| {
        let mut v = view("/reports", None, h, tls);
        v.method = method;
        match e.decide(&v, NOW * 1000) {
            Outcome::Deny(d) => e.login_redirect(&v, &d).map(|to| match to {
                LoginRedirect::SignIn(s) => (s.profile, s.https),
                other => panic!("{other:?}"),
            }),
            other => panic!("{other:?}"),
        }
    };
    let browser = with(&[("accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8")]);
    assert_eq!(redirect(&browser, "GET", true), Some(("people", true)));
    assert_eq!(redirect(&browser, "HEAD", true), Some(("people", true)));
    // An expired session: signed in again.
    let expired = Session {
        subject: "s".into(),
        email: None,
        expires: NOW - 1,
        ends: NOW + 100,
        refresh_token: None,
    };
    let old = login(&e).session_cookie(&expired, [1; 12], NOW).unwrap();
    let mut h = browser.clone();
    h.insert(
        "cookie",
        format!("__Host-portcullis-session-people={}", value(&old))
            .parse()
            .unwrap(),
    );
    assert_eq!(redirect(&h, "GET", true), Some(("people", true)));
    // API clients: no text/html, a POST, or an Authorization header (even a wrong one).
    assert_eq!(redirect(&with(&[("accept", "application/json")]), "GET", true), None);
    assert_eq!(redirect(&HeaderMap::new(), "GET", true), None);
    assert_eq!(redirect(&browser, "POST", true), None);
    let bearer = with(&[("accept", "text/html"), ("authorization", "Bearer nope")]);
    assert_eq!(redirect(&bearer, "GET", true), None);
    assert!(is_browser_navigation(
        "GET",
        &with(&[("accept", "application/json, TEXT/HTML; q=0.1")])
    ));
    assert!(!is_browser_navigation("GET", &with(&[("accept", "text/htmlx")])));
}

#[test]
fn sign_in_steps_over_plain_http_on_ssl_only_routes_are_refused() {
    let signer = Signer::es256("op1");
    let e = engine_on(&[KEY_A], json!({}), json!({"sslOnly": true}), &signer);
    let h = HeaderMap::new();
    let cb = e
        .login_endpoint(&view("/oauth2/callback", Some("code=x&state=y"), &h, false))
        .unwrap();
    assert!(cb.https_required && !cb.https);
    let cb = e
        .login_endpoint(&view("/oauth2/callback", Some("code=x&state=y"), &h, true))
        .unwrap();
    assert!(!cb.https_required && cb.https);
    // A browser on plain HTTP is sent to HTTPS first, never to the provider.
    let browser = {
        let mut h = HeaderMap::new();
        h.insert("accept", "text/html".parse().unwrap());
        h
    };
    let v = view("/reports", None, &browser, false);
    assert!(matches!(e.decide(&v, NOW * 1000), Outcome::Redirect { .. }));
}

#[test]
fn plain_http_browsers_go_to_https_first_or_are_told_sign_in_needs_it() {
    let signer = Signer::es256("op1");
    let mut browser = HeaderMap::new();
    browser.insert("accept", "text/html".parse().unwrap());
    let to = |e: &Engine, host: &'static str| {
        let mut v = view("/reports/x", Some("q=1"), &browser, false);
        v.host = Some(host);
        match e.decide(&v, NOW * 1000) {
            Outcome::Deny(d) => format!("{:?}", e.login_redirect(&v, &d).unwrap()),
            other => panic!("{other:?}"),
        }
    };
    // The route serves HTTPS too: back to the same URL over HTTPS, not to the provider
    // (its `Secure` cookies would be dropped on plain HTTP).
    let tls = engine_on(&[KEY_A], json!({}), json!({"tls": true}), &signer);
    assert_eq!(
        to(&tls, "app.example.com"),
        r#"Https { route: "app", profile: "people", location: "https://app.example.com/reports/x?q=1" }"#
    );
    // No HTTPS to go to: an error page, never a sign-in that fails at the callback.
    let plain = engine_with(&[KEY_A], json!({}), &signer);
    assert_eq!(
        to(&plain, "app.example.com"),
        r#"HttpsUnavailable { route: "app", profile: "people" }"#
    );
    // Browsers keep `Secure` cookies from loopback hosts over plain HTTP: sign in there.
    for host in ["localhost", "dev.localhost", "127.0.0.1", "[::1]"] {
        for e in [&tls, &plain] {
            assert!(to(e, host).starts_with("SignIn("), "{host}");
        }
    }
    for host in ["localhost.example.com", "127.0.0.1.nip.io", "10.0.0.1"] {
        assert!(!to(&plain, host).starts_with("SignIn("), "{host}");
    }
}

#[test]
fn refreshes_go_one_at_a_time_within_a_budget_and_an_ended_session_stays_ended() {
    let session = |rt: &str, expires: u64| Session {
        subject: "s".into(),
        email: None,
        expires,
        ends: NOW + 100,
        refresh_token: Some(rt.into()),
    };
    let gate = RefreshGate::new(3, 4);
    let a = session("rt-a", NOW + 30);
    assert_eq!(gate.turn(&a, NOW), RefreshTurn::Go);
    // The same cookie again (another request, another tab): it waits for the first.
    assert_eq!(gate.turn(&a, NOW), RefreshTurn::Wait);
    assert_eq!(gate.turn(&a, NOW + REFRESH_HOLD_SECS - 1), RefreshTurn::Wait);
    assert_eq!(gate.turn(&a, NOW + REFRESH_HOLD_SECS), RefreshTurn::Go);
    // The refreshed cookie (a new expiry) is refreshed on its own turn.
    assert_eq!(gate.turn(&session("rt-a", NOW + 60), NOW + 1), RefreshTurn::Go);
    // A refresh that ended the session: every later request of that cookie has none.
    gate.ended(&a);
    assert_eq!(gate.turn(&a, NOW + 50), RefreshTurn::Ended);
    assert_eq!(gate.turn(&session("rt-b", NOW + 30), NOW + 2), RefreshTurn::Go);
    assert_eq!(
        gate.turn(&session("rt-c", NOW + 30), NOW + 2),
        RefreshTurn::Wait,
        "capacity 3"
    );
    // The budget: at most 4 refresh calls a second, whatever the sessions.
    let busy = RefreshGate::new(100, 4);
    let turns: Vec<RefreshTurn> = (0..6)
        .map(|i| busy.turn(&session(&format!("s-{i}"), NOW), NOW))
        .collect();
    assert_eq!(turns.iter().filter(|t| **t == RefreshTurn::Go).count(), 4, "{turns:?}");
    assert_eq!(
        busy.turn(&session("s-5", NOW), NOW + 1),
        RefreshTurn::Go,
        "a new second, a new budget"
    );
}

#[test]
fn id_tokens_name_this_client_as_their_authorized_party() {
    let signer = Signer::es256("op1");
    let e = engine_with(&[KEY_A], json!({}), &signer);
    let l = login(&e);
    let answer = |claims: &Value| {
        json!({"id_token": signer.token_with(json!({"alg": "ES256", "kid": "op1"}), claims)}).to_string()
    };
    let with = |aud: Value, azp: Option<&str>| {
        let mut c = id_claims("n");
        c["aud"] = aud;
        if let Some(azp) = azp {
            c["azp"] = json!(azp);
        }
        l.accept_tokens(answer(&c).as_bytes(), Some("n"), None, NOW)
    };
    assert!(with(json!("portcullis"), None).is_ok());
    assert!(with(json!("portcullis"), Some("portcullis")).is_ok());
    assert!(with(json!(["portcullis", "other"]), Some("portcullis")).is_ok());
    assert_eq!(
        with(json!(["other", "portcullis"]), Some("other")).unwrap_err(),
        LoginError::BadIdToken
    );
    assert_eq!(
        with(json!(["other", "portcullis"]), None).unwrap_err(),
        LoginError::BadIdToken
    );
    assert_eq!(
        with(json!("portcullis"), Some("other")).unwrap_err(),
        LoginError::BadIdToken
    );
}

#[test]
fn only_one_plain_address_is_an_email() {
    let signer = Signer::es256("op1");
    let e = engine_with(&[KEY_A], json!({"allowedDomains": ["example.com"]}), &signer);
    let l = login(&e);
    for bad in [
        " alice@example.com",
        "alice@example.com ",
        "al ice@example.com",
        "a@b@example.com",
        "@example.com",
        "alice\n@example.com",
    ] {
        let claims = json!({"email": bad, "email_verified": true});
        assert!(!l.admits(&claims), "{bad:?}");
    }
    assert!(l.admits(&json!({"email": "Alice@Example.com", "email_verified": true})));
}

#[test]
fn only_top_level_navigations_start_a_sign_in_and_foreign_cookies_hide_nothing() {
    let nav = |pairs: &[(&str, &[u8])]| {
        let mut h = HeaderMap::new();
        h.insert("accept", "text/html".parse().unwrap());
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(v).unwrap(),
            );
        }
        is_browser_navigation("GET", &h)
    };
    assert!(nav(&[]), "a browser without Fetch Metadata");
    assert!(nav(&[("sec-fetch-mode", b"navigate"), ("sec-fetch-dest", b"document")]));
    // Another site's fetch, image or frame: never a sign-in (no cookie minted for it).
    assert!(!nav(&[("sec-fetch-mode", b"no-cors"), ("sec-fetch-dest", b"empty")]));
    assert!(!nav(&[("sec-fetch-mode", b"navigate"), ("sec-fetch-dest", b"iframe")]));
    assert!(!nav(&[
        ("sec-fetch-mode", b"navigate"),
        ("sec-fetch-mode", b"navigate")
    ]));
    // A cookie that is not ASCII (an app's, or a sibling's) hides neither the session nor the
    // pending sign-in.
    let mut h = HeaderMap::new();
    h.insert(
        "cookie",
        http::HeaderValue::from_bytes(b"pref=\xc3\xa9; __Host-portcullis-session-people=abc; x=\xe9").unwrap(),
    );
    assert_eq!(cookie_value(&h, "__Host-portcullis-session-people"), Some("abc"));
    // Pending sign-ins are told apart from another profile's whose name extends this one's.
    let signer = Signer::es256("op1");
    let e = engine_with(&[KEY_A], json!({}), &signer);
    let l = login(&e);
    let mine = l.pending_cookie_name("some-state");
    assert!(l.is_pending_cookie(&mine));
    assert!(!l.is_pending_cookie(&format!(
        "__Host-portcullis-login-people-x-{}",
        &mine[mine.len() - 12..]
    )));
    assert!(!l.is_pending_cookie("__Host-portcullis-session-people"));
}
