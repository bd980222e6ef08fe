//! Black-box tests of OAuth2 token introspection (RFC 7662) through the real binary: opaque
//! bearer tokens asked about at an in-test introspection endpoint on 127.0.0.1, which checks
//! the sidecar's client authentication, answers active or inactive per token and counts calls.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use portcullis_signatures::{Algorithm, Key};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const ISSUER: &str = "https://idp.example.com";
const CLIENT_ID: &str = "portcullis";
/// With characters RFC 6749 section 2.3.1 form-encodes before Basic.
const CLIENT_SECRET: &str = "intro s3cret:/+";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The `Authorization` header a client_secret_basic client sends for `id` / `secret`.
fn basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    let pair = format!("{}:{}", enc(id), enc(secret));
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
}

/// An RFC 7662 endpoint on 127.0.0.1: answers what `tokens` holds for a token (else
/// `{"active": false}`), after `delay_ms`, to the client authenticated with `secret` only.
struct Idp {
    url: String,
    tokens: Arc<Mutex<HashMap<String, Value>>>,
    calls: Arc<AtomicUsize>,
    delay_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Idp {
    async fn start(secret: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, secret)
    }

    async fn start_on(addr: SocketAddr, secret: &str) -> Self {
        Self::serve(TcpListener::bind(addr).await.unwrap(), secret)
    }

    fn serve(listener: TcpListener, secret: &str) -> Self {
        let url = format!("http://{}/introspect", listener.local_addr().unwrap());
        let tokens: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let expected = basic(CLIENT_ID, secret);
        let (t, c, d) = (tokens.clone(), calls.clone(), delay_ms.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (t, c, d, expected) = (t.clone(), c.clone(), d.clone(), expected.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (t, c, d, expected) = (t.clone(), c.clone(), d.clone(), expected.clone());
                        async move {
                            c.fetch_add(1, Ordering::SeqCst);
                            let (status, body) = answer(req, &t, &expected).await;
                            tokio::time::sleep(Duration::from_millis(d.load(Ordering::SeqCst))).await;
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body.to_string())))
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
        Self {
            url,
            tokens,
            calls,
            delay_ms,
            task,
        }
    }

