//! The Builtin provider's user-delegated access: authorization request, consent through the
//! owner's grant API, code, refresh rotation, revocation and introspection.

use http::HeaderMap;
use serde_json::{Value, json};

use super::{NOW, SIGNING_PEM, bearer, decide, provider_call, token_request_at};
use crate::Engine;
use crate::oauth2::login::pkce_challenge;

const OWNER: &str = "owner-credential-0123456789";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CALLBACK: &str = "https://app.example.com/cb";

fn delegating() -> Engine {
    delegating_on(std::sync::Arc::default(), &["read", "write"])
}

/// The delegating engine on `limiter` (its grant book), app-1 allowed `app1_scopes`.
fn delegating_on(limiter: std::sync::Arc<crate::InMemoryLimiter>, app1_scopes: &[&str]) -> Engine {
    super::engine_on(
        "demo",
        json!({"provider": "Builtin", "builtinTokenTtlSeconds": 600, "requiredScopes": ["read"],
               "builtinDelegation": {"consentUrl": "https://owner.example.com/consent?lang=en",
                                     "refreshTokenTtlSeconds": 86400, "maxGrantSeconds": 604800}}),
        json!({"oauth2SigningKeys": [{"name": "key-1", "pem": SIGNING_PEM}],
               "oauth2Clients": {"app-1": "s3cret", "app-2": "other"},
               "oauth2ClientScopes": {"app-1": app1_scopes, "app-2": ["read"]},
               "oauth2RedirectUris": {"app-1": [CALLBACK], "app-2": ["https://two.example.com/cb", "http://127.0.0.1:9/cb"]},
               "oauth2OwnerToken": OWNER}),
        limiter,
    )
}

fn owner() -> HeaderMap {
    bearer(OWNER)
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// `name` of the query of URL `url`, decoded.
fn param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    crate::query::query_param(q, name).map(|v| v.into_owned())
}

fn authorize(e: &Engine, query: String) -> crate::Reply {
    provider_call(
        e,
        "GET",
        "/api/oauth2/authorize",
        Some(leak(query)),
        &HeaderMap::new(),
        "",
        NOW,
    )
}

fn good_query(client: &str, extra: &str) -> String {
    format!(
        "response_type=code&client_id={client}&redirect_uri={}&scope=read&state=st-1&code_challenge={}&code_challenge_method=S256{extra}",
        portcullis_signatures::percent_encode(CALLBACK),
        pkce_challenge(VERIFIER)
    )
}

/// The consent request handle the authorization endpoint sends the user off with.
fn consent_request(e: &Engine) -> String {
    let r = authorize(e, good_query("app-1", ""));
    assert_eq!(r.status, 302, "{r:?}");
    let to = r.location.unwrap();
    assert!(
        to.starts_with("https://owner.example.com/consent?lang=en&request="),
        "{to}"
    );
    assert_eq!(param(&to, "client_id").as_deref(), Some("app-1"));
    assert_eq!(param(&to, "scope").as_deref(), Some("read"));
    param(&to, "request").unwrap()
}

fn grant(e: &Engine, body: Value, now: u64) -> crate::Reply {
    provider_call(e, "POST", "/api/oauth2/grants", None, &owner(), &body.to_string(), now)
}

/// A grant for `user` through consent: its code.
fn code_for(e: &Engine, user: &str) -> String {
    let request = consent_request(e);
    let r = grant(e, json!({"request": request, "user": user}), NOW);
    assert_eq!(r.status, 201, "{r:?}");
    let body = r.body.unwrap();
    let to = body["redirect_to"].as_str().unwrap();
    assert!(to.starts_with(&format!("{CALLBACK}?code=")), "{to}");
    assert_eq!(param(to, "state").as_deref(), Some("st-1"));
    assert_eq!(param(to, "iss").as_deref(), Some("http://api.example.com/api"));
    assert_eq!(body["grant"]["user"], user);
    assert_eq!(body["grant"]["client_id"], "app-1");
    assert_eq!(body["grant"]["expires_at"], NOW + 604800);
    body["code"].as_str().unwrap().to_owned()
}

