//! Black-box tests of sign-in for people through the real binary, against an in-test
//! OpenID provider on 127.0.0.1 (discovery, keys, a token endpoint that checks the client
//! secret and the PKCE verifier and honours each code once): a browser is sent to the
//! provider, comes back with a code, gets a session cookie and reaches the app with its
//! identity in headers the client cannot spoof; API clients keep the 401; forged and
//! replayed callbacks are refused; the session is refreshed; sign-out clears it; a provider
//! that cannot be discovered gives a 503 page and a metric, never a redirect.

mod common;
#[path = "common/jwt.rs"]
mod jwt;
#[path = "common/pki.rs"]
mod pki;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use jwt::{B64, Signer, now};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

const CLIENT: &str = "portcullis-test";
const SECRET: &str = "s3cret";

/// What the provider knows of a code it issued.
#[derive(Clone)]
struct Grant {
    nonce: String,
    challenge: String,
    redirect_uri: String,
}

#[derive(Default)]
struct OpState {
    codes: HashMap<String, Grant>,
    /// Lifetime of the ID tokens it issues, seconds.
    id_ttl: u64,
    refreshes: usize,
    /// Refresh tokens are refused (`invalid_grant`: revoked).
    refuse_refresh: bool,
}

/// A small OpenID provider on 127.0.0.1.
struct Op {
    issuer: String,
    state: Arc<Mutex<OpState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Op {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url_decode_pairs(std::str::from_utf8(body).unwrap())
}

fn url_decode_pairs(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

impl Op {
    async fn start(signer: Arc<Signer>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(OpState {
            id_ttl: 600,
            ..OpState::default()
        }));
        let (iss, st) = (issuer.clone(), state.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (iss, st, signer) = (iss.clone(), st.clone(), signer.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (iss, st, signer) = (iss.clone(), st.clone(), signer.clone());
                        async move { Ok::<_, Infallible>(serve(req, &iss, &st, &signer).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { issuer, state, task }
    }

    /// The provider's side of a sign-in the browser was sent to: a code for it.
    fn authorize(&self, location: &str) -> (String, HashMap<String, String>) {
        let q = url_decode_pairs(location.split_once('?').unwrap().1);
        let code = format!("code-{}", q["state"]);
        self.state.lock().unwrap().codes.insert(
            code.clone(),
            Grant {
                nonce: q["nonce"].clone(),
                challenge: q["code_challenge"].clone(),
                redirect_uri: q["redirect_uri"].clone(),
            },
        );
        (code, q)
    }
}

fn answer(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn serve(
    req: Request<hyper::body::Incoming>,
    iss: &str,
    st: &Mutex<OpState>,
    signer: &Signer,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/.well-known/openid-configuration" => answer(
            StatusCode::OK,
            json!({
            "issuer": iss, "authorization_endpoint": format!("{iss}/auth"), "token_endpoint": format!("{iss}/token"),
            "jwks_uri": format!("{iss}/jwks"), "end_session_endpoint": format!("{iss}/session/end"),
            "code_challenge_methods_supported": ["S256"]}),
        ),
        "/jwks" => answer(StatusCode::OK, json!({"keys": [signer.jwk()]})),
        "/token" => {
            let basic = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let want = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT}:{SECRET}"))
            );
            if basic != want {
                return answer(StatusCode::UNAUTHORIZED, json!({"error": "invalid_client"}));
            }
            let f = form(&req.into_body().collect().await.unwrap().to_bytes());
            let mut st = st.lock().unwrap();
            let ttl = st.id_ttl;
            let id = |nonce: Option<&str>| {
                let mut c = json!({"iss": iss, "sub": "248289761001", "aud": CLIENT, "iat": now(), "exp": now() + ttl,
                                   "email": "Jane@Example.com", "email_verified": true});
                if let Some(n) = nonce {
                    c["nonce"] = json!(n);
                }
                signer.token(c)
            };
            match f.get("grant_type").map(String::as_str) {
                Some("authorization_code") => {
                    // Each code once.
                    let Some(g) = st.codes.remove(&f["code"]) else {
                        return answer(StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}));
                    };
                    let challenge = B64.encode(Sha256::digest(f["code_verifier"].as_bytes()));
                    if challenge != g.challenge || f["redirect_uri"] != g.redirect_uri {
                        return answer(StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}));
                    }
                    answer(
                        StatusCode::OK,
                        json!({"access_token": "at", "token_type": "Bearer",
                        "id_token": id(Some(&g.nonce)), "refresh_token": "rt-0"}),
                    )
                }
                Some("refresh_token") => {
                    st.refreshes += 1;
                    if st.refuse_refresh {
                        return answer(StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}));
                    }
                    answer(
                        StatusCode::OK,
                        json!({"access_token": "at", "token_type": "Bearer",
                        "id_token": id(None), "refresh_token": format!("rt-{}", st.refreshes)}),
                    )
                }
                _ => answer(StatusCode::BAD_REQUEST, json!({"error": "unsupported_grant_type"})),
            }
        }
        _ => answer(StatusCode::NOT_FOUND, json!({})),
    }
}

