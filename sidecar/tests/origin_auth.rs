//! Black-box tests of the credentials the sidecar adds toward origins (`backend.origin.auth`):
//! Basic, shared-secret signatures, HTTP message signatures (RFC 9421 and draft-cavage,
//! verified here with portcullis-signatures), OAuth 2.0 client credentials (one token fetch for
//! many waiting calls, refresh at expiry, retry after a 401, token endpoint down or hanging),
//! on the inbound and the egress listeners. Everything on 127.0.0.1; every wait is bounded.

mod common;

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use common::*;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use portcullis_signatures::{Algorithm, Key, Message, cavage, rfc9421};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const ED25519_PRIVATE: &str = include_str!("../signatures/tests/keys/test-key-ed25519.key");
const ED25519_PUBLIC: &str = include_str!("../signatures/tests/keys/test-key-ed25519.pem");
const HMAC_SECRET: &str = "a shared secret for the origin";

/// A request as the test origin received it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

type Decide = Arc<dyn Fn(&Seen) -> StatusCode + Send + Sync>;

/// A test origin that records every request and answers with `decide`.
struct Origin {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    async fn start(decide: Decide) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = seen2.clone();
                let decide = decide.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let seen = seen.clone();
                        let decide = decide.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let s = Seen {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_owned(),
                                query: parts.uri.query().map(str::to_owned),
                                headers: parts.headers,
                                body,
                            };
                            let status = decide(&s);
                            seen.lock().unwrap().push(s);
                            let mut r = Response::new(Full::new(Bytes::from_static(b"{\"origin\":true}")));
                            *r.status_mut() = status;
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    fn ok() -> Decide {
        Arc::new(|_| StatusCode::OK)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn last(&self) -> Seen {
        self.seen().last().cloned().expect("the origin received a request")
    }
}

fn origin_route(name: &str, prefix: &str, url: &str, auth: Value) -> Value {
    json!({"name": name, "pathPrefix": prefix,
           "backend": {"type": "Origin", "url": url, "tlsMode": "None", "auth": auth}})
}

async fn start_sidecar(config: Value, secrets: Value, extra: &[&str]) -> (Sidecar, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    loaded("g1", config, secrets).write_dir(dir.path()).unwrap();
    let sidecar = Sidecar::start_with(dir.path(), extra).await;
    let (ready, generation) = sidecar.readiness().await;
    assert!(ready && generation == "g1", "configuration refused: {}", sidecar.log());
    (sidecar, dir)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn header<'a>(s: &'a Seen, name: &str) -> &'a str {
    s.headers.get(name).map_or("", |v| v.to_str().unwrap())
}

async fn post(url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = Request::post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(&client(), req.body(Full::new(body.into())).unwrap())
        .await
        .expect("sidecar answers")
}