fn redeem(e: &Engine, code: &str, verifier: &str, now: u64) -> Result<super::Issued, super::TokenRefused> {
    let body = format!(
        "grant_type=authorization_code&code={code}&redirect_uri={}&code_verifier={verifier}&client_id=app-1&client_secret=s3cret",
        portcullis_signatures::percent_encode(CALLBACK)
    );
    token_request_at(e, &HeaderMap::new(), &body, now)
}

fn refresh(e: &Engine, token: &str, now: u64) -> Result<super::Issued, super::TokenRefused> {
    let body = format!("grant_type=refresh_token&refresh_token={token}&client_id=app-1&client_secret=s3cret");
    token_request_at(e, &HeaderMap::new(), &body, now)
}

/// The app is told the user and the client.
fn admitted(e: &Engine, token: &str, now: u64) -> Option<(String, Option<String>)> {
    let req = super::request("GET", "/api/x", &bearer(token));
    match e.decide(&req, now * 1000) {
        crate::Outcome::Allow(a) => Some((a.identity.into_owned(), a.told.and_then(|t| t.client))),
        _ => None,
    }
}

#[test]
fn a_user_grants_access_and_the_client_calls_as_the_user() {
    let e = delegating();
    let code = code_for(&e, "alice");
    let issued = redeem(&e, &code, VERIFIER, NOW + 5).unwrap();
    assert_eq!(issued.scope.as_deref(), Some("read"));
    assert_eq!(issued.expires_in, 600);
    let refresh_token = issued.refresh_token.clone().unwrap();
    assert_eq!(
        admitted(&e, &issued.access_token, NOW + 6),
        Some(("alice".into(), Some("app-1".into())))
    );
    // Refresh: a new access token and a new refresh token; the old refresh token is spent.
    let next = refresh(&e, &refresh_token, NOW + 100).unwrap();
    let next_refresh = next.refresh_token.clone().unwrap();
    assert_ne!(next_refresh, refresh_token);
    assert_eq!(admitted(&e, &next.access_token, NOW + 101).unwrap().0, "alice");
    // The old refresh token again: reuse, the grant is revoked with all its tokens.
    assert_eq!(
        refresh(&e, &refresh_token, NOW + 102).unwrap_err().code(),
        "invalid_grant"
    );
    assert_eq!(
        refresh(&e, &next_refresh, NOW + 103).unwrap_err().code(),
        "invalid_grant"
    );
    assert_eq!(admitted(&e, &next.access_token, NOW + 104), None);
    assert_eq!(decide(&e, &issued.access_token, NOW + 104).1, "token revoked");
}