fn write_config(dir: &std::path::Path, issuer: &str, port: u16) {
    write_config_with(dir, issuer, port, None);
}

/// [`write_config`], plus route `secure` (the same paths on host `secure.example.com`, with
/// certificate `tls`) when given.
fn write_config_with(dir: &std::path::Path, issuer: &str, port: u16, tls: Option<Value>) {
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let mut routes = vec![json!({"name": "app", "pathPrefix": "/app", "profiles": ["people"],
        "backend": {"type": "Local", "port": port}})];
    let mut route_secrets = json!({});
    if let Some(tls) = tls {
        routes.push(
            json!({"name": "secure", "hosts": [SECURE_HOST], "pathPrefix": "/app", "profiles": ["people"],
            "tls": true, "backend": {"type": "Local", "port": port}}),
        );
        route_secrets["secure"] = json!({"tls": tls});
    }
    loaded(
        "g1",
        json!({
            "profiles": [{"name": "people", "auth": {"type": "OAuth2", "provider": "Generic", "issuer": issuer,
                "login": {"issuer": issuer, "discoveryUrl": format!("{issuer}/.well-known/openid-configuration"),
                    "clientId": CLIENT, "redirectPath": "/oauth2/callback", "logoutPath": "/oauth2/logout",
                    "scopes": ["openid", "email"], "allowedDomains": ["example.com"], "sessionMaxSeconds": 3600}}}],
            "routes": routes,
        }),
        json!({"profiles": {"people": {"login": {"clientSecret": SECRET,
            "sessionKeys": [{"name": "key-1", "key": key}]}}}, "routes": route_secrets}),
    )
    .write_dir(dir)
    .unwrap();
}

const SECURE_HOST: &str = "secure.example.com";

const HTML: (&str, &str) = ("accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8");

/// The `name=value` of a `Set-Cookie` named `prefix...`.
fn cookie(h: &http::HeaderMap, prefix: &str) -> String {
    let line = h
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} cookie in {h:?}"));
    assert!(line.contains("; HttpOnly; Secure; SameSite=Lax"), "{line}");
    assert!(line.len() < 4096, "{}", line.len());
    line.split(';').next().unwrap().to_owned()
}