#[tokio::test]
async fn basic_and_shared_secret_replace_what_the_client_sent() {
    let origin = Origin::start(Origin::ok()).await;
    let mut egress = origin_route("egress", "/egress", &origin.url("/e"), json!({"type": "Basic"}));
    egress["egress"] = json!(true);
    let config = json!({"routes": [
        origin_route("basic", "/basic", &origin.url("/b"), json!({"type": "Basic"})),
        origin_route("shared", "/shared", &origin.url("/s"),
            json!({"type": "SharedSecret", "algorithm": "MD5", "keyParam": "apikey", "sigParam": "sig"})),
        origin_route("shared256", "/sha", &origin.url(""),
            json!({"type": "SharedSecret", "algorithm": "SHA256", "keyParam": "key", "sigParam": "signature"})),
        egress,
    ]});
    let secrets = json!({"routes": {
        "basic": {"originAuth": {"type": "Basic", "username": "gateway", "password": "p@ss:word"}},
        "egress": {"originAuth": {"type": "Basic", "username": "egress-user", "password": "e-pass"}},
        "shared": {"originAuth": {"type": "SharedSecret", "apikey": "key 1", "secret": "s3cret"}},
        "shared256": {"originAuth": {"type": "SharedSecret", "apikey": "k2", "secret": "other"}},
    }});
    let (sidecar, _dir) = start_sidecar(config, secrets, &[]).await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);

    // Basic: the client's Authorization is replaced.
    let (status, _, _) = get_with(&sidecar.url("/basic/x"), &[("authorization", "Basic ZXZpbDpldmls")]).await;
    assert_eq!(status, 200);
    let s = origin.last();
    assert_eq!(s.path, "/b/basic/x");
    assert_eq!(
        s.headers.get_all("authorization").iter().collect::<Vec<_>>(),
        [format!("Basic {}", b64("gateway:p@ss:word")).as_str()]
    );

    // Shared secret: apikey and sig replace the client's, the other parameters stay.
    let before = unix_now();
    let (status, _, _) = get_with(&sidecar.url("/shared/y?apikey=evil&a=1&sig=forged"), &[]).await;
    let after = unix_now();
    assert_eq!(status, 200);
    let s = origin.last();
    let query = s.query.clone().unwrap();
    let params: Vec<(&str, &str)> = query.split('&').map(|p| p.split_once('=').unwrap()).collect();
    assert_eq!(params.len(), 3, "{query}");
    assert_eq!(params[0], ("a", "1"));
    assert_eq!(params[1], ("apikey", "key%201"));
    let sig = params[2].1;
    let verified = portcullis_signatures::mashery_verify(
        portcullis_signatures::MasheryHash::Md5,
        "key 1",
        "s3cret",
        sig,
        after,
        after - before + 2,
    );
    assert!(verified.is_some(), "sig {sig} is hex(md5(apikey + secret + ts))");
    assert_eq!(sig.len(), 32);

    let (status, _, _) = get_with(&sidecar.url("/sha"), &[]).await;
    assert_eq!(status, 200);
    let s = origin.last();
    let query = s.query.clone().unwrap();
    let (k, sig) = query.split_once('&').unwrap();
    assert_eq!(k, "key=k2");
    let sig = sig.strip_prefix("signature=").unwrap();
    assert_eq!(sig.len(), 64, "SHA-256 hex");
    let now = unix_now();
    assert!(
        portcullis_signatures::mashery_verify(portcullis_signatures::MasheryHash::Sha256, "k2", "other", sig, now, 5)
            .is_some()
    );

    // The app's own call through the egress listener gets the same treatment.
    let (status, _, _) = get_with(
        &format!("http://{}/egress/z", sidecar.egress),
        &[("authorization", "Bearer app-token")],
    )
    .await;
    assert_eq!(status, 200);
    let s = origin.last();
    assert_eq!(s.path, "/e/egress/z");
    assert_eq!(
        header(&s, "authorization"),
        format!("Basic {}", b64("egress-user:e-pass"))
    );

    let log = sidecar.log();
    for secret in ["p@ss:word", "s3cret", "e-pass", &b64("gateway:p@ss:word")] {
        assert!(!log.contains(secret), "a secret was logged");
    }
}

fn verify_rfc9421(s: &Seen, key: &Key, alg: Algorithm, required: &[&str]) -> rfc9421::Verified {
    let authority = header(s, "host").to_owned();
    let msg = Message {
        method: &s.method,
        scheme: "http",
        authority: &authority,
        path: &s.path,
        query: s.query.as_deref(),
        headers: &s.headers,
    };
    let algs = [alg];
    let policy = rfc9421::Policy {
        required_components: required,
        ..rfc9421::Policy::new(&algs, 60)
    };
    rfc9421::verify(&msg, Some(&s.body), &("gw-1", key), &policy, unix_now())
        .unwrap_or_else(|e| panic!("RFC 9421 signature does not verify: {e}: {:?}", s.headers))
}

fn verify_cavage(s: &Seen, key: &Key, alg: Algorithm, required: &[&str]) -> cavage::Verified {
    let authority = header(s, "host").to_owned();
    let msg = Message {
        method: &s.method,
        scheme: "http",
        authority: &authority,
        path: &s.path,
        query: s.query.as_deref(),
        headers: &s.headers,
    };
    let algs = [alg];
    let policy = cavage::Policy {
        required_headers: required,
        ..cavage::Policy::new(&algs, 60)
    };
    cavage::verify(&msg, Some(&s.body), &("gw-2", key), &policy, unix_now())
        .unwrap_or_else(|e| panic!("cavage signature does not verify: {e}: {:?}", s.headers))
}