#[test]
fn codes_are_single_use_bound_to_client_redirect_and_verifier() {
    let e = delegating();
    // A wrong verifier spends the code.
    let code = code_for(&e, "bob");
    assert_eq!(
        redeem(&e, &code, &"x".repeat(43), NOW).unwrap_err().code(),
        "invalid_grant"
    );
    assert_eq!(redeem(&e, &code, VERIFIER, NOW).unwrap_err().code(), "invalid_grant");
    // Used twice: the grant and the tokens of the first use are revoked.
    let code = code_for(&e, "bob");
    let first = redeem(&e, &code, VERIFIER, NOW).unwrap();
    assert!(admitted(&e, &first.access_token, NOW).is_some());
    assert_eq!(redeem(&e, &code, VERIFIER, NOW).unwrap_err().code(), "invalid_grant");
    assert_eq!(admitted(&e, &first.access_token, NOW), None);
    // Another client, another redirect URI, a late code, a forged code.
    let code = code_for(&e, "bob");
    let other = format!(
        "grant_type=authorization_code&code={code}&redirect_uri={}&code_verifier={VERIFIER}&client_id=app-2&client_secret=other",
        portcullis_signatures::percent_encode(CALLBACK)
    );
    assert_eq!(
        token_request_at(&e, &HeaderMap::new(), &other, NOW).unwrap_err().code(),
        "invalid_grant"
    );
    let code = code_for(&e, "bob");
    let moved = format!(
        "grant_type=authorization_code&code={code}&redirect_uri=https%3A%2F%2Fevil.example%2Fcb&code_verifier={VERIFIER}&client_id=app-1&client_secret=s3cret"
    );
    assert_eq!(
        token_request_at(&e, &HeaderMap::new(), &moved, NOW).unwrap_err().code(),
        "invalid_grant"
    );
    let code = code_for(&e, "bob");
    assert_eq!(
        redeem(&e, &code, VERIFIER, NOW + 61).unwrap_err().code(),
        "invalid_grant"
    );
    let (id, _) = code.split_once('.').unwrap();
    let forged = format!("{id}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(redeem(&e, &forged, VERIFIER, NOW).unwrap_err().code(), "invalid_grant");
    // The forged code did not burn the real one.
    let code = code_for(&e, "carol");
    let (id, _) = code.split_once('.').unwrap();
    let _ = redeem(&e, &format!("{id}.AAAA"), VERIFIER, NOW);
    assert!(redeem(&e, &code, VERIFIER, NOW).is_ok());
    // The client secret is still required.
    let code = code_for(&e, "carol");
    let anonymous = format!("grant_type=authorization_code&code={code}&code_verifier={VERIFIER}&client_id=app-1");
    assert_eq!(
        token_request_at(&e, &HeaderMap::new(), &anonymous, NOW)
            .unwrap_err()
            .code(),
        "invalid_client"
    );
}

#[test]
fn authorization_requests_are_checked_before_anyone_is_redirected() {
    let e = delegating();
    // Unknown client or redirect URI: an error page, never a redirect.
    for q in [
        good_query("app-9", ""),
        good_query("app-1", "").replace("app.example.com", "evil.example"),
        good_query("app-1", "&client_id=app-2"),
        good_query("app-2", "").replace(&portcullis_signatures::percent_encode(CALLBACK), ""),
    ] {
        let r = authorize(&e, q.clone());
        assert_eq!((r.status, r.location.is_none()), (400, true), "{q}: {r:?}");
    }
    // Known client and URI: errors go back to the client, with its state and our issuer.
    let back = |q: String| {
        let r = authorize(&e, q);
        assert_eq!(r.status, 302);
        let to = r.location.unwrap();
        assert!(to.starts_with(&format!("{CALLBACK}?error=")), "{to}");
        assert_eq!(param(&to, "state").as_deref(), Some("st-1"));
        param(&to, "error").unwrap()
    };
    assert_eq!(
        back(good_query("app-1", "").replace("response_type=code", "response_type=token")),
        "unsupported_response_type"
    );
    assert_eq!(
        back(good_query("app-1", "").replace("S256", "plain")),
        "invalid_request"
    );
    assert_eq!(
        back(good_query("app-1", "").replace("&code_challenge=", "&x=")),
        "invalid_request"
    );
    assert_eq!(
        back(good_query("app-1", "").replace("scope=read", "scope=admin")),
        "invalid_scope"
    );
    assert_eq!(back(good_query("app-1", "&scope=write")), "invalid_request");
}

#[test]
fn the_grant_api_needs_the_owner_and_a_live_request() {
    let e = delegating();
    let request = consent_request(&e);
    let body = json!({"request": request, "user": "alice"}).to_string();
    let r = provider_call(&e, "POST", "/api/oauth2/grants", None, &HeaderMap::new(), &body, NOW);
    assert_eq!(r.status, 401);
    let r = provider_call(&e, "POST", "/api/oauth2/grants", None, &bearer("s3cret"), &body, NOW);
    assert_eq!(r.status, 401);
    // Expired, tampered, or an access token in its place.
    assert_eq!(
        grant(&e, json!({"request": request, "user": "alice"}), NOW + 601).status,
        400
    );
    let mut tampered = request.clone();
    tampered.insert(tampered.len() - 3, 'x');
    assert_eq!(
        grant(&e, json!({"request": tampered, "user": "alice"}), NOW).status,
        400
    );
    let token = token_request_at(
        &e,
        &HeaderMap::new(),
        "grant_type=client_credentials&client_id=app-1&client_secret=s3cret",
        NOW,
    )
    .unwrap()
    .access_token;
    assert_eq!(grant(&e, json!({"request": token, "user": "alice"}), NOW).status, 400);
    // Nor may a consent request be used as an access token.
    assert_eq!(admitted(&e, &request, NOW), None);
    // Scope within the request's; lifetime within maxGrantSeconds; a user named.
    assert_eq!(
        grant(&e, json!({"request": request, "user": "alice", "scope": "write"}), NOW).status,
        400
    );
    assert_eq!(
        grant(
            &e,
            json!({"request": request, "user": "alice", "lifetime_seconds": 604801}),
            NOW
        )
        .status,
        400
    );
    assert_eq!(grant(&e, json!({"request": request, "user": ""}), NOW).status, 400);
    assert_eq!(grant(&e, json!({"request": request, "user": "a\nb"}), NOW).status, 400);
    let r = grant(
        &e,
        json!({"request": request, "user": "alice", "lifetime_seconds": 3600}),
        NOW,
    );
    assert_eq!(r.body.unwrap()["grant"]["expires_at"], NOW + 3600);
    // A refusal goes back to the client as access_denied.
    let r = provider_call(
        &e,
        "POST",
        "/api/oauth2/grants/deny",
        None,
        &owner(),
        &json!({"request": request}).to_string(),
        NOW,
    );
    let to = r.body.unwrap()["redirect_to"].as_str().unwrap().to_owned();
    assert_eq!(param(&to, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&to, "state").as_deref(), Some("st-1"));
}

#[test]
fn owners_list_and_revoke_grants_and_the_tokens_stop_at_once() {
    let e = delegating();
    let alice = redeem(&e, &code_for(&e, "alice"), VERIFIER, NOW).unwrap();
    let alice2 = redeem(&e, &code_for(&e, "alice"), VERIFIER, NOW).unwrap();
    let bob = redeem(&e, &code_for(&e, "bob"), VERIFIER, NOW).unwrap();
    let list = provider_call(&e, "GET", "/api/oauth2/grants", Some("user=alice"), &owner(), "", NOW);
    let grants = list.body.unwrap()["grants"].as_array().unwrap().clone();
    assert_eq!(grants.len(), 2);
    assert!(grants.iter().all(|g| g["user"] == "alice" && g["scope"] == "read"));
    // One grant by id.
    let id = grants[0]["id"].as_str().unwrap();
    let path = leak(format!("/api/oauth2/grants/{id}"));
    assert_eq!(provider_call(&e, "GET", path, None, &owner(), "", NOW).status, 200);
    assert_eq!(provider_call(&e, "DELETE", path, None, &owner(), "", NOW).status, 204);
    assert_eq!(provider_call(&e, "DELETE", path, None, &owner(), "", NOW).status, 404);
    let live: Vec<bool> = [&alice, &alice2]
        .iter()
        .map(|t| admitted(&e, &t.access_token, NOW).is_some())
        .collect();
    assert_eq!(live.iter().filter(|l| **l).count(), 1, "one of alice's grants is left");
    // Every grant of a user.
    let r = provider_call(
        &e,
        "DELETE",
        "/api/oauth2/grants",
        Some("user=alice"),
        &owner(),
        "",
        NOW,
    );
    assert_eq!(r.body.unwrap()["revoked"], 1);
    assert_eq!(admitted(&e, &alice.access_token, NOW), None);
    assert_eq!(admitted(&e, &alice2.access_token, NOW), None);
    assert_eq!(
        refresh(&e, alice2.refresh_token.as_deref().unwrap(), NOW)
            .unwrap_err()
            .code(),
        "invalid_grant"
    );
    assert!(admitted(&e, &bob.access_token, NOW).is_some());
    // Every grant of a client; a listing needs a user or a client.
    let r = provider_call(
        &e,
        "DELETE",
        "/api/oauth2/grants",
        Some("client_id=app-1"),
        &owner(),
        "",
        NOW,
    );
    assert_eq!(r.body.unwrap()["revoked"], 1);
    assert_eq!(admitted(&e, &bob.access_token, NOW), None);
    assert_eq!(
        provider_call(&e, "GET", "/api/oauth2/grants", None, &owner(), "", NOW).status,
        400
    );
}

#[test]
fn clients_revoke_their_tokens_and_owners_introspect_them() {
    let e = delegating();
    let issued = redeem(&e, &code_for(&e, "alice"), VERIFIER, NOW).unwrap();
    let introspect = |token: &str| {
        let r = provider_call(
            &e,
            "POST",
            "/api/oauth2/introspect",
            None,
            &owner(),
            leak(format!("token={token}")),
            NOW,
        );
        assert_eq!(r.status, 200);
        r.body.unwrap()
    };
    let a = introspect(&issued.access_token);
    assert_eq!(
        (a["active"].clone(), a["sub"].clone(), a["client_id"].clone()),
        (json!(true), json!("alice"), json!("app-1"))
    );
    let refresh_token = issued.refresh_token.clone().unwrap();
    let r = introspect(&refresh_token);
    assert_eq!(
        (r["active"].clone(), r["token_type"].clone()),
        (json!(true), json!("refresh_token"))
    );
    assert_eq!(introspect("nonsense")["active"], false);
    // Introspection is the owner's: a client's secret does not open it.
    let r = provider_call(
        &e,
        "POST",
        "/api/oauth2/introspect",
        None,
        &bearer("s3cret"),
        "token=x",
        NOW,
    );
    assert_eq!(r.status, 401);
    // Another client cannot revoke it; its own client can (RFC 7009), with the refresh token.
    let revoke = |client: &str, secret: &str, token: &str| {
        let body = leak(format!("token={token}&client_id={client}&client_secret={secret}"));
        provider_call(&e, "POST", "/api/oauth2/revoke", None, &HeaderMap::new(), body, NOW).status
    };
    assert_eq!(revoke("app-2", "other", &refresh_token), 400);
    assert!(admitted(&e, &issued.access_token, NOW).is_some());
    assert_eq!(revoke("app-1", "s3cret", &refresh_token), 200);
    assert_eq!(admitted(&e, &issued.access_token, NOW), None);
    assert_eq!(introspect(&issued.access_token)["active"], false);
    assert_eq!(introspect(&refresh_token)["active"], false);
    assert_eq!(revoke("app-1", "s3cret", "unknown-token"), 200);
    // A client-credentials token: revoking it revokes the client's tokens issued until now.
    let cc = |now| {
        token_request_at(
            &e,
            &HeaderMap::new(),
            "grant_type=client_credentials&client_id=app-1&client_secret=s3cret",
            now,
        )
        .unwrap()
        .access_token
    };
    let before = cc(NOW);
    assert!(admitted(&e, &before, NOW).is_some());
    assert_eq!(revoke("app-1", "s3cret", &before), 200);
    assert_eq!(admitted(&e, &before, NOW + 1), None);
    let after = cc(NOW + 1);
    assert!(admitted(&e, &after, NOW + 1).is_some());
}

#[test]
fn metadata_names_every_endpoint_rfc_8414_requires() {
    let e = delegating();
    let req = super::request("GET", "/.well-known/oauth-authorization-server/api", &HeaderMap::new());
    let doc = e.provider_document(&req).unwrap().body;
    for field in [
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "response_types_supported",
    ] {
        assert!(doc.get(field).is_some(), "{field} missing: {doc}");
    }
    assert_eq!(
        doc["authorization_endpoint"],
        "http://api.example.com/api/oauth2/authorize"
    );
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        doc["introspection_endpoint"],
        "http://api.example.com/api/oauth2/introspect"
    );
    assert_eq!(doc["revocation_endpoint"], "http://api.example.com/api/oauth2/revoke");
}