/// Waits until a browser is sent to the provider (discovery done); the answer's headers.
async fn sent_to_sign_in(sidecar: &Sidecar, path: &str) -> http::HeaderMap {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, h, _) = get_with(&sidecar.url(path), &[HTML]).await;
        if s == StatusCode::FOUND {
            return h;
        }
        assert!(Instant::now() < deadline, "still {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_browser_signs_in_reaches_the_app_as_itself_and_signs_out() {
    let backend = Backend::start().await;
    let op = Op::start(Arc::new(Signer::new("op1"))).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &op.issuer, backend.port());
    let sidecar = Sidecar::start(dir.path()).await;

    // An API client keeps the 401 and its Bearer challenge.
    let (s, h, _) = get_with(&sidecar.url("/app/reports"), &[("accept", "application/json")]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h["www-authenticate"], "Bearer realm=\"app\"");

    // A browser is sent to the provider with state, nonce and PKCE S256.
    let h = sent_to_sign_in(&sidecar, "/app/reports?q=1").await;
    let location = h["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{}/auth?response_type=code&client_id={CLIENT}&", op.issuer)),
        "{location}"
    );
    let pending = cookie(&h, "__Host-portcullis-login-people-");
    let (code, q) = op.authorize(&location);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["redirect_uri"], format!("http://{}/oauth2/callback", sidecar.inbound));

    // A forged state is refused, and spends nothing.
    let cb = |query: String| sidecar.url(&format!("/oauth2/callback?{query}"));
    let (s, _, body) = get_with(&cb(format!("code={code}&state=forged")), &[("cookie", &pending)]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(&body));
    // No pending sign-in cookie (another browser): refused.
    let state = &q["state"];
    let (s, _, _) = get_with(&cb(format!("code={code}&state={state}")), &[]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // The real callback: a session, back where the browser started.
    let (s, h, body) = get_with(&cb(format!("code={code}&state={state}")), &[("cookie", &pending)]).await;
    assert_eq!(s, StatusCode::FOUND, "{}", String::from_utf8_lossy(&body));
    assert_eq!(h["location"], "/app/reports?q=1");
    let session = cookie(&h, "__Host-portcullis-session-people=");

    // Replayed: refused (the state is used once; the provider would refuse the code too).
    let (s, _, _) = get_with(&cb(format!("code={code}&state={state}")), &[("cookie", &pending)]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // The app sees the person, never the client's copies nor the sidecar's cookies.
    let (s, _, body) = get_with(
        &sidecar.url("/app/reports"),
        &[
            HTML,
            ("cookie", &format!("theme=dark; {session}")),
            ("x-portcullis-email", "ceo@example.com"),
            ("x-portcullis-identity", "ceo"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let echo = json_of(&body);
    assert_eq!(echo["headers"]["x-portcullis-identity"], json!(["248289761001"]));
    assert_eq!(echo["headers"]["x-portcullis-email"], json!(["jane@example.com"]));
    assert_eq!(echo["headers"]["cookie"], json!(["theme=dark"]));
    // The audit line names the person (lines are written after the answer: wait for it).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sidecar
        .audit_lines()
        .iter()
        .any(|l| l["identity"] == "248289761001" && l["decision"] == "allow")
    {
        assert!(Instant::now() < deadline, "{:?}", sidecar.audit_lines());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A tampered session cookie: sent to sign in again.
    let mut tampered = session.clone();
    tampered.insert(session.len() - 3, 'A');
    tampered.truncate(session.len());
    let (s, _, _) = get_with(&sidecar.url("/app/reports"), &[HTML, ("cookie", &tampered)]).await;
    assert_eq!(s, StatusCode::FOUND);

    // Signing out clears both cookies and ends the provider's session.
    let (s, h, _) = get_with(&sidecar.url("/oauth2/logout"), &[("cookie", &session)]).await;
    assert_eq!(s, StatusCode::FOUND);
    assert!(
        h["location"]
            .to_str()
            .unwrap()
            .starts_with(&format!("{}/session/end?client_id={CLIENT}", op.issuer))
    );
    let cleared: Vec<&str> = h.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("__Host-portcullis-session-people=; Path=/; Max-Age=0")),
        "{cleared:?}"
    );
}

#[tokio::test]
async fn a_session_close_to_its_expiry_is_refreshed() {
    let backend = Backend::start().await;
    let op = Op::start(Arc::new(Signer::new("op1"))).await;
    // ID tokens that live 30 s: within the minute before expiry from the start.
    op.state.lock().unwrap().id_ttl = 30;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &op.issuer, backend.port());
    let sidecar = Sidecar::start(dir.path()).await;
    let session = signed_in(&sidecar, &op).await;
    let (s, h, _) = get_with(&sidecar.url("/app/x"), &[HTML, ("cookie", &session)]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(op.state.lock().unwrap().refreshes, 1);
    let renewed = cookie(&h, "__Host-portcullis-session-people=");
    assert_ne!(renewed, session);

    // The old cookie again, by 20 requests at once (tabs, a script): one refresh at a time
    // per session, so the provider is not asked again; the session still holds.
    let url = sidecar.url("/app/x");
    let headers = [HTML, ("cookie", session.as_str())];
    let calls = (0..20).map(|_| get_with(&url, &headers));
    for (s, _, _) in futures::future::join_all(calls).await {
        assert_eq!(s, StatusCode::OK);
    }
    assert_eq!(op.state.lock().unwrap().refreshes, 1, "the provider was flooded");
}

#[tokio::test]
async fn a_refused_refresh_ends_the_session() {
    let backend = Backend::start().await;
    let op = Op::start(Arc::new(Signer::new("op1"))).await;
    op.state.lock().unwrap().id_ttl = 30;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &op.issuer, backend.port());
    let sidecar = Sidecar::start(dir.path()).await;
    let session = signed_in(&sidecar, &op).await;
    // The provider revoked the refresh token: the session ends at once (not at the ID
    // token's expiry), the browser is told to drop it, and later requests do not ask again.
    op.state.lock().unwrap().refuse_refresh = true;
    let (s, h, _) = get_with(&sidecar.url("/app/x"), &[("cookie", &session)]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let cleared = h.get_all("set-cookie").iter().any(|c| {
        c.to_str()
            .unwrap()
            .starts_with("__Host-portcullis-session-people=; Path=/; Max-Age=0")
    });
    assert!(cleared, "{h:?}");
    let (s, h, _) = get_with(&sidecar.url("/app/x"), &[HTML, ("cookie", &session)]).await;
    assert_eq!(s, StatusCode::FOUND, "sent to sign in again");
    assert!(h["location"].to_str().unwrap().starts_with(&op.issuer));
    assert_eq!(op.state.lock().unwrap().refreshes, 1);
    let audit = sidecar.wait_audit(3).await;
    assert!(audit.iter().any(|l| l["reason"] == "no bearer token"), "{audit:?}");
}

#[tokio::test]
async fn a_provider_that_cannot_be_discovered_gets_an_error_page_never_a_loop() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_held, closed) = closed_addr();
    let closed = format!("http://{closed}");
    write_config(dir.path(), &closed, backend.port());
    let sidecar = Sidecar::start(dir.path()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, h, body) = get_with(&sidecar.url("/app/x"), &[HTML]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(h.get("location").is_none());
    assert!(String::from_utf8_lossy(&body).contains("Sign-in unavailable"));
    let metrics = sidecar.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("kind=\"login\"") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_plain_http_browser_of_another_host_goes_to_https_first_or_is_told_it_is_needed() {
    let backend = Backend::start().await;
    let op = Op::start(Arc::new(Signer::new("op1"))).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::new("test CA");
    let cert = ca.server(SECURE_HOST, &[SECURE_HOST]).material();
    write_config_with(dir.path(), &op.issuer, backend.port(), Some(cert));
    let sidecar = Sidecar::start(dir.path()).await;
    // On 127.0.0.1 (a loopback host keeps `Secure` cookies over plain HTTP) sign-in starts.
    sent_to_sign_in(&sidecar, "/app/x").await;

    // Another host, route without a certificate: a page saying sign-in needs HTTPS, never a
    // trip to the provider whose callback would lack the dropped `Secure` state cookie.
    let (s, h, body) = get_with(&sidecar.url("/app/reports"), &[HTML, ("host", "app.example.com")]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(h.get("location").is_none() && h.get("set-cookie").is_none(), "{h:?}");
    assert!(String::from_utf8_lossy(&body).contains("HTTPS"));
    // The route serves HTTPS too: the same URL over HTTPS first.
    let (s, h, _) = get_with(&sidecar.url("/app/reports?q=1"), &[HTML, ("host", SECURE_HOST)]).await;
    assert_eq!(s, StatusCode::FOUND);
    assert_eq!(h["location"], "https://secure.example.com/app/reports?q=1");
    assert!(h.get("set-cookie").is_none(), "{h:?}");
    // API clients there keep the 401.
    let (s, _, _) = get_with(&sidecar.url("/app/reports"), &[("host", SECURE_HOST)]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let audit = sidecar.wait_audit(4).await;
    let reasons: Vec<&str> = audit.iter().filter_map(|l| l["reason"].as_str()).collect();
    assert_eq!(
        reasons.iter().filter(|r| **r == "sign-in needs https").count(),
        2,
        "{reasons:?}"
    );
}

/// Signs a browser in on `sidecar` through `op`: the session cookie (`name=value`).
async fn signed_in(sidecar: &Sidecar, op: &Op) -> String {
    let h = sent_to_sign_in(sidecar, "/app/").await;
    let pending = cookie(&h, "__Host-portcullis-login-people-");
    let (code, q) = op.authorize(h["location"].to_str().unwrap());
    let url = sidecar.url(&format!("/oauth2/callback?code={code}&state={}", q["state"]));
    let (s, h, _) = get_with(&url, &[("cookie", &pending)]).await;
    assert_eq!(s, StatusCode::FOUND);
    cookie(&h, "__Host-portcullis-session-people=")
}

#[tokio::test]
async fn other_sites_and_other_cookies_cannot_spoil_a_session() {
    let backend = Backend::start().await;
    let op = Op::start(Arc::new(Signer::new("op1"))).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &op.issuer, backend.port());
    let sidecar = Sidecar::start(dir.path()).await;
    let session = signed_in(&sidecar, &op).await;
    // A cookie of the app's (or a sibling's) that is not ASCII hides nothing, and reaches the
    // app as it was sent.
    let req = Request::get(sidecar.url("/app/x"))
        .header(
            "cookie",
            http::HeaderValue::from_bytes(format!("pref=\u{e9}; {session}").as_bytes()).unwrap(),
        )
        .body(Full::default())
        .unwrap();
    let (s, _, body) = send(&client(), req).await.unwrap();
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        json_of(&body)["headers"]["x-portcullis-identity"],
        json!(["248289761001"])
    );
    // Another scheme's credentials beside the session: refused, never passed on unchecked.
    let (s, _, _) = get_with(
        &sidecar.url("/app/x"),
        &[("cookie", &session), ("authorization", "Basic Zm9vOmJhcg==")],
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Another site's fetch (Fetch Metadata says so) is not sent to sign in: no cookie minted.
    let (s, h, _) = get_with(
        &sidecar.url("/app/x"),
        &[HTML, ("sec-fetch-mode", "no-cors"), ("sec-fetch-dest", "empty")],
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(h.get("set-cookie").is_none(), "{h:?}");
    // A browser holding many sign-ins under way: the older are cleared with the new one.
    let mut jar = Vec::new();
    for _ in 0..4 {
        let (_, h, _) = get_with(&sidecar.url("/app/x"), &[HTML]).await;
        jar.push(cookie(&h, "__Host-portcullis-login-people-"));
    }
    let (s, h, _) = get_with(&sidecar.url("/app/x"), &[HTML, ("cookie", &jar.join("; "))]).await;
    assert_eq!(s, StatusCode::FOUND);
    let set: Vec<&str> = h.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(set.len(), 5, "{set:?}");
    for old in &jar {
        let name = old.split('=').next().unwrap();
        assert!(
            set.iter()
                .any(|c| c.starts_with(&format!("{name}=; Path=/; Max-Age=0"))),
            "{set:?}"
        );
    }
}
