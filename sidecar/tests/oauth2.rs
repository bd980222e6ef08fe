//! Black-box tests of OAuth2 profiles through the real binary: bearer JWTs verified with a
//! key set served by an in-test JWKS endpoint (keys generated and tokens signed here), key
//! rotation, and the Builtin token provider (client credentials in, token out, token used).

mod common;
#[path = "common/jwt.rs"]
mod jwt;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use jwt::{B64, ISSUER, Signer, now};
use portcullis_signatures::{Algorithm, Key};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The Builtin provider's token signing key in these tests (EC P-256).
const SIGNING_PEM: &str = include_str!("../signatures/tests/keys/test-key-ecc-p256.key");

fn claims(sub: &str, scope: &str, exp: u64) -> Value {
    json!({"iss": ISSUER, "sub": sub, "aud": "finance-api", "iat": now(), "exp": exp, "scope": scope})
}

/// A JWKS endpoint on 127.0.0.1 serving whatever document it is given; counts fetches.
struct Jwks {
    url: String,
    doc: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    /// How long each answer is held back, in milliseconds.
    delay_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Jwks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Jwks {
    async fn start(keys: &[&Signer]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let doc = Arc::new(Mutex::new(String::new()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (d, f, w) = (doc.clone(), fetches.clone(), delay_ms.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (d, f, w) = (d.clone(), f.clone(), w.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                        f.fetch_add(1, Ordering::SeqCst);
                        let body = d.lock().unwrap().clone();
                        let delay = Duration::from_millis(w.load(Ordering::SeqCst));
                        async move {
                            tokio::time::sleep(delay).await;
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let jwks = Self {
            url,
            doc,
            fetches,
            delay_ms,
            task,
        };
        jwks.publish(keys);
        jwks
    }

    fn publish(&self, keys: &[&Signer]) {
        *self.doc.lock().unwrap() = json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string();
    }
}

async fn call(sidecar: &Sidecar, token: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    get_with(&sidecar.url("/api/x"), &[("authorization", &format!("Bearer {token}"))]).await
}

/// Calls until the answer is `status` (the key set is fetched in the background).
async fn eventually(sidecar: &Sidecar, token: &str, status: StatusCode, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (s, _, body) = call(sidecar, token).await;
        if s == status {
            return json_of(&body);
        }
        assert!(Instant::now() < deadline, "still {s} instead of {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn bearer_jwts_are_verified_with_the_jwks_and_follow_rotation() {
    let backend = Backend::start().await;
    let (k1, k2) = (Signer::new("k1"), Signer::new("k2"));
    let jwks = Jwks::start(&[&k1]).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &jwks.url, backend.port());
    let sidecar = Sidecar::start_with(dir.path(), &["--jwks-min-refresh-interval", "1s"]).await;

    let good = k1.token(claims("alice", "read write", now() + 300));
    let body = eventually(&sidecar, &good, StatusCode::OK, Duration::from_secs(10)).await;
    assert_eq!(body["headers"]["x-portcullis-identity"], json!(["alice"]));
    assert_eq!(body["headers"]["x-portcullis-profile"], json!(["idp"]));

    // No token: the plain challenge; a bad or expired one: invalid_token.
    let (s, h, _) = get_with(&sidecar.url("/api/x"), &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h["www-authenticate"], "Bearer realm=\"api\"");
    let expired = k1.token(claims("alice", "read", now() - 3600));
    let (s, h, _) = call(&sidecar, &expired).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h["www-authenticate"], "Bearer realm=\"api\", error=\"invalid_token\"");
    let mut tampered: Vec<&str> = good.split('.').collect();
    let forged = B64.encode(claims("root", "read", now() + 300).to_string());
    tampered[1] = &forged;
    assert_eq!(call(&sidecar, &tampered.join(".")).await.0, StatusCode::UNAUTHORIZED);
    let mut wrong_aud = claims("alice", "read", now() + 300);
    wrong_aud["aud"] = json!("other-api");
    assert_eq!(call(&sidecar, &k1.token(wrong_aud)).await.0, StatusCode::UNAUTHORIZED);

    // A valid token without the required scope: 403.
    let (s, h, _) = call(&sidecar, &k1.token(claims("alice", "write", now() + 300))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        h["www-authenticate"],
        "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"read\""
    );

    // Rotation: the IdP now publishes k2 only; a k2 token is admitted once the set is
    // fetched again (asked for by the unknown kid), and k1 tokens no longer are.
    jwks.publish(&[&k2]);
    let fetched = jwks.fetches.load(Ordering::SeqCst);
    let rotated = k2.token(claims("bob", "read", now() + 300));
    let body = eventually(&sidecar, &rotated, StatusCode::OK, Duration::from_secs(10)).await;
    assert_eq!(body["headers"]["x-portcullis-identity"], json!(["bob"]));
    assert!(jwks.fetches.load(Ordering::SeqCst) > fetched);
    assert_eq!(call(&sidecar, &good).await.0, StatusCode::UNAUTHORIZED);

    // The IdP fails: the last keys are kept.
    *jwks.doc.lock().unwrap() = "not json".into();
    let unknown = Signer::new("k3").token(claims("eve", "read", now() + 300));
    for _ in 0..15 {
        assert_eq!(call(&sidecar, &unknown).await.0, StatusCode::UNAUTHORIZED);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(call(&sidecar, &rotated).await.0, StatusCode::OK);

    // Nothing secret in the audit log: no token.
    let lines = sidecar.wait_audit(20).await;
    assert!(lines.iter().any(|l| l["identity"] == "bob"));
    let audit = std::fs::read_to_string(&sidecar.audit).unwrap();
    assert!(!audit.contains(&good) && !audit.contains(&rotated));
}

async fn token_request(sidecar: &Sidecar, basic: Option<(&str, &str)>, form: &str) -> (StatusCode, Value) {
    let mut req =
        Request::post(sidecar.url("/api/oauth2/token")).header("content-type", "application/x-www-form-urlencoded");
    if let Some((id, secret)) = basic {
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        req = req.header("authorization", format!("Basic {v}"));
    }
    let req = req.body(Full::new(Bytes::from(form.to_owned()))).unwrap();
    let (s, h, body) = send(&client(), req).await.expect("sidecar answers");
    if s == StatusCode::OK {
        assert_eq!(h["cache-control"], "no-store");
    }
    (s, json_of(&body))
}

#[tokio::test]
async fn the_builtin_provider_issues_tokens_for_its_clients() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    loaded(
        "g1",
        json!({
            "profiles": [{"name": "accelerator", "rateLimitPerMinute": 2,
                "auth": {"type": "OAuth2", "provider": "Builtin", "builtinTokenTtlSeconds": 600,
                         "requiredScopes": ["read"]}}],
            "routes": [{"name": "api", "pathPrefix": "/api", "profiles": ["accelerator"],
                "backend": {"type": "Local", "port": backend.port()}}],
        }),
        json!({"profiles": {"accelerator": {"oauth2SigningKeys": [{"name": "key-1", "pem": SIGNING_PEM}], "oauth2Clients": {"app-1": "s3cret", "app-2": "other secret"},
            "oauth2ClientScopes": {"app-1": ["read"], "app-2": ["read", "write"]}}}}),
    )
    .write_dir(dir.path())
    .unwrap();
    let sidecar = Sidecar::start(dir.path()).await;

    // client_secret_basic.
    let (s, token) = token_request(&sidecar, Some(("app-1", "s3cret")), "grant_type=client_credentials").await;
    assert_eq!(s, StatusCode::OK, "{token}");
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["expires_in"], 600);
    assert_eq!(
        token["scope"], "read",
        "no scope asked: every scope the client may have"
    );
    let access = token["access_token"].as_str().unwrap().to_owned();
    // client_secret_post, asking for a scope.
    let (s, posted) = token_request(
        &sidecar,
        None,
        "grant_type=client_credentials&client_id=app-2&client_secret=other+secret&scope=read+write",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{posted}");
    assert_eq!(posted["scope"], "read write");

    // Wrong or unknown clients.
    let (s, body) = token_request(&sidecar, Some(("app-1", "wrong")), "grant_type=client_credentials").await;
    assert_eq!(
        (s, body),
        (StatusCode::UNAUTHORIZED, json!({"error": "invalid_client"}))
    );
    let (s, body) = token_request(
        &sidecar,
        None,
        "grant_type=client_credentials&client_id=nobody&client_secret=s3cret",
    )
    .await;
    assert_eq!(
        (s, body["error"].clone()),
        (StatusCode::UNAUTHORIZED, json!("invalid_client"))
    );
    let (s, body) = token_request(&sidecar, Some(("app-1", "s3cret")), "grant_type=password").await;
    assert_eq!(
        (s, body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("unsupported_grant_type"))
    );
    // A scope the client may not have: no token (app-1 may have only read).
    let (s, body) = token_request(
        &sidecar,
        Some(("app-1", "s3cret")),
        "grant_type=client_credentials&scope=read+write",
    )
    .await;
    assert_eq!((s, body), (StatusCode::BAD_REQUEST, json!({"error": "invalid_scope"})));

    // The tokens open the API; token requests were not counted against the limit (2/min).
    let (s, _, body) = call(&sidecar, &access).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json_of(&body)["headers"]["x-portcullis-identity"], json!(["app-1"]));
    let (s, _, body) = call(&sidecar, posted["access_token"].as_str().unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json_of(&body)["headers"]["x-portcullis-identity"], json!(["app-2"]));
    assert_eq!(call(&sidecar, &access).await.0, StatusCode::TOO_MANY_REQUESTS);

    // Tampered, expired or foreign tokens: 401.
    let mut parts: Vec<String> = access.split('.').map(str::to_owned).collect();
    let mut claims: Value = serde_json::from_slice(&B64.decode(&parts[1]).unwrap()).unwrap();
    claims["exp"] = json!(now() - 3600);
    parts[1] = B64.encode(claims.to_string());
    let (s, h, _) = call(&sidecar, &parts.join(".")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h["www-authenticate"], "Bearer realm=\"api\", error=\"invalid_token\"");
    let foreign = Key::hmac(b"s3cret").unwrap();
    let signed = format!(
        "{}.{}",
        B64.encode(r#"{"alg":"HS256"}"#),
        B64.encode(json!({"sub": "app-1", "exp": now() + 60, "scope": "read"}).to_string())
    );
    let sig = foreign.sign(Algorithm::HmacSha256, signed.as_bytes()).unwrap();
    let forged = format!("{signed}.{}", B64.encode(sig));
    assert_eq!(call(&sidecar, &forged).await.0, StatusCode::UNAUTHORIZED);

    let lines = sidecar.wait_audit(11).await;
    assert_eq!(lines[0]["identity"], "app-1");
    assert_eq!(lines[0]["reason"], "oauth2 token issued");
    assert_eq!(lines[2]["reason"], "invalid_client");
    assert_eq!(lines[5]["reason"], "invalid_scope");
    let audit = std::fs::read_to_string(&sidecar.audit).unwrap();
    assert!(!audit.contains(&access) && !audit.contains("s3cret"), "{audit}");

    // The provider's metadata (RFC 8414), at the standard place for an issuer with a path and
    // under the route, naming what it serves; its keys verify the tokens it issued.
    let base = format!("http://127.0.0.1:{}/api", sidecar.inbound.port());
    for path in [
        "/.well-known/oauth-authorization-server/api",
        "/api/.well-known/oauth-authorization-server",
    ] {
        let (s, _, body) = get_with(&sidecar.url(path), &[]).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        let meta = json_of(&body);
        for required in ["issuer", "response_types_supported"] {
            assert!(meta.get(required).is_some(), "RFC 8414 requires {required}: {meta}");
        }
        assert_eq!(meta["issuer"], base.as_str());
        assert_eq!(meta["token_endpoint"], format!("{base}/oauth2/token"));
        assert_eq!(meta["jwks_uri"], format!("{base}/oauth2/jwks"));
        assert_eq!(meta["grant_types_supported"], json!(["client_credentials"]));
        assert_eq!(meta["scopes_supported"], json!(["read", "write"]));
    }
    let (s, _, body) = get_with(&sidecar.url("/api/oauth2/jwks"), &[]).await;
    assert_eq!(s, StatusCode::OK);
    let jwks = json_of(&body);
    let jwk = &jwks["keys"][0];
    assert_eq!(
        (jwk["kty"].as_str(), jwk["alg"].as_str(), jwk["kid"].as_str()),
        (Some("EC"), Some("ES256"), Some("key-1"))
    );
    assert!(jwk.get("d").is_none(), "no private part");
    let (signed, sig) = access.rsplit_once('.').unwrap();
    let point = [
        &[4u8][..],
        &B64.decode(jwk["x"].as_str().unwrap()).unwrap(),
        &B64.decode(jwk["y"].as_str().unwrap()).unwrap(),
    ]
    .concat();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &point)
        .verify(signed.as_bytes(), &B64.decode(sig).unwrap())
        .expect("the published key verifies the issued token");
    let claims: Value = serde_json::from_slice(&B64.decode(access.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(claims["iss"], base.as_str(), "RFC 9068: the token names its issuer");
    // Only for routes of a Builtin provider.
    assert_eq!(
        get_with(&sidecar.url("/.well-known/oauth-authorization-server/other"), &[])
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_builtin_token_endpoint_refuses_clients_outside_the_trusted_ranges() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    loaded(
        "g1",
        json!({
            "profiles": [{"name": "accelerator",
                "trustedIpRanges": [{"from": "192.168.1.0", "to": "192.168.1.255"}],
                "auth": {"type": "OAuth2", "provider": "Builtin", "builtinTokenTtlSeconds": 600}}],
            "routes": [{"name": "api", "pathPrefix": "/api", "profiles": ["accelerator"],
                "backend": {"type": "Local", "port": backend.port()}}],
        }),
        json!({"profiles": {"accelerator": {"oauth2SigningKeys": [{"name": "key-1", "pem": SIGNING_PEM}], "oauth2Clients": {"app-1": "s3cret"}}}}),
    )
    .write_dir(dir.path())
    .unwrap();
    let sidecar = Sidecar::start(dir.path()).await;
    // Right credentials, from 127.0.0.1: no token, as the API itself would refuse the call.
    let (s, body) = token_request(&sidecar, Some(("app-1", "s3cret")), "grant_type=client_credentials").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(body.get("access_token").is_none(), "{body}");
    let lines = sidecar.wait_audit(1).await;
    assert_eq!(lines[0]["decision"], "deny");
    assert_eq!(lines[0]["client_ip"], "127.0.0.1");
    assert_eq!(
        lines[0]["reason"],
        "client address outside the profile's trusted IP ranges"
    );
}

/// One OAuth2 profile with `jwks_uri` on route `/api` toward the app at `port`.
fn write_config(dir: &std::path::Path, jwks_uri: &str, port: u16) {
    loaded(
        "g1",
        json!({
            "profiles": [{"name": "idp", "auth": {"type": "OAuth2", "provider": "Generic", "issuer": ISSUER,
                "jwksUri": jwks_uri, "audiences": ["finance-api"], "requiredScopes": ["read"]}}],
            "routes": [{"name": "api", "pathPrefix": "/api", "profiles": ["idp"],
                "backend": {"type": "Local", "port": port}}],
        }),
        json!({}),
    )
    .write_dir(dir)
    .unwrap();
}

/// The sidecar turns ready once every key set was fetched (or failed to be), not before:
/// tokens checked earlier would be refused only for want of keys.
#[tokio::test]
async fn readiness_waits_for_the_first_key_set_fetch() {
    let backend = Backend::start().await;
    let key = Signer::new("k1");
    let jwks = Jwks::start(&[&key]).await;
    jwks.delay_ms.store(1_500, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &jwks.url, backend.port());
    let sidecar = Sidecar::start(dir.path()).await;
    let (status, _, body) = get(&sidecar.admin_url("/readyz")).await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json_of(&body)["status"], "fetching OAuth2 key sets");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sidecar.readiness().await.0 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Ready means the keys are there: the first token is admitted.
    let token = key.token(claims("alice", "read", now() + 60));
    assert_eq!(call(&sidecar, &token).await.0, StatusCode::OK);

    // A key set that cannot be fetched does not hold readiness back (its tokens fail closed).
    let (_held, closed) = closed_addr();
    let closed = format!("http://{closed}/jwks");
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &closed, backend.port());
    let sidecar = Sidecar::start(dir.path()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sidecar.readiness().await.0 {
        assert!(Instant::now() < deadline, "never ready with an unreachable key set");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(call(&sidecar, &token).await.0, StatusCode::UNAUTHORIZED);
}