/// A grant outlives a reload; a scope the client's Secret no longer allows is not in the
/// tokens its refresh gives.
#[test]
fn grants_survive_reloads_and_refreshes_follow_the_clients_scopes() {
    let limiter: std::sync::Arc<crate::InMemoryLimiter> = std::sync::Arc::default();
    let e = delegating_on(limiter.clone(), &["read", "write"]);
    let request = consent_request(&e);
    let r = grant(&e, json!({"request": request, "user": "alice"}), NOW);
    let code = r.body.unwrap()["code"].as_str().unwrap().to_owned();
    let issued = redeem(&e, &code, VERIFIER, NOW).unwrap();
    assert_eq!(issued.scope.as_deref(), Some("read"));
    let refresh_token = issued.refresh_token.clone().unwrap();
    // Reloaded with app-1 allowed only "write": the grant holds, but "read" is no longer
    // given: refused (before the refresh token rotates), asked for or not.
    let reloaded = delegating_on(limiter.clone(), &["write"]);
    assert_eq!(
        refresh(&reloaded, &refresh_token, NOW + 10).unwrap_err().code(),
        "invalid_scope"
    );
    let asked = format!(
        "grant_type=refresh_token&refresh_token={refresh_token}&scope=read&client_id=app-1&client_secret=s3cret"
    );
    assert_eq!(
        token_request_at(&reloaded, &HeaderMap::new(), &asked, NOW + 10)
            .unwrap_err()
            .code(),
        "invalid_scope"
    );
    // Allowed again: the same refresh token still works (it did not rotate).
    let again = delegating_on(limiter, &["read", "write"]);
    let next = refresh(&again, &refresh_token, NOW + 20).unwrap();
    assert_eq!(next.scope.as_deref(), Some("read"));
}