#[tokio::test]
async fn requests_are_signed_for_the_origin() {
    let origin = Origin::start(Origin::ok()).await;
    let sig = |key_id: &str, alg: &str, standard: &str, components: Value| {
        json!({"type": "HttpSignature", "keyId": key_id, "algorithm": alg, "standard": standard,
               "components": components})
    };
    let config = json!({"routes": [
        origin_route("rfc-hmac", "/rfc-hmac", &origin.url("/base"), sig("gw-1", "hmac-sha256", "RFC9421", json!([]))),
        origin_route("rfc-ed", "/rfc-ed", &origin.url(""),
            sig("gw-1", "ed25519", "RFC9421", json!(["@method", "@path", "@query", "@authority", "date", "content-type", "content-digest"]))),
        origin_route("rfc-stream", "/rfc-stream", &origin.url(""),
            sig("gw-1", "hmac-sha256", "RFC9421", json!(["@method", "@target-uri"]))),
        origin_route("cavage-hmac", "/cavage-hmac", &origin.url(""), sig("gw-2", "hmac-sha256", "Cavage", json!([]))),
        origin_route("cavage-ed", "/cavage-ed", &origin.url(""),
            sig("gw-2", "ed25519", "Cavage", json!(["(request-target)", "host", "date"]))),
    ]});
    let hmac = json!({"originAuth": {"type": "HttpSignature", "key": HMAC_SECRET}});
    let ed = json!({"originAuth": {"type": "HttpSignature", "key": ED25519_PRIVATE}});
    let secrets = json!({"routes": {"rfc-hmac": hmac, "rfc-ed": ed, "rfc-stream": hmac,
                                    "cavage-hmac": hmac, "cavage-ed": ed}});
    let (sidecar, _dir) = start_sidecar(config, secrets, &[]).await;
    let hmac_key = Key::from_secret(HMAC_SECRET.as_bytes()).unwrap();
    let ed_key = Key::from_secret(ED25519_PUBLIC.as_bytes()).unwrap();

    // RFC 9421, hmac-sha256, default components, with a body; forged signatures are dropped.
    let (status, _, _) = post(
        &sidecar.url("/rfc-hmac/orders?id=7"),
        &[("signature", "evil=:AAAA:"), ("signature-input", "evil=();created=1")],
        "{\"hello\": \"world\"}",
    )
    .await;
    assert_eq!(status, 200);
    let s = origin.last();
    assert_eq!(s.path, "/base/rfc-hmac/orders");
    assert_eq!(s.body, "{\"hello\": \"world\"}");
    assert!(s.headers.contains_key("date"), "Date added when missing");
    assert_eq!(s.headers.get_all("signature").iter().count(), 1);
    let v = verify_rfc9421(
        &s,
        &hmac_key,
        Algorithm::HmacSha256,
        &["@method", "@target-uri", "@authority", "content-digest"],
    );
    assert!(v.digest_checked);
    assert_eq!(v.key_id, "gw-1");

    // RFC 9421, ed25519, configured components; the client's Date is kept.
    let date = portcullis_signatures::http_date(unix_now());
    let (status, _, _) = post(
        &sidecar.url("/rfc-ed/a/b?x=1&y=2"),
        &[("content-type", "application/json"), ("date", &date)],
        "[1,2,3]",
    )
    .await;
    assert_eq!(status, 200);
    let s = origin.last();
    assert_eq!(header(&s, "date"), date);
    let v = verify_rfc9421(
        &s,
        &ed_key,
        Algorithm::Ed25519,
        &["@method", "@path", "@query", "content-digest"],
    );
    assert!(v.digest_checked);
    // A request without a covered header cannot be signed: a clear 400.
    let (status, _, body) = post(&sidecar.url("/rfc-ed/a"), &[], "x").await;
    assert_eq!(status, 400);
    assert!(json_of(&body)["error"].as_str().unwrap().contains("cannot be signed"));

    // No digest covered: the body streams, and is signed all the same.
    let (status, _, _) = post(&sidecar.url("/rfc-stream/s?q=1"), &[], vec![b'z'; 3 * 1024 * 1024]).await;
    assert_eq!(status, 200);
    let s = origin.last();
    assert_eq!(s.body.len(), 3 * 1024 * 1024);
    verify_rfc9421(&s, &hmac_key, Algorithm::HmacSha256, &["@method", "@target-uri"]);

    // draft-cavage, hmac-sha256, default headers (request-target, host, date, digest).
    let (status, _, _) = post(&sidecar.url("/cavage-hmac/c?z=9"), &[], "cavage body").await;
    assert_eq!(status, 200);
    let s = origin.last();
    let v = verify_cavage(
        &s,
        &hmac_key,
        Algorithm::HmacSha256,
        &["(request-target)", "host", "date", "digest"],
    );
    assert!(v.digest_checked);
    assert!(header(&s, "signature").contains("algorithm=\"hmac-sha256\""));

    // draft-cavage, ed25519, a GET without a digest.
    let (status, _, _) = get_with(&sidecar.url("/cavage-ed/d"), &[]).await;
    assert_eq!(status, 200);
    let s = origin.last();
    verify_cavage(&s, &ed_key, Algorithm::Ed25519, &["(request-target)", "host", "date"]);

    // A body over --max-signed-body-bytes (default 1 MiB) toward a digest-covering route: 413.
    let seen_before = origin.seen().len();
    let (status, headers, body) = post(&sidecar.url("/rfc-hmac/big"), &[], vec![b'x'; 1024 * 1024 + 1]).await;
    assert_eq!(status, 413);
    assert_eq!(headers["content-type"], "application/json");
    let answer = json_of(&body);
    assert_eq!(answer["route"], "rfc-hmac");
    assert!(answer["error"].as_str().unwrap().contains("too large"), "{answer}");
    assert_eq!(answer["limitBytes"], 1024 * 1024);
    // ... and exactly the limit is signed.
    let (status, _, _) = post(&sidecar.url("/cavage-hmac/big"), &[], vec![b'x'; 1024 * 1024]).await;
    assert_eq!(status, 200);
    assert_eq!(origin.seen().len(), seen_before + 1, "the 413 never reached the origin");
    let s = origin.last();
    verify_cavage(&s, &hmac_key, Algorithm::HmacSha256, &["digest"]);

    assert!(!sidecar.log().contains(HMAC_SECRET));
}