    fn issue(&self, token: &str, response: Value) {
        self.tokens.lock().unwrap().insert(token.to_owned(), response);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    tokens: &Mutex<HashMap<String, Value>>,
    expected: &str,
) -> (StatusCode, Value) {
    let ok_head = req.method() == "POST"
        && req.uri().path() == "/introspect"
        && req.headers()["content-type"] == "application/x-www-form-urlencoded";
    let auth_ok = req.headers().get("authorization").is_some_and(|v| v == expected);
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let form: HashMap<String, String> = String::from_utf8_lossy(&body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if !ok_head || form.get("token_type_hint").map(String::as_str) != Some("access_token") {
        return (StatusCode::BAD_REQUEST, json!({"error": "invalid_request"}));
    }
    if !auth_ok {
        return (StatusCode::UNAUTHORIZED, json!({"error": "invalid_client"}));
    }
    let token = form.get("token").cloned().unwrap_or_default();
    let known = tokens.lock().unwrap().get(&token).cloned();
    (StatusCode::OK, known.unwrap_or_else(|| json!({"active": false})))
}

fn active(sub: Option<&str>, client_id: &str, scope: &str) -> Value {
    let mut v = json!({"active": true, "client_id": client_id, "scope": scope, "iss": ISSUER,
                       "aud": "finance-api", "exp": now() + 300, "token_type": "Bearer"});
    if let Some(sub) = sub {
        v["sub"] = json!(sub);
    }
    v
}

/// A sidecar with one route `/api` guarded by profile `idp` (introspection at `url`, plus
/// whatever `extra` adds).
async fn sidecar(url: &str, extra: Value) -> (Sidecar, Backend, tempfile::TempDir) {
    sidecar_with(url, extra, &[]).await
}

/// Same, with extra flags.
async fn sidecar_with(url: &str, extra: Value, flags: &[&str]) -> (Sidecar, Backend, tempfile::TempDir) {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut auth = json!({"type": "OAuth2", "provider": "Generic", "issuer": ISSUER, "introspectionUrl": url,
                          "audiences": ["finance-api"], "requiredScopes": ["read"]});
    if let (Some(a), Value::Object(extra)) = (auth.as_object_mut(), extra) {
        a.extend(extra);
    }
    loaded(
        "g1",
        json!({
            "profiles": [{"name": "idp", "auth": auth}],
            "routes": [{"name": "api", "pathPrefix": "/api", "profiles": ["idp"],
                "backend": {"type": "Local", "port": backend.port()}}],
        }),
        json!({"profiles": {"idp": {"introspectionClient": {"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET}}}}),
    )
    .write_dir(dir.path())
    .unwrap();
    let sidecar = Sidecar::start_with(dir.path(), flags).await;
    (sidecar, backend, dir)
}

async fn call(sidecar: &Sidecar, token: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    get_with(&sidecar.url("/api/x"), &[("authorization", &format!("Bearer {token}"))]).await
}

#[tokio::test]
async fn opaque_tokens_are_introspected_and_judged() {
    let idp = Idp::start(CLIENT_SECRET).await;
    idp.issue("tok-alice", active(Some("alice"), "app-1", "read write"));
    idp.issue("tok-client", active(None, "app-2", "read"));
    idp.issue("tok-noscope", active(Some("bob"), "app-1", "write"));
    let (sidecar, _backend, _dir) = sidecar(&idp.url, json!({})).await;

    let (s, _, body) = call(&sidecar, "tok-alice").await;
    assert_eq!(s, StatusCode::OK);
    let body = json_of(&body);
    assert_eq!(body["headers"]["x-portcullis-identity"], json!(["alice"]));
    assert_eq!(body["headers"]["x-portcullis-profile"], json!(["idp"]));
    // Without sub, the caller is the client.
    let (s, _, body) = call(&sidecar, "tok-client").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json_of(&body)["headers"]["x-portcullis-identity"], json!(["app-2"]));

    // Inactive (unknown, revoked): 401 invalid_token.
    let (s, h, _) = call(&sidecar, "tok-unknown").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h["www-authenticate"], "Bearer realm=\"api\", error=\"invalid_token\"");
    // Active without the required scope: 403 insufficient_scope.
    let (s, h, _) = call(&sidecar, "tok-noscope").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        h["www-authenticate"],
        "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"read\""
    );
    assert_eq!(idp.calls(), 4);

    let lines = sidecar.wait_audit(4).await;
    assert_eq!(lines[0]["identity"], "alice");
    assert_eq!(lines[0]["decision"], "allow");
    assert_eq!(lines[1]["identity"], "app-2");
    assert_eq!(lines[2]["reason"], "token not active");
    assert_eq!(lines[3]["reason"], "token lacks a required scope");
    // Neither tokens nor the client secret are logged.
    let logged = format!("{}{}", std::fs::read_to_string(&sidecar.audit).unwrap(), sidecar.log());
    for secret in [
        "tok-alice",
        "tok-client",
        "tok-unknown",
        "intro s3cret",
        "intro%20s3cret",
    ] {
        assert!(!logged.contains(secret), "{secret} logged");
    }
}

#[tokio::test]
async fn one_call_for_concurrent_requests_with_a_new_token_and_none_within_the_ttl() {
    let idp = Idp::start(CLIENT_SECRET).await;
    idp.issue("tok-shared", active(Some("carol"), "app-1", "read"));
    idp.delay_ms.store(300, Ordering::SeqCst);
    let (sidecar, _backend, _dir) = sidecar(&idp.url, json!({})).await;

    let calls = (0..32).map(|_| call(&sidecar, "tok-shared"));
    let answers = futures::future::join_all(calls).await;
    assert!(answers.iter().all(|(s, _, _)| *s == StatusCode::OK));
    assert_eq!(idp.calls(), 1, "one introspection call for 32 concurrent requests");
    for _ in 0..10 {
        assert_eq!(call(&sidecar, "tok-shared").await.0, StatusCode::OK);
    }
    assert_eq!(idp.calls(), 1, "answers are cached within the TTL");
    // Inactive answers are cached too.
    assert_eq!(call(&sidecar, "tok-revoked").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&sidecar, "tok-revoked").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(idp.calls(), 2);
}

#[tokio::test]
async fn a_down_endpoint_fails_closed_and_service_recovers() {
    let addr = free_addr();
    let url = format!("http://{addr}/introspect");
    let (sidecar, _backend, _dir) = sidecar(&url, json!({})).await;

    let (s, _, body) = call(&sidecar, "tok-dave").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    let body = json_of(&body);
    assert_eq!(body["route"], "api");
    assert!(body["error"].as_str().unwrap().contains("introspection"), "{body}");
    let metrics = sidecar.metrics().await;
    assert!(
        metrics.contains("portcullis_backend_errors_total{kind=\"introspection\"} 1"),
        "{metrics}"
    );
    let lines = sidecar.wait_audit(1).await;
    assert_eq!(lines[0]["status"], 503);
    assert_eq!(lines[0]["reason"], "token introspection failed");

    // The endpoint comes back: the failure was not cached.
    let idp = Idp::start_on(addr, CLIENT_SECRET).await;
    idp.issue("tok-dave", active(Some("dave"), "app-1", "read"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, _, _) = call(&sidecar, "tok-dave").await;
        if s == StatusCode::OK {
            break;
        }
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(Instant::now() < deadline, "did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!sidecar.log().contains("tok-dave"));
}

#[tokio::test]
async fn an_endpoint_refusing_the_client_gives_503() {
    let idp = Idp::start("another secret").await;
    idp.issue("tok-erin", active(Some("erin"), "app-1", "read"));
    let (sidecar, _backend, _dir) = sidecar(&idp.url, json!({})).await;
    let (s, _, body) = call(&sidecar, "tok-erin").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body:?}");
    assert_eq!(idp.calls(), 1);
    // Not cached: asked again.
    assert_eq!(call(&sidecar, "tok-erin").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(idp.calls(), 2);
    let log = sidecar.log();
    assert!(log.contains("introspection endpoint answered 401"), "{log}");
    assert!(!log.contains("tok-erin") && !log.contains("intro s3cret"));
}

/// Waits (bounded) until `portcullis_introspections_pending` is `n`.
async fn wait_pending(sidecar: &Sidecar, n: f64, within: Duration) -> Option<f64> {
    let deadline = Instant::now() + within;
    loop {
        let pending = metric(&sidecar.metrics().await, "portcullis_introspections_pending");
        if pending == Some(n) || Instant::now() > deadline {
            return pending;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Issue 15, item 2: a client that leaves while its token is being introspected does not
/// leave the single-flight entry behind.
#[tokio::test]
async fn clients_that_leave_mid_introspection_leave_nothing_behind() {
    let idp = Idp::start(CLIENT_SECRET).await;
    idp.delay_ms.store(3_000, Ordering::SeqCst);
    let flags = [
        "--introspection-client-max-in-flight",
        "100",
        "--introspection-client-rate",
        "100",
    ];
    let (sidecar, _backend, _dir) = sidecar_with(&idp.url, json!({}), &flags).await;
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut s = tokio::net::TcpStream::connect(sidecar.inbound).await.unwrap();
        let req = format!("GET /api/x HTTP/1.1\r\nhost: x\r\nauthorization: Bearer tok-gone-{i}\r\n\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes())
            .await
            .unwrap();
        clients.push(s);
    }
    let pending = wait_pending(&sidecar, 20.0, Duration::from_secs(2)).await;
    assert_eq!(pending, Some(20.0), "the 20 introspections did not start");
    drop(clients);
    // Well before the endpoint would answer (3 s), every entry is gone.
    let pending = wait_pending(&sidecar, 0.0, Duration::from_millis(1_500)).await;
    assert_eq!(
        pending,
        Some(0.0),
        "single-flight entries left behind by clients that left"
    );
    // Each is audited all the same: 499, its route and profile, the wait it left.
    let lines = sidecar.wait_audit(20).await;
    assert_eq!(lines.len(), 20, "{lines:?}");
    for line in &lines {
        let reason = "client left during its token's introspection";
        assert_abandoned(line, reason, &[("route", "api"), ("profile", "idp")]);
    }
}

/// Issue 15, item 2: introspection calls are budgeted per client address (in flight and per
/// second: 429) and in total (503), both with `Retry-After`; requests joining a call in
/// flight cost nothing.
#[tokio::test]
async fn introspection_calls_are_budgeted_per_client_and_in_total() {
    let idp = Idp::start(CLIENT_SECRET).await;
    idp.delay_ms.store(500, Ordering::SeqCst);
    let statuses = |answers: &[(StatusCode, http::HeaderMap, Bytes)], status: StatusCode| {
        answers.iter().filter(|(s, _, _)| *s == status).count()
    };

    // Per client, in flight: 2 of 6 distinct new tokens are asked about at once.
    let flags = [
        "--introspection-client-max-in-flight",
        "2",
        "--introspection-client-rate",
        "100",
    ];
    let (sidecar, _backend, _dir) = sidecar_with(&idp.url, json!({}), &flags).await;
    let answers = futures::future::join_all((0..6).map(|i| {
        let sidecar = &sidecar;
        async move { call(sidecar, &format!("tok-many-{i}")).await }
    }))
    .await;
    assert_eq!(statuses(&answers, StatusCode::UNAUTHORIZED), 2, "{answers:?}");
    assert_eq!(statuses(&answers, StatusCode::TOO_MANY_REQUESTS), 4, "{answers:?}");
    for (s, h, body) in &answers {
        if *s == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(h["retry-after"], "1");
            assert_eq!(json_of(body)["error"], "too many token introspections for this client");
        }
    }
    assert_eq!(idp.calls(), 2);
    // Five requests with one new token share one call: the budget is not spent by joining.
    let answers = futures::future::join_all((0..5).map(|_| call(&sidecar, "tok-same"))).await;
    assert_eq!(statuses(&answers, StatusCode::UNAUTHORIZED), 5, "{answers:?}");
    assert_eq!(idp.calls(), 3);
    let metrics = sidecar.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "portcullis_rate_limit_rejections_total{scope=\"introspection_client\"}"
        ),
        Some(4.0),
        "{metrics}"
    );
    drop(sidecar);

    // Per client, per second: 3 new tokens, then 429 until the bucket refills.
    idp.delay_ms.store(0, Ordering::SeqCst);
    let flags = ["--introspection-client-rate", "3"];
    let (sidecar, _backend, _dir2) = sidecar_with(&idp.url, json!({}), &flags).await;
    let before = idp.calls();
    let mut answers = Vec::new();
    for i in 0..6 {
        answers.push(call(&sidecar, &format!("tok-rate-{i}")).await);
    }
    assert_eq!(statuses(&answers, StatusCode::UNAUTHORIZED), 3, "{answers:?}");
    assert_eq!(statuses(&answers, StatusCode::TOO_MANY_REQUESTS), 3, "{answers:?}");
    assert_eq!(idp.calls() - before, 3);
    // Known tokens (cached answers) are not introspected: no budget needed.
    assert_eq!(call(&sidecar, "tok-rate-0").await.0, StatusCode::UNAUTHORIZED);
    drop(sidecar);

    // In total: 1 call at once; the second client's new token gets 503.
    idp.delay_ms.store(500, Ordering::SeqCst);
    let flags = ["--introspection-max-in-flight", "1"];
    let (sidecar, _backend, _dir3) = sidecar_with(&idp.url, json!({}), &flags).await;
    let answers = futures::future::join_all((0..2).map(|i| {
        let sidecar = &sidecar;
        async move { call(sidecar, &format!("tok-total-{i}")).await }
    }))
    .await;
    assert_eq!(statuses(&answers, StatusCode::UNAUTHORIZED), 1, "{answers:?}");
    let busy: Vec<_> = answers
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert_eq!(busy.len(), 1, "{answers:?}");
    assert_eq!(busy[0].1["retry-after"], "1");
    assert_eq!(
        json_of(&busy[0].2)["error"],
        "token introspection busy: too many calls in progress"
    );
}

/// An Ed25519 signer of JWTs and its JWKS.
struct Signer {
    key: Key,
    public: Vec<u8>,
}

impl Signer {
    fn new() -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        Self {
            key: Key::from_pem(&pair.serialize_pem()).unwrap(),
            public: pair.public_key_raw().to_vec(),
        }
    }

    fn jwks(&self) -> String {
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": "k1",
                         "x": B64.encode(&self.public)}]})
        .to_string()
    }

    fn token(&self, claims: Value) -> String {
        let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "k1"});
        let signed = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let sig = self.key.sign(Algorithm::Ed25519, signed.as_bytes()).unwrap();
        format!("{signed}.{}", B64.encode(sig))
    }
}