/// Wrong owner credentials are counted per address only: the owner's backend, elsewhere,
/// is not locked out by them.
#[test]
fn wrong_owner_credentials_lock_out_their_address_only() {
    let e = delegating();
    let budget = crate::throttle::Budget::default().per_address;
    for n in 0..budget + 5 {
        let r = provider_call(
            &e,
            "GET",
            "/api/oauth2/grants",
            Some("user=x"),
            &bearer(&format!("guess-{n}-0000000000")),
            "",
            NOW,
        );
        assert!(matches!(r.status, 401 | 429), "{r:?}");
    }
    let r = provider_call(&e, "GET", "/api/oauth2/grants", Some("user=x"), &owner(), "", NOW);
    assert_eq!(
        r.status, 429,
        "the guessing address is throttled, right credential or not"
    );
    let mut elsewhere = super::request("GET", "/api/oauth2/grants", &owner());
    elsewhere.peer = "10.9.9.9".parse().unwrap();
    elsewhere.query = Some("user=x");
    let input = crate::CallInput {
        method: "GET",
        headers: &owner(),
        query: Some("user=x"),
        body: "",
    };
    let r = e
        .provider_endpoint(&elsewhere)
        .unwrap()
        .serve(&input, &super::random(), NOW * 1000, NOW * 1000);
    assert_eq!(r.status, 200, "{r:?}");
}

