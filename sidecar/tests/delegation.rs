//! Black-box test of the Builtin provider's user-delegated access through the real binary:
//! the authorization endpoint sends the user to the owner's consent page, the owner's backend
//! makes the grant through the grant API, the client redeems the code, calls the API as the
//! user (the app is told user and client), refreshes, and is refused at once once the owner
//! revokes the grant.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use portcullis_limits::testing::Redis;
use serde_json::{Value, json};

const SIGNING_PEM: &str = include_str!("../signatures/tests/keys/test-key-ecc-p256.key");
const OWNER: &str = "owner-credential-0123456789";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const CALLBACK: &str = "https://app.example.com/cb";

async fn call(
    sidecar: &Sidecar,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut req = Request::builder().method(method).uri(sidecar.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    send(&client(), req).await.expect("sidecar answers")
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

fn query_param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    q.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn write_config(dir: &std::path::Path, backend: u16) {
    loaded(
        "g1",
        json!({
            "profiles": [{"name": "accelerator",
                "auth": {"type": "OAuth2", "provider": "Builtin", "builtinTokenTtlSeconds": 600,
                         "requiredScopes": ["read"],
                         "builtinDelegation": {"consentUrl": "https://owner.example.com/consent",
                                               "refreshTokenTtlSeconds": 86400, "maxGrantSeconds": 604800}}}],
            "routes": [{"name": "api", "pathPrefix": "/api", "profiles": ["accelerator"],
                "backend": {"type": "Local", "port": backend}}],
        }),
        json!({"profiles": {"accelerator": {"oauth2SigningKeys": [{"name": "key-1", "pem": SIGNING_PEM}],
            "oauth2Clients": {"app-1": "s3cret"}, "oauth2ClientScopes": {"app-1": ["read"]},
            "oauth2RedirectUris": {"app-1": [CALLBACK]}, "oauth2OwnerToken": OWNER}}}),
    )
    .write_dir(dir)
    .unwrap();
}

const BASIC: &str = "Basic YXBwLTE6czNjcmV0"; // app-1:s3cret

fn authorize_path() -> String {
    format!(
        "/api/oauth2/authorize?response_type=code&client_id=app-1&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcb\
         &scope=read&state=xyz&code_challenge={CHALLENGE}&code_challenge_method=S256"
    )
}

/// A grant for `user`: authorized on `at`, made through `owner_at`'s grant API: its code.
async fn code_for(at: &Sidecar, owner_at: &Sidecar, user: &str) -> String {
    let (s, h, _) = call(at, "GET", &authorize_path(), &[], "").await;
    assert_eq!(s, StatusCode::FOUND);
    let request = query_param(h["location"].to_str().unwrap(), "request").unwrap();
    let grant = json!({"request": request, "user": user}).to_string();
    let owner = format!("Bearer {OWNER}");
    let (s, _, body) = call(
        owner_at,
        "POST",
        "/api/oauth2/grants",
        &[("authorization", &owner)],
        &grant,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
    query_param(json_of(&body)["redirect_to"].as_str().unwrap(), "code").unwrap()
}

/// Redeems `code` at `at`: (status, answer).
async fn redeem(at: &Sidecar, code: &str) -> (StatusCode, Value) {
    let form = format!(
        "grant_type=authorization_code&code={code}&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcb&code_verifier={VERIFIER}"
    );
    let (s, _, body) = call(
        at,
        "POST",
        "/api/oauth2/token",
        &[FORM, ("authorization", BASIC)],
        &form,
    )
    .await;
    (s, json_of(&body))
}

async fn refresh(at: &Sidecar, token: &str) -> (StatusCode, Value) {
    let form = format!("grant_type=refresh_token&refresh_token={token}");
    let (s, _, body) = call(
        at,
        "POST",
        "/api/oauth2/token",
        &[FORM, ("authorization", BASIC)],
        &form,
    )
    .await;
    (s, json_of(&body))
}

async fn api(at: &Sidecar, access: &str) -> StatusCode {
    call(
        at,
        "GET",
        "/api/x",
        &[("authorization", &format!("Bearer {access}"))],
        "",
    )
    .await
    .0
}

/// How long until `access` is refused at `at` (bounded by `within`).
async fn refused_within(at: &Sidecar, access: &str, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if api(at, access).await == StatusCode::UNAUTHORIZED {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Two sidecars sharing a Redis: a grant made on one is redeemed on the other, refreshed
/// anywhere, and a revocation on one is enforced by the other within a second.
#[tokio::test]
async fn replicas_sharing_a_store_share_grants_and_revocations() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), backend.port());
    let store = ["--limits-store", &redis.url(), "--limits-store-timeout", "500ms"];
    let a = Sidecar::start_with(dir.path(), &store).await;
    let b = Sidecar::start_with(dir.path(), &store).await;
    let owner = format!("Bearer {OWNER}");

    // Authorized on a, made on b, redeemed on a, used on b; refreshed on b; the grant listed on a.
    let code = code_for(&a, &b, "alice").await;
    let (s, tokens) = redeem(&a, &code).await;
    assert_eq!(s, StatusCode::OK, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    assert_eq!(api(&b, &access).await, StatusCode::OK);
    let first_refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (s, next) = refresh(&b, &first_refresh).await;
    assert_eq!(s, StatusCode::OK, "{next}");
    let (_, _, body) = call(
        &a,
        "GET",
        "/api/oauth2/grants?user=alice",
        &[("authorization", &owner)],
        "",
    )
    .await;
    assert_eq!(json_of(&body)["grants"].as_array().unwrap().len(), 1);

    // The rotated-out refresh token, presented on a: a reuse, the grant revoked for both.
    let (s, _) = refresh(&a, &first_refresh).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = refresh(&b, next["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "the grant is revoked on the other replica too"
    );
    let access2 = next["access_token"].as_str().unwrap();
    assert!(refused_within(&b, access2, Duration::from_secs(3)).await.is_some());

    // The same code redeemed again on the other replica: refused.
    let (s, _) = redeem(&b, &code).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // The owner revokes on a: b refuses within a second.
    let code = code_for(&b, &b, "bob").await;
    let (_, tokens) = redeem(&b, &code).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    assert_eq!(api(&b, &access).await, StatusCode::OK);
    let (s, _, body) = call(
        &a,
        "DELETE",
        "/api/oauth2/grants?user=bob",
        &[("authorization", &owner)],
        "",
    )
    .await;
    assert_eq!((s, json_of(&body)["revoked"].clone()), (StatusCode::OK, json!(1)));
    assert_eq!(
        api(&a, &access).await,
        StatusCode::UNAUTHORIZED,
        "at once where it was revoked"
    );
    let took = refused_within(&b, &access, Duration::from_secs(3)).await;
    assert!(
        took.is_some_and(|t| t < Duration::from_millis(1500)),
        "refused on the other replica after {took:?}"
    );

    // A replica started after the revocation knows it.
    let c = Sidecar::start_with(dir.path(), &store).await;
    assert!(refused_within(&c, &access, Duration::from_secs(2)).await.is_some());

    // One code redeemed on both at once: never two token sets that both work.
    let code = code_for(&a, &a, "carol").await;
    let (ra, rb) = tokio::join!(redeem(&a, &code), redeem(&b, &code));
    let won: Vec<&Value> = [&ra, &rb]
        .into_iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .map(|(_, v)| v)
        .collect();
    assert!(won.len() <= 1, "both redeemed one code: {ra:?} {rb:?}");
}

#[tokio::test]
async fn a_user_grants_a_client_access_and_the_owner_revokes_it() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), backend.port());
    let sidecar = Sidecar::start(dir.path()).await;
    let owner = format!("Bearer {OWNER}");

    // 1. The client sends the user to the authorization endpoint; the sidecar sends them on to
    // the owner's consent page with the checked request.
    let authorize = authorize_path();
    let (s, h, _) = call(&sidecar, "GET", &authorize, &[], "").await;
    assert_eq!(s, StatusCode::FOUND);
    let consent = h["location"].to_str().unwrap().to_owned();
    assert!(
        consent.starts_with("https://owner.example.com/consent?request="),
        "{consent}"
    );
    let request = query_param(&consent, "request").unwrap();

    // 2. The owner's backend makes the grant and gets the code to hand back.
    let grant = json!({"request": request, "user": "alice"}).to_string();
    let (s, _, body) = call(
        &sidecar,
        "POST",
        "/api/oauth2/grants",
        &[("authorization", "Bearer wrong-credential-000")],
        &grant,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, body2) = call(
        &sidecar,
        "POST",
        "/api/oauth2/grants",
        &[("authorization", &owner)],
        &grant,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body2));
    let made = json_of(&body2);
    let redirect_to = made["redirect_to"].as_str().unwrap();
    assert!(
        redirect_to.starts_with("https://app.example.com/cb?code="),
        "{redirect_to}"
    );
    assert_eq!(query_param(redirect_to, "state").as_deref(), Some("xyz"));
    let code = query_param(redirect_to, "code").unwrap();
    drop(body);

    // 3. The client redeems the code.
    let form = format!(
        "grant_type=authorization_code&code={code}&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcb&code_verifier={VERIFIER}"
    );
    let basic = BASIC;
    let (s, h, body) = call(
        &sidecar,
        "POST",
        "/api/oauth2/token",
        &[FORM, ("authorization", basic)],
        &form,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(h["cache-control"], "no-store");
    let tokens = json_of(&body);
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let first_refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    // The same code again: refused, and the grant is revoked.
    assert_eq!(redeem(&sidecar, &code).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(
        api(&sidecar, &access).await,
        StatusCode::UNAUTHORIZED,
        "a code used twice revokes its grant"
    );

    // Again, properly this time.
    let code = code_for(&sidecar, &sidecar, "alice").await;
    let (_, tokens) = redeem(&sidecar, &code).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh_token, first_refresh);

    // 4. The API, as alice through app-1: the app is told both, and nothing the client wrote.
    let bearer = format!("Bearer {access}");
    let (s, _, body) = call(
        &sidecar,
        "GET",
        "/api/x",
        &[("authorization", &bearer), ("x-portcullis-client", "forged")],
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let seen = json_of(&body);
    assert_eq!(seen["headers"]["x-portcullis-identity"], json!(["alice"]));
    assert_eq!(seen["headers"]["x-portcullis-client"], json!(["app-1"]));

    // 5. Refresh: a new pair; the owner's introspection sees the new access token.
    let (s, next) = refresh(&sidecar, &refresh_token).await;
    assert_eq!(s, StatusCode::OK);
    let access2 = next["access_token"].as_str().unwrap().to_owned();
    let (_, _, body) = call(
        &sidecar,
        "POST",
        "/api/oauth2/introspect",
        &[FORM, ("authorization", &owner)],
        &format!("token={access2}"),
    )
    .await;
    let i = json_of(&body);
    assert_eq!(
        (i["active"].clone(), i["sub"].clone(), i["client_id"].clone()),
        (json!(true), json!("alice"), json!("app-1"))
    );

    // 6. The owner lists alice's grants and revokes them: refused on the next call.
    let (_, _, body) = call(
        &sidecar,
        "GET",
        "/api/oauth2/grants?user=alice",
        &[("authorization", &owner)],
        "",
    )
    .await;
    let listed: Value = json_of(&body);
    assert_eq!(listed["grants"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(api(&sidecar, &access2).await, StatusCode::OK);
    let (s, _, body) = call(
        &sidecar,
        "DELETE",
        "/api/oauth2/grants?user=alice",
        &[("authorization", &owner)],
        "",
    )
    .await;
    assert_eq!((s, json_of(&body)["revoked"].clone()), (StatusCode::OK, json!(1)));
    assert_eq!(api(&sidecar, &access2).await, StatusCode::UNAUTHORIZED);
    let spent = next["refresh_token"].as_str().unwrap();
    assert_eq!(refresh(&sidecar, spent).await.0, StatusCode::BAD_REQUEST);

    // 7. The metadata names every endpoint; the audit log holds no code, token or credential.
    let (_, _, body) = call(&sidecar, "GET", "/.well-known/oauth-authorization-server/api", &[], "").await;
    let meta = json_of(&body);
    assert_eq!(
        meta["authorization_endpoint"],
        format!("{}", sidecar.url("/api/oauth2/authorize"))
    );
    assert_eq!(
        meta["grant_types_supported"],
        json!(["authorization_code", "refresh_token", "client_credentials"])
    );
    // Every call above is audited: 18 of them.
    let audit = sidecar.wait_audit(18).await;
    let text = audit.iter().map(Value::to_string).collect::<String>();
    for secret in [&code[..], &access, &refresh_token, OWNER, "s3cret"] {
        assert!(!text.contains(secret), "the audit log holds a secret");
    }
    assert!(
        audit
            .iter()
            .any(|l| l["reason"] == "oauth2 grant made" && l["identity"] == "owner"),
        "{text}"
    );
}