#[tokio::test]
async fn max_signed_body_bytes_sets_the_limit() {
    let origin = Origin::start(Origin::ok()).await;
    let auth = json!({"type": "HttpSignature", "keyId": "gw-2", "algorithm": "hmac-sha256", "standard": "Cavage"});
    let config = json!({"routes": [origin_route("signed", "/", &origin.url(""), auth)]});
    let secrets = json!({"routes": {"signed": {"originAuth": {"type": "HttpSignature", "key": HMAC_SECRET}}}});
    let (sidecar, _dir) = start_sidecar(config, secrets, &["--max-signed-body-bytes", "16"]).await;
    let (status, _, body) = post(&sidecar.url("/x"), &[], vec![b'x'; 17]).await;
    assert_eq!(status, 413);
    assert_eq!(json_of(&body)["limitBytes"], 16);
    assert!(origin.seen().is_empty());
    let (status, _, _) = post(&sidecar.url("/x"), &[], vec![b'x'; 16]).await;
    assert_eq!(status, 200);
    let key = Key::from_secret(HMAC_SECRET.as_bytes()).unwrap();
    let v = verify_cavage(&origin.last(), &key, Algorithm::HmacSha256, &["digest"]);
    assert!(v.digest_checked);
}

#[tokio::test]
async fn unusable_signing_keys_refuse_the_configuration() {
    let origin = Origin::start(Origin::ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let good = |generation: &str, key: &str, alg: &str| {
        loaded(
            generation,
            json!({"routes": [origin_route("signed", "/", &origin.url(""),
                json!({"type": "HttpSignature", "keyId": "k", "algorithm": alg, "standard": "RFC9421"}))]}),
            json!({"routes": {"signed": {"originAuth": {"type": "HttpSignature", "key": key}}}}),
        )
    };
    good("g1", HMAC_SECRET, "hmac-sha256").write_dir(dir.path()).unwrap();
    let sidecar = Sidecar::start(dir.path()).await;
    assert_eq!(sidecar.readiness().await, (true, "g1".to_owned()));
    // A public key cannot sign; refused, the last good configuration keeps serving.
    good("g2", ED25519_PUBLIC, "ed25519").write_dir(dir.path()).unwrap();
    assert!(!sidecar.wait_generation("g2", Duration::from_secs(2)).await);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sidecar.log().contains("private key") {
        assert!(Instant::now() < deadline, "no refusal logged: {}", sidecar.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, _) = get_with(&sidecar.url("/still"), &[]).await;
    assert_eq!(status, 200);
    good("g3", ED25519_PRIVATE, "ed25519").write_dir(dir.path()).unwrap();
    assert!(sidecar.wait_generation("g3", Duration::from_secs(5)).await);
}

/// A token endpoint: counts requests, checks client_secret_basic and the form, issues
/// `tok-N` tokens valid for the number of seconds in its path (`/token/SECONDS`) after
/// `delay`, and adds them to `valid` (what the origin accepts).
struct TokenServer {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    valid: Arc<Mutex<HashSet<String>>>,
    forms: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenServer {
    async fn start(delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let valid = Arc::new(Mutex::new(HashSet::new()));
        let forms = Arc::new(Mutex::new(Vec::new()));
        let (h, v, f) = (hits.clone(), valid.clone(), forms.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (h, v, f) = (h.clone(), v.clone(), f.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (h, v, f) = (h.clone(), v.clone(), f.clone());
                        async move {
                            let n = h.fetch_add(1, Ordering::SeqCst) + 1;
                            let expected = format!(
                                "Basic {}",
                                base64::engine::general_purpose::STANDARD.encode("client%2B1:secret%3A1")
                            );
                            let authorized = req.headers().get("authorization").is_some_and(|a| *a == *expected);
                            let lifetime: u64 = req
                                .uri()
                                .path()
                                .strip_prefix("/token/")
                                .and_then(|s| s.parse().ok())
                                .unwrap_or(3600);
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            f.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
                            tokio::time::sleep(delay).await;
                            let (status, answer) = if authorized {
                                let token = format!("tok-{n}");
                                v.lock().unwrap().insert(format!("Bearer {token}"));
                                (
                                    StatusCode::OK,
                                    json!({"access_token": token, "token_type": "Bearer", "expires_in": lifetime}),
                                )
                            } else {
                                (StatusCode::UNAUTHORIZED, json!({"error": "invalid_client"}))
                            };
                            let mut r = Response::new(Full::new(Bytes::from(answer.to_string())));
                            *r.status_mut() = status;
                            r.headers_mut()
                                .insert("content-type", "application/json".parse().unwrap());
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            hits,
            valid,
            forms,
            task,
        }
    }

    fn url(&self, lifetime: u64) -> String {
        format!("http://{}/token/{lifetime}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn oauth(token_url: &str) -> Value {
    json!({"type": "OAuth2ClientCredentials", "tokenUrl": token_url, "scopes": ["api", "read"], "audience": "orders"})
}

#[tokio::test]
async fn oauth2_client_credentials() {
    let tokens = TokenServer::start(Duration::from_millis(300)).await;
    let valid = tokens.valid.clone();
    let origin = Origin::start(Arc::new(move |s: &Seen| {
        if valid.lock().unwrap().contains(header(s, "authorization")) {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        }
    }))
    .await;
    // A port nothing listens on, and an endpoint that accepts and never answers.
    let (_held, down) = closed_addr();
    let hang = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_addr = hang.local_addr().unwrap();
    let hang_task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hang.accept().await {
            held.push(s);
        }
    });
    let mut egress = origin_route("egress", "/egress", &origin.url(""), oauth(&tokens.url(3600)));
    egress["egress"] = json!(true);
    let config = json!({"routes": [
        origin_route("long", "/long", &origin.url(""), oauth(&tokens.url(3600))),
        origin_route("short", "/short", &origin.url(""), oauth(&tokens.url(2))),
        origin_route("down", "/down", &origin.url(""), oauth(&format!("http://{down}/token"))),
        origin_route("hang", "/hang", &origin.url(""), oauth(&format!("http://{hang_addr}/token"))),
        egress,
    ]});
    let creds =
        json!({"originAuth": {"type": "OAuth2ClientCredentials", "clientId": "client+1", "clientSecret": "secret:1"}});
    let secrets = json!({"routes": {"long": creds, "short": creds, "down": creds, "hang": creds, "egress": creds}});
    let (sidecar, _dir) = start_sidecar(config, secrets, &["--backend-timeout", "2s"]).await;

    // 20 concurrent calls, one token request.
    let calls = (0..20).map(|i| {
        let url = sidecar.url(&format!("/long/{i}"));
        async move {
            get_with(&url, &[("authorization", "Basic Y2xpZW50OmZvcmdlZA==")])
                .await
                .0
        }
    });
    let statuses = futures::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(tokens.hits(), 1, "one token request for 20 waiting calls");
    let s = origin.last();
    assert_eq!(header(&s, "authorization"), "Bearer tok-1");
    let form = tokens.forms.lock().unwrap()[0].clone();
    assert_eq!(form, "grant_type=client_credentials&scope=api%20read&audience=orders");

    // The cached token is reused.
    assert_eq!(get_with(&sidecar.url("/long/again"), &[]).await.0, 200);
    assert_eq!(tokens.hits(), 1);

    // The origin stops accepting the token: one 401, a fresh token, the call retried with its
    // body.
    tokens.valid.lock().unwrap().clear();
    let seen_before = origin.seen().len();
    let (status, _, _) = post(&sidecar.url("/long/retry"), &[], "replayed body").await;
    assert_eq!(status, 200);
    assert_eq!(tokens.hits(), 2);
    let seen = origin.seen();
    assert_eq!(seen.len(), seen_before + 2, "refused once, then retried");
    assert_eq!(header(&seen[seen_before], "authorization"), "Bearer tok-1");
    assert_eq!(header(&seen[seen_before + 1], "authorization"), "Bearer tok-2");
    assert_eq!(seen[seen_before + 1].body, "replayed body");

    // A token valid for 2 s is refreshed after ~1.8 s.
    assert_eq!(get_with(&sidecar.url("/short/1"), &[]).await.0, 200);
    let hits = tokens.hits();
    assert_eq!(get_with(&sidecar.url("/short/2"), &[]).await.0, 200);
    assert_eq!(tokens.hits(), hits, "still fresh");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(get_with(&sidecar.url("/short/3"), &[]).await.0, 200);
    assert_eq!(tokens.hits(), hits + 1, "refreshed after expiry");

    // The egress listener adds a token too.
    let (status, _, _) = get_with(&format!("http://{}/egress/out", sidecar.egress), &[]).await;
    assert_eq!(status, 200);
    assert!(header(&origin.last(), "authorization").starts_with("Bearer tok-"));

    // Token endpoint down: 503 with a clear body, at once.
    let started = Instant::now();
    let (status, headers, body) = get_with(&sidecar.url("/down/x"), &[]).await;
    assert_eq!(status, 503);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(headers["content-type"], "application/json");
    let answer = json_of(&body);
    assert_eq!(answer["route"], "down");
    assert!(answer["error"].as_str().unwrap().contains("token endpoint"), "{answer}");

    // Token endpoint hanging: 503 within the bounded token timeout (min(--backend-timeout,
    // 10 s) = 2 s), for every waiting call, never a hang.
    let started = Instant::now();
    let calls = (0..5).map(|i| {
        let url = sidecar.url(&format!("/hang/{i}"));
        async move { get_with(&url, &[]).await.0 }
    });
    let statuses = futures::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
    hang_task.abort();

    let log = sidecar.log();
    for secret in ["secret:1", "secret%3A1", "tok-1", "tok-2"] {
        assert!(!log.contains(secret), "{secret} was logged");
    }
}

#[tokio::test]
async fn oauth2_wrong_client_secret_is_a_503_and_a_401_is_retried_once() {
    let tokens = TokenServer::start(Duration::ZERO).await;
    let refusing = Origin::start(Arc::new(|_| StatusCode::UNAUTHORIZED)).await;
    let config = json!({"routes": [
        origin_route("wrong", "/wrong", &refusing.url(""), oauth(&tokens.url(3600))),
        origin_route("refusing", "/refusing", &refusing.url(""), oauth(&tokens.url(3600))),
    ]});
    let secrets = json!({"routes": {
        "wrong": {"originAuth": {"type": "OAuth2ClientCredentials", "clientId": "client+1", "clientSecret": "nope"}},
        "refusing": {"originAuth": {"type": "OAuth2ClientCredentials", "clientId": "client+1", "clientSecret": "secret:1"}},
    }});
    let (sidecar, _dir) = start_sidecar(config, secrets, &[]).await;
    let (status, _, body) = get_with(&sidecar.url("/wrong/x"), &[]).await;
    assert_eq!(status, 503);
    assert_eq!(json_of(&body)["route"], "wrong");
    assert!(refusing.seen().is_empty(), "no call without a token");
    // Within a second of the failure: answered from memory, the endpoint is not asked again.
    assert_eq!(get_with(&sidecar.url("/wrong/y"), &[]).await.0, 503);
    assert_eq!(tokens.hits(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let (status, _, _) = get_with(&sidecar.url("/refusing/x"), &[]).await;
    assert_eq!(status, 401, "the origin's answer after one retry");
    assert_eq!(refusing.seen().len(), 2, "sent twice: once, then with a fresh token");
    assert_eq!(tokens.hits(), 3, "one refused fetch, then two tokens");
    assert_eq!(get_with(&sidecar.url("/wrong/z"), &[]).await.0, 503);
    assert_eq!(tokens.hits(), 4, "asked again after the back-off");

    // A streamed body (chunked, no length) cannot be replayed: the 401 goes back as is.
    let status = chunked_post(sidecar.inbound, "/refusing/stream", &[b"hello ", b"world"]).await;
    assert_eq!(status, 401);
    assert_eq!(refusing.seen().len(), 3, "not retried");
    assert_eq!(refusing.seen()[2].body, "hello world", "streamed through");
    assert_eq!(tokens.hits(), 4, "no token fetched for a retry that cannot happen");
}

#[tokio::test]
async fn oauth2_token_survives_reloads_that_keep_its_settings() {
    let tokens = TokenServer::start(Duration::ZERO).await;
    let origin = Origin::start(Origin::ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let write = |generation: &str, secret: &str, extra_route: bool| {
        let mut routes = vec![origin_route("api", "/api", &origin.url(""), oauth(&tokens.url(3600)))];
        if extra_route {
            routes.push(json!({"name": "other", "pathPrefix": "/other", "backend": {"type": "Local", "port": 9}}));
        }
        let creds =
            json!({"originAuth": {"type": "OAuth2ClientCredentials", "clientId": "client+1", "clientSecret": secret}});
        loaded(generation, json!({"routes": routes}), json!({"routes": {"api": creds}}))
            .write_dir(dir.path())
            .unwrap();
    };
    write("g1", "secret:1", false);
    let sidecar = Sidecar::start(dir.path()).await;
    assert_eq!(get_with(&sidecar.url("/api/1"), &[]).await.0, 200);
    assert_eq!(tokens.hits(), 1);
    // Another route added: the token is kept.
    write("g2", "secret:1", true);
    assert!(sidecar.wait_generation("g2", Duration::from_secs(5)).await);
    assert_eq!(get_with(&sidecar.url("/api/2"), &[]).await.0, 200);
    assert_eq!(tokens.hits(), 1, "the reload kept the token");
    // The client secret changed: a new token source, a new token (and the new secret used).
    write("g3", "secret:2", true);
    assert!(sidecar.wait_generation("g3", Duration::from_secs(5)).await);
    assert_eq!(
        get_with(&sidecar.url("/api/3"), &[]).await.0,
        503,
        "the token server only knows secret:1"
    );
    assert_eq!(tokens.hits(), 2);
}

/// POSTs a chunked body over a raw connection; returns the status code.
async fn chunked_post(addr: SocketAddr, path: &str, chunks: &[&[u8]]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req =
        format!("POST {path} HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            .into_bytes();
    for c in chunks {
        req.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        req.extend_from_slice(c);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    conn.write_all(&req).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    let line = String::from_utf8_lossy(&answer);
    line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}