/// From the review: the consent page can learn what a request really asks for, and pin it;
/// a code never redeemed does not keep its grant alive; a grant's tokens end with it.
#[test]
fn consent_requests_describe_themselves_and_unredeemed_grants_end_with_their_code() {
    let e = delegating();
    let request = consent_request(&e);
    let described = provider_call(
        &e,
        "POST",
        "/api/oauth2/grants/describe",
        None,
        &owner(),
        &json!({"request": request}).to_string(),
        NOW,
    );
    let d = described.body.unwrap();
    assert_eq!(
        (d["client_id"].clone(), d["scope"].clone()),
        (json!("app-1"), json!("read"))
    );
    assert_eq!(d["redirect_uri"], CALLBACK);
    // A page that pins the client it showed is refused another's request.
    let pinned = grant(
        &e,
        json!({"request": request, "user": "alice", "client_id": "app-2", "scope": "read"}),
        NOW,
    );
    assert_eq!(pinned.status, 400, "{pinned:?}");
    // Pinning the client pins the scope shown too.
    let unscoped = grant(
        &e,
        json!({"request": request, "user": "alice", "client_id": "app-1"}),
        NOW,
    );
    assert_eq!(unscoped.status, 400, "{unscoped:?}");
    let both = grant(
        &e,
        json!({"request": request, "user": "alice", "client_id": "app-1", "scope": "read"}),
        NOW,
    );
    assert_eq!(both.status, 201, "{both:?}");
    let unredeemed = both.body.unwrap()["grant"]["id"].as_str().unwrap().to_owned();
    // 300 grants whose codes nobody redeems: after the codes' minute they are gone.
    for n in 0..super::super::grants::MAX_GRANTS_PER_USER {
        assert_eq!(
            grant(&e, json!({"request": request, "user": "dave"}), NOW).status,
            201,
            "grant {n}"
        );
    }
    assert_eq!(grant(&e, json!({"request": request, "user": "dave"}), NOW).status, 409);
    let later = provider_call(
        &e,
        "GET",
        "/api/oauth2/grants",
        Some("user=dave"),
        &owner(),
        "",
        NOW + 61,
    );
    assert_eq!(later.body.unwrap()["grants"], json!([]));
    let by_id = leak(format!("/api/oauth2/grants/{unredeemed}"));
    assert_eq!(
        provider_call(&e, "GET", by_id, None, &owner(), "", NOW + 61).status,
        404
    );
    assert_eq!(
        provider_call(&e, "DELETE", by_id, None, &owner(), "", NOW + 61).status,
        404
    );
    let consent = consent_request(&e);
    assert_eq!(
        grant(&e, json!({"request": consent, "user": "dave"}), NOW + 61).status,
        201
    );
    // A one-hour grant: its last token ends a skew allowance before the grant does.
    let r = grant(
        &e,
        json!({"request": consent, "user": "erin", "lifetime_seconds": 3600}),
        NOW + 61,
    );
    let code = r.body.unwrap()["code"].as_str().unwrap().to_owned();
    let first = redeem(&e, &code, VERIFIER, NOW + 61).unwrap();
    let issued = refresh(&e, first.refresh_token.as_deref().unwrap(), NOW + 3600 + 61 - 100).unwrap();
    assert_eq!(issued.expires_in, 40);
    assert_eq!(decide(&e, &issued.access_token, NOW + 3600 + 61).1, "token expired");
}