/// Serves `doc` at `/jwks` on 127.0.0.1.
async fn jwks_server(doc: String) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let doc = doc.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let doc = doc.clone();
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(doc)))) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (url, task)
}

#[tokio::test]
async fn a_profile_with_jwks_and_introspection_accepts_both_kinds_of_tokens() {
    let signer = Signer::new();
    let (jwks_url, jwks_task) = jwks_server(signer.jwks()).await;
    let idp = Idp::start(CLIENT_SECRET).await;
    idp.issue("tok-opaque", active(Some("frank"), "app-1", "read"));
    let (sidecar, _backend, _dir) = sidecar(&idp.url, json!({"jwksUri": jwks_url})).await;

    let jwt = signer.token(
        json!({"iss": ISSUER, "sub": "grace", "aud": "finance-api", "exp": now() + 300,
                                  "scope": "read"}),
    );
    // The key set is fetched in the background.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, _, body) = call(&sidecar, &jwt).await;
        if s == StatusCode::OK {
            assert_eq!(json_of(&body)["headers"]["x-portcullis-identity"], json!(["grace"]));
            break;
        }
        assert!(Instant::now() < deadline, "JWT still {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(idp.calls(), 0, "JWTs are verified locally");
    let (s, _, body) = call(&sidecar, "tok-opaque").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json_of(&body)["headers"]["x-portcullis-identity"], json!(["frank"]));
    assert_eq!(idp.calls(), 1);
    jwks_task.abort();
}