/// From the review: one credential, a form, each client parameter once, the redirect URI the
/// code went to.
#[test]
fn token_requests_are_read_one_way_only() {
    let e = delegating();
    let form = "grant_type=client_credentials&client_id=app-1&client_secret=s3cret";
    let call = |headers: &HeaderMap, body: &str| {
        provider_call(
            &e,
            "POST",
            "/api/oauth2/token",
            None,
            headers,
            leak(body.to_owned()),
            NOW,
        )
        .status
    };
    assert_eq!(call(&HeaderMap::new(), form), 200);
    let mut json_body = HeaderMap::new();
    json_body.insert("content-type", "application/json".parse().unwrap());
    assert_eq!(call(&json_body, form), 400);
    assert_eq!(call(&HeaderMap::new(), &format!("{form}&client_id=app-2")), 400);
    let mut two = bearer("x");
    two.append("authorization", "Basic YXBwLTE6czNjcmV0".parse().unwrap());
    assert_eq!(call(&two, "grant_type=client_credentials"), 400);
    let mut basic = HeaderMap::new();
    basic.insert("authorization", "Basic YXBwLTE6czNjcmV0".parse().unwrap());
    assert_eq!(call(&basic, "grant_type=client_credentials&client_id=app-1"), 200);
    assert_eq!(call(&basic, "grant_type=client_credentials&client_id=app-2"), 400);
    // An authorization request without redirect_uri: a token request naming another is refused.
    let q = good_query("app-1", "").replace(
        &format!("&redirect_uri={}", portcullis_signatures::percent_encode(CALLBACK)),
        "",
    );
    let to = authorize(&e, q).location.unwrap();
    let request = param(&to, "request").unwrap();
    let code = grant(&e, json!({"request": request, "user": "alice"}), NOW)
        .body
        .unwrap()["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = format!(
        "grant_type=authorization_code&code={code}&redirect_uri=https%3A%2F%2Fevil.example%2Fcb&code_verifier={VERIFIER}&client_id=app-1&client_secret=s3cret"
    );
    assert_eq!(call(&HeaderMap::new(), &body), 400);
}
