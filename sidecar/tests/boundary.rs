//! Black-box tests of the boundary between the client and the app (docs/api.md, "Security
//! model"): what the app receives when a client tries to confuse hosts, spoof the sidecar's
//! headers or hide hop-by-hop tricks. Each test asserts what the app got (the echo backend),
//! not only what the client or the audit line saw.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A sidecar serving `config` and `secrets` (compiled-configuration JSON).
async fn serving(config: Value, secrets: Value) -> (Sidecar, tempfile::TempDir) {
    serving_with(config, secrets, &[]).await
}

/// [`serving`], with `extra` command-line arguments.
async fn serving_with(config: Value, secrets: Value, extra: &[&str]) -> (Sidecar, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    loaded("g1", config, secrets).write_dir(dir.path()).unwrap();
    (Sidecar::start_with(dir.path(), extra).await, dir)
}

/// Two hosts on one workload: `public.example` anonymous, `admin.example` behind Basic.
async fn two_hosts(port: u16) -> (Sidecar, tempfile::TempDir) {
    two_hosts_with(port, &[]).await
}

/// [`two_hosts`], with `extra` command-line arguments.
async fn two_hosts_with(port: u16, extra: &[&str]) -> (Sidecar, tempfile::TempDir) {
    serving_with(
        json!({
            "profiles": [
                {"name": "open", "auth": {"type": "Anonymous"}},
                {"name": "staff", "auth": {"type": "Basic"}},
            ],
            "routes": [
                {"name": "public", "hosts": ["public.example"], "pathPrefix": "/", "profiles": ["open"],
                 "backend": {"type": "Local", "port": port}},
                {"name": "admin", "hosts": ["admin.example"], "pathPrefix": "/", "profiles": ["staff"],
                 "backend": {"type": "Local", "port": port}},
            ],
        }),
        json!({"profiles": {"staff": {"basic": {"username": "zoë", "password": "pw"}}}}),
        extra,
    )
    .await
}

/// The status of a `GET /x` whose `Host` is the raw bytes `host`.
async fn raw_bytes(sidecar: &Sidecar, host: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(sidecar.inbound).await.unwrap();
    let mut request = b"GET /x HTTP/1.1\r\nHost: ".to_vec();
    request.extend_from_slice(host);
    request.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    stream.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the sidecar answers and closes within 5 s")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Sends `head` (CRLF line ends, no final blank line) as one HTTP/1.1 request with
/// `Connection: close`, and returns the status and the body of the answer.
async fn raw(sidecar: &Sidecar, head: &str) -> (u16, Value) {
    let addr = sidecar
        .url("/")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let request = format!("{head}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the sidecar answers and closes within 5 s")
        .unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    // The echo backend answers with Content-Length, so the body is the JSON itself.
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_request_names_one_authority() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = two_hosts(backend.port()).await;

    // Absolute form routed as public, Host says admin: refused, nothing reaches the app.
    let (status, echo) = raw(&sidecar, "GET http://public.example/x HTTP/1.1\r\nHost: admin.example").await;
    assert_eq!(status, 400, "{echo}");
    assert!(echo.get("headers").is_none(), "the app got it: {echo}");

    // Two Host headers, either order.
    for head in [
        "GET /x HTTP/1.1\r\nHost: public.example\r\nHost: admin.example",
        "GET /x HTTP/1.1\r\nHost: admin.example\r\nHost: public.example",
    ] {
        let (status, echo) = raw(&sidecar, head).await;
        assert_eq!(status, 400, "{head:?}: {echo}");
        assert!(echo.get("headers").is_none(), "the app got it: {echo}");
    }

    // Absolute form with an agreeing Host (any case): the app gets that one host.
    let (status, echo) = raw(&sidecar, "GET http://public.example/x HTTP/1.1\r\nHost: PUBLIC.example").await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["headers"]["host"], json!(["public.example"]), "{echo}");
    assert_eq!(echo["path"], "/x");

    // Absolute form without Host: the app gets the target's authority.
    let (status, echo) = raw(&sidecar, "GET http://public.example/y HTTP/1.1").await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["headers"]["host"], json!(["public.example"]), "{echo}");

    let audit = sidecar.wait_audit(5).await;
    let refused: Vec<_> = audit.iter().filter(|l| l["status"] == 400).collect();
    assert_eq!(refused.len(), 3, "{audit:?}");
    assert!(refused.iter().all(|l| l["decision"] == "deny"), "{refused:?}");
}

/// A `Host` an app could read as another host (userinfo, path characters) is refused, not
/// routed to a broader route and handed to the app as it came.
#[tokio::test]
async fn a_host_no_app_can_misread() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = two_hosts(backend.port()).await;
    for host in [
        "a@admin.example",
        "admin.example/x",
        "admin.example\\",
        "admin..example",
    ] {
        let (status, body) = raw(&sidecar, &format!("GET /x HTTP/1.1\r\nHost: {host}")).await;
        assert_eq!(status, 400, "{host}: {body}");
        assert!(body.get("headers").is_none(), "the app was reached: {body}");
    }
    // Bytes outside ASCII (a soft hyphen, `ª`), which Node's URL parser drops or folds.
    for host in [&b"admin\xC2\xAD.example"[..], b"\xAAdmin.example", b"admin\xAD.example"] {
        let status = raw_bytes(&sidecar, host).await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(host));
    }
}

/// A method-restricted route guards every spelling of its methods an app serves: lower case
/// is refused, HEAD goes where GET goes.
#[tokio::test]
async fn methods_cannot_walk_around_a_method_route() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = serving(
        json!({
            "profiles": [{"name": "open", "auth": {"type": "Anonymous"}},
                         {"name": "staff", "auth": {"type": "Basic"}}],
            "routes": [
                {"name": "public", "pathPrefix": "/", "profiles": ["open"],
                 "backend": {"type": "Local", "port": backend.port()}},
                {"name": "items", "pathPrefix": "/items", "methods": ["GET", "DELETE"], "profiles": ["staff"],
                 "backend": {"type": "Local", "port": backend.port()}},
            ],
        }),
        json!({"profiles": {"staff": {"basic": {"username": "zoë", "password": "pw"}}}}),
    )
    .await;
    let (status, _) = raw(&sidecar, "delete /items/7 HTTP/1.1\r\nHost: a.example").await;
    assert_eq!(status, 400);
    let (status, _) = raw(&sidecar, "HEAD /items/7 HTTP/1.1\r\nHost: a.example").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn connection_cannot_remove_the_host() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = two_hosts(backend.port()).await;
    let (status, echo) = raw(&sidecar, "GET /x HTTP/1.1\r\nHost: public.example\r\nConnection: host").await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["headers"]["host"], json!(["public.example"]), "{echo}");
}

#[tokio::test]
async fn the_app_gets_only_the_sidecars_verdict() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = two_hosts(backend.port()).await;
    let (status, echo) = raw(
        &sidecar,
        "GET /x HTTP/1.1\r\nHost: public.example\r\n\
         X_Portcullis_Identity: alice\r\nx-portcullis_profile: staff\r\nX-PORTCULLIS-ROUTE: admin\r\n\
         X-Real-IP: 203.0.113.66\r\nForwarded: for=203.0.113.66;host=admin.example;proto=https\r\n\
         X-Forwarded-Host: admin.example\r\nX-Forwarded-Port: 443\r\nX-Forwarded-Proto: https\r\n\
         X-Forwarded-Ssl: on\r\nX_Forwarded_Scheme: https\r\nX_Client_IP: 10.0.0.1\r\n\
         True-Client-IP: 10.0.0.1\r\nX-Original-URL: /admin\r\nX-HTTP-Method-Override: DELETE\r\n\
         X-Scheme: https\r\nX_Forwarded_Client_Cert: Hash=1\r\nX-Forwarded-User: admin",
    )
    .await;
    assert_eq!(status, 200, "{echo}");
    let h = echo["headers"].as_object().unwrap();
    let spoofs: Vec<&String> = h
        .keys()
        .filter(|k| k.replace('_', "-").starts_with("x-portcullis-") && k.contains('_'))
        .collect();
    assert!(spoofs.is_empty(), "spoofed spellings reached the app: {spoofs:?}");
    assert_eq!(h["x-portcullis-identity"], json!(["anonymous"]));
    assert_eq!(h["x-portcullis-profile"], json!(["open"]));
    assert_eq!(h["x-portcullis-route"], json!(["public"]));
    assert_eq!(h["x-real-ip"], json!(["127.0.0.1"]));
    assert_eq!(h["x-forwarded-proto"], json!(["http"]));
    let folded: Vec<String> = h.keys().map(|k| k.replace('_', "-")).collect();
    for gone in [
        "forwarded",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-ssl",
        "x-forwarded-scheme",
        "x-client-ip",
        "true-client-ip",
        "x-original-url",
        "x-http-method-override",
        "x-scheme",
        "x-forwarded-client-cert",
        "x-forwarded-user",
    ] {
        assert!(!folded.iter().any(|k| k == gone), "{gone} reached the app: {echo}");
    }
}

/// CGI-style gateways (lighttpd's CGI, FastCGI and SCGI, among others) turn every character
/// of a header name that is not a letter or a digit into `_`: `X-Portcullis.Identity` and
/// `Remote.User` would reach such an app as the sidecar's or a proxy's word. Every spelling of
/// a sidecar-only name goes.
#[tokio::test]
async fn no_spelling_of_a_sidecar_only_header_reaches_the_app() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = two_hosts(backend.port()).await;
    let (status, echo) = raw(
        &sidecar,
        "GET /x HTTP/1.1\r\nHost: public.example\r\n\
         X-Portcullis.Identity: dot\r\nX~Portcullis~Profile: tilde\r\n\
         X-Portcullis.Identity-Encoding: percent\r\nRemote.User: root\r\n\
         X-Forwarded.Host: evil.example\r\nX!Real!IP: 6.6.6.6\r\nX-Forwarded+Proto: https\r\n\
         X-Forwarded.For: 6.6.6.6\r\nX-Webauth-User: admin\r\nX-Amzn-Oidc-Identity: admin\r\n\
         X-Ms-Client-Principal-Name: admin\r\nX-Forwarded-Uri: /admin\r\nX-Envoy-Original-Path: /admin\r\n\
         Proxy: http://evil.example:8080\r\nProxy_Authorization: Basic eDp5\r\nContent_Length: 999\r\n\
         X-Auth-Request-Access-Token: t\r\nX-Ms-Client-Principal-Idp: aad\r\nX-Forwarded-Method: DELETE\r\n\
         X-Ssl-Client-S-Dn: CN=admin",
    )
    .await;
    assert_eq!(status, 200, "{echo}");
    let h = echo["headers"].as_object().unwrap();
    let cgi = |k: &str| -> String {
        k.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect()
    };
    let arrived: Vec<String> = h.keys().map(|k| cgi(k)).collect();
    let count = |name: &str| arrived.iter().filter(|k| **k == cgi(name)).count();
    for own in [
        "x-portcullis-identity",
        "x-portcullis-profile",
        "x-real-ip",
        "x-forwarded-proto",
        "x-forwarded-for",
    ] {
        assert_eq!(count(own), 1, "{own}: only the sidecar's: {echo}");
    }
    assert_eq!(h["x-portcullis-identity"], json!(["anonymous"]));
    assert_eq!(h["x-real-ip"], json!(["127.0.0.1"]));
    assert_eq!(h["x-forwarded-proto"], json!(["http"]));
    for gone in [
        "x-portcullis-identity-encoding",
        "remote-user",
        "x-forwarded-host",
        "x-webauth-user",
        "x-amzn-oidc-identity",
        "x-ms-client-principal-name",
        "x-forwarded-uri",
        "x-envoy-original-path",
        "proxy",
        "proxy-authorization",
        "content-length",
        "x-auth-request-access-token",
        "x-ms-client-principal-idp",
        "x-forwarded-method",
        "x-ssl-client-s-dn",
    ] {
        assert_eq!(count(gone), 0, "{gone} reached the app: {echo}");
    }
}

/// `Connection` may name the fields that describe one connection, not the forwarding chain
/// the sidecar read and promises the app: the client's `X-Forwarded-For` arrives with the peer
/// appended, on a call without a body and on one with a body alike.
#[tokio::test]
async fn connection_cannot_name_the_forwarding_chain_away() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = two_hosts(backend.port()).await;
    for head in [
        "GET /x HTTP/1.1\r\nHost: public.example",
        "POST /x HTTP/1.1\r\nHost: public.example\r\nContent-Length: 0",
    ] {
        let (status, echo) = raw(
            &sidecar,
            &format!("{head}\r\nConnection: keep-alive, X-Forwarded-For\r\nX-Forwarded-For: 203.0.113.7"),
        )
        .await;
        assert_eq!(status, 200, "{echo}");
        assert_eq!(
            echo["headers"]["x-forwarded-for"],
            json!(["203.0.113.7, 127.0.0.1"]),
            "{head}: {echo}"
        );
    }
}

#[tokio::test]
async fn an_identity_that_is_no_header_value_arrives_encoded() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = two_hosts(backend.port()).await;
    let auth = basic("zoë", "pw");
    let (status, echo) = raw(
        &sidecar,
        &format!("GET /x HTTP/1.1\r\nHost: admin.example\r\nAuthorization: {auth}"),
    )
    .await;
    assert_eq!(status, 200, "{echo}");
    let h = &echo["headers"];
    assert_eq!(h["x-portcullis-identity"], json!(["zo%C3%AB"]), "{echo}");
    assert_eq!(h["x-portcullis-identity-encoding"], json!(["percent"]), "{echo}");
}

/// Gateway mode: the echo backend plays a third-party origin.
async fn gateway(origin_port: u16) -> (Sidecar, tempfile::TempDir) {
    let origin = |name: &str, prefix: &str, profiles: &[&str]| {
        json!({"name": name, "pathPrefix": prefix, "profiles": profiles,
               "backend": {"type": "Origin", "url": format!("http://127.0.0.1:{origin_port}"), "tlsMode": "None"}})
    };
    let mut passing = origin("passes-them-on", "/pass", &["staff"]);
    passing["backend"]["passCredentials"] = json!(true);
    serving(
        json!({
            "profiles": [
                {"name": "staff", "auth": {"type": "Basic"}},
                {"name": "partners", "auth": {"type": "ApiKey", "keyParam": "apikey", "keyHeader": "X-Api-Key"}},
                {"name": "open", "auth": {"type": "Anonymous"}},
                {"name": "signers", "auth": {"type": "OAuth1", "timestampWindowSeconds": 300}},
            ],
            "routes": [
                origin("by-password", "/p", &["staff"]),
                origin("by-key", "/k", &["partners"]),
                origin("password-or-open", "/o", &["staff", "open"]),
                origin("by-oauth1", "/s", &["signers"]),
                passing,
            ],
        }),
        json!({"profiles": {
            "staff": {"basic": {"username": "alice", "password": "s3cret"}},
            "partners": {"apiKeys": {"key-1": "unused"}},
            "signers": {"oauth1Consumers": {"consumer-1": OAUTH1_SECRET}},
        }}),
    )
    .await
}

#[tokio::test]
async fn credentials_meant_for_the_sidecar_never_reach_an_origin() {
    let origin = Backend::start().await;
    let (sidecar, _dir) = gateway(origin.port()).await;
    let auth = basic("alice", "s3cret");

    let (status, _, body) = get_with(&sidecar.url("/p/x?a=1"), &[("authorization", &auth)]).await;
    assert_eq!(status, 200);
    let echo = json_of(&body);
    assert!(
        echo["headers"].get("authorization").is_none(),
        "the password reached the origin: {echo}"
    );
    assert_eq!(echo["query"], "a=1");

    // The key in the query (any spelling the engine reads) and in its header.
    let (status, _, body) = get_with(&sidecar.url("/k/x?a=1&apikey=key-1&b=2"), &[]).await;
    assert_eq!(status, 200);
    let echo = json_of(&body);
    assert_eq!(echo["query"], "a=1&b=2", "{echo}");
    let (status, _, body) = get_with(&sidecar.url("/k/x"), &[("x-api-key", "key-1")]).await;
    assert_eq!(status, 200);
    let echo = json_of(&body);
    assert!(echo["headers"].get("x-api-key").is_none(), "{echo}");
    assert!(echo.get("query").is_none_or(|q| q.is_null() || q == ""), "{echo}");

    // A wrong password that fell through to the anonymous profile is not passed on either.
    let (status, _, body) = get_with(&sidecar.url("/o/x"), &[("authorization", &basic("alice", "guess-1"))]).await;
    assert_eq!(status, 200);
    let echo = json_of(&body);
    assert_eq!(echo["headers"]["x-portcullis-identity"], json!(["anonymous"]));
    assert!(
        echo["headers"].get("authorization").is_none(),
        "a password guess reached the origin: {echo}"
    );

    // A route that says so passes them on.
    let (status, _, body) = get_with(&sidecar.url("/pass/x"), &[("authorization", &auth)]).await;
    assert_eq!(status, 200);
    assert_eq!(json_of(&body)["headers"]["authorization"], json!([auth]));

    // An OAuth 1.0a signature, in the header or in the query: neither reaches the origin.
    let authority = format!("127.0.0.1:{}", sidecar.inbound.port());
    let header = oauth1_header(&authority, "/s/x", "a=1", "n-header");
    let (status, _, body) = get_with(&sidecar.url("/s/x?a=1"), &[("authorization", &header)]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let echo = json_of(&body);
    assert_eq!(echo["headers"]["x-portcullis-identity"], json!(["consumer-1"]));
    assert!(echo["headers"].get("authorization").is_none(), "{echo}");
    assert_eq!(echo["query"], "a=1");
    // The same protocol parameters carried in the query instead sign the same base string.
    let header = oauth1_header(&authority, "/s/x", "a=1", "n-query");
    let params = header
        .strip_prefix("OAuth ")
        .unwrap()
        .replace(", ", "&")
        .replace('"', "");
    let (status, _, body) = get_with(&sidecar.url(&format!("/s/x?a=1&{params}")), &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        json_of(&body)["query"],
        "a=1",
        "the oauth_* parameters reached the origin"
    );
}

const OAUTH1_SECRET: &str = "oauth1 consumer secret";

/// An `Authorization: OAuth` value signing `GET http://<authority><path>?<query>` for
/// consumer-1 now (HMAC-SHA1, no token).
fn oauth1_header(authority: &str, path: &str, query: &str, nonce: &str) -> String {
    use portcullis_signatures::oauth1::{Credentials, Request, SignatureMethod, authorization_header};
    let req = Request {
        method: "GET",
        scheme: "http",
        authority,
        path,
        query: Some(query),
        authorization: None,
        form: None,
    };
    let secrets = Credentials {
        consumer_secret: OAUTH1_SECRET,
        token_secret: "",
        rsa: None,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    authorization_header(
        &req,
        "consumer-1",
        None,
        SignatureMethod::HmacSha1,
        now,
        nonce,
        &secrets,
    )
    .unwrap()
}

/// An anonymous route `/` and a Basic route `/admin` on one app.
async fn open_and_admin(port: u16) -> (Sidecar, tempfile::TempDir) {
    serving(
        json!({
            "profiles": [
                {"name": "open", "auth": {"type": "Anonymous"}},
                {"name": "staff", "auth": {"type": "Basic"}},
            ],
            "routes": [
                {"name": "public", "pathPrefix": "/", "profiles": ["open"], "backend": {"type": "Local", "port": port}},
                {"name": "admin", "pathPrefix": "/admin", "profiles": ["staff"], "backend": {"type": "Local", "port": port}},
            ],
        }),
        json!({"profiles": {"staff": {"basic": {"username": "alice", "password": "pw"}}}}),
    )
    .await
}

#[tokio::test]
async fn no_spelling_of_a_path_walks_around_its_route() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = open_and_admin(backend.port()).await;
    for path in [
        "/%61dmin/x",
        "//admin/x",
        "/admin;x=1/y",
        "/admin%2fx",
        "/Admin/x",
        "/a%64min//x",
    ] {
        let (status, echo) = raw(&sidecar, &format!("GET {path} HTTP/1.1\r\nHost: app")).await;
        assert!(status == 400 || status == 401, "{path}: {status}, the app got {echo}");
        assert!(echo.get("path").is_none(), "{path} reached the app anonymously: {echo}");
    }
    // With credentials the app receives the path that was matched, in its normal form.
    let auth = basic("alice", "pw");
    let (status, echo) = raw(
        &sidecar,
        &format!("GET /%61dmin//x%2a?q=%61 HTTP/1.1\r\nHost: app\r\nAuthorization: {auth}"),
    )
    .await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["path"], "/admin/x%2A", "{echo}");
    assert_eq!(echo["query"], "q=%61", "the query is forwarded as sent: {echo}");
    assert_eq!(echo["headers"]["x-portcullis-route"], json!(["admin"]));
}

#[tokio::test]
async fn an_identity_header_changes_the_audit_line_not_who_the_app_is_told() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = serving(
        json!({
            "profiles": [{"name": "accounting", "auth": {"type": "Basic"}, "identityHeader": "X-App-Key"}],
            "routes": [{"name": "finance", "pathPrefix": "/", "profiles": ["accounting"],
                        "backend": {"type": "Local", "port": backend.port()}}],
        }),
        json!({"profiles": {"accounting": {"basic": {"username": "bob", "password": "builder"}}}}),
    )
    .await;
    let (status, _, body) = get_with(
        &sidecar.url("/x"),
        &[("authorization", &basic("bob", "builder")), ("x-app-key", "alice")],
    )
    .await;
    assert_eq!(status, 200);
    let h = &json_of(&body)["headers"];
    assert_eq!(h["x-portcullis-identity"], json!(["bob"]), "{h}");
    let audit = sidecar.wait_audit(1).await;
    assert_eq!(audit[0]["identity"], "alice");
    assert_eq!(audit[0]["authenticated"], "bob", "the line names who really called");
}

#[tokio::test]
async fn passwords_cannot_be_guessed_at_line_rate() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = two_hosts(backend.port()).await;
    let get_admin = |password: &str| {
        let auth = basic("zoë", password);
        let url = sidecar.url("/x");
        async move { get_with(&url, &[("host", "admin.example"), ("authorization", auth.as_str())]).await }
    };
    // The documented budget: 10 failures per user a minute.
    for n in 0..10 {
        let (status, _, _) = get_admin(&format!("guess-{n}")).await;
        assert_eq!(status, 401, "guess {n}");
    }
    let (status, headers, body) = get_admin("pw").await;
    assert_eq!(
        status, 429,
        "the right password is not looked at once the budget is spent"
    );
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(json_of(&body).get("headers").is_none(), "the app was reached");
    let metrics = sidecar.metrics().await;
    assert!(
        metrics.contains("portcullis_rate_limit_rejections_total{scope=\"auth_failures\"} 1"),
        "{metrics}"
    );
}

/// The budget is the operator's to set: `--auth-failures-per-address` and
/// `--auth-failures-per-user`, 0 for no limit.
#[tokio::test]
async fn the_failed_authentication_budget_is_configurable() {
    let backend = Backend::start().await;
    let guesses = |sidecar: &Sidecar, n: usize| {
        let url = sidecar.url("/x");
        async move {
            let mut statuses = Vec::new();
            for i in 0..n {
                let auth = basic(&format!("user-{i}"), "guess");
                let headers = [("host", "admin.example"), ("authorization", auth.as_str())];
                statuses.push(get_with(&url, &headers).await.0);
            }
            statuses
        }
    };
    let (sidecar, _dir) = two_hosts_with(backend.port(), &["--auth-failures-per-address", "2"]).await;
    assert_eq!(guesses(&sidecar, 3).await, [401, 401, 429]);
    drop(sidecar);
    let (sidecar, _dir) = two_hosts_with(
        backend.port(),
        &["--auth-failures-per-address", "0", "--auth-failures-per-user", "0"],
    )
    .await;
    let statuses = guesses(&sidecar, 40).await;
    assert!(statuses.iter().all(|&s| s == 401), "{statuses:?}");
}

/// A route cannot make the sidecar call itself: its admin listener (`/config`) or egress
/// listener (another route's origin credentials) is never a route's app.
#[tokio::test]
async fn a_route_cannot_point_at_the_sidecars_own_listeners() {
    let backend = Backend::start().await;
    let (sidecar, dir) = two_hosts(backend.port()).await;
    for (generation, port) in [("g2", sidecar.admin.port()), ("g3", sidecar.egress.port())] {
        loaded(
            generation,
            json!({
                "profiles": [{"name": "open", "auth": {"type": "Anonymous"}}],
                "routes": [{"name": "loop", "pathPrefix": "/", "profiles": ["open"],
                            "backend": {"type": "Local", "port": port}}],
            }),
            json!({}),
        )
        .write_dir(dir.path())
        .unwrap();
        assert!(sidecar.wait_generation(generation, Duration::from_secs(10)).await);
        let (status, _, body) = get_with(&sidecar.url("/config"), &[]).await;
        assert_eq!(status, 502, "port {port}: {}", String::from_utf8_lossy(&body));
        assert!(
            !String::from_utf8_lossy(&body).contains("routes"),
            "the admin listener answered"
        );
    }
}

/// In a pod, an origin on this host is the pod's own app or the sidecar itself, reached
/// around the routes that guard them: without `--allow-loopback-origins` every spelling of
/// it (an address literal, a name that resolves to it) is refused per call (502), and the
/// origin never sees the call.
#[tokio::test]
async fn an_origin_on_this_host_is_refused() {
    let origin = Backend::start().await;
    let port = origin.port();
    let dir = tempfile::tempdir().unwrap();
    let routes: Vec<Value> = ["127.0.0.1", "127.1", "2130706433", "localhost", "[::ffff:127.0.0.1]"]
        .iter()
        .enumerate()
        .map(|(i, host)| {
            json!({"name": format!("o{i}"), "pathPrefix": format!("/o{i}"), "profiles": ["open"],
                   "backend": {"type": "Origin", "url": format!("http://{host}:{port}"), "tlsMode": "None"}})
        })
        .collect();
    loaded(
        "g1",
        json!({"profiles": [{"name": "open", "auth": {"type": "Anonymous"}}], "routes": routes}),
        json!({}),
    )
    .write_dir(dir.path())
    .unwrap();
    let sidecar = Sidecar::start_strict(dir.path(), &[]).await;
    for i in 0..5 {
        let (status, _, body) = get_with(&sidecar.url(&format!("/o{i}/x")), &[]).await;
        assert_eq!(status, 502, "route o{i}: {}", String::from_utf8_lossy(&body));
        assert!(json_of(&body).get("headers").is_none(), "the origin was reached");
    }
}

/// A route that lists methods owns its path for every method: `DELETE /basic/x` is `405`
/// with `Allow`, never an anonymous call through the broader `/` route (the app may serve
/// `DELETE` under `/basic` too). The app is not reached.
#[tokio::test]
async fn a_method_a_route_does_not_list_is_not_handed_to_a_broader_route() {
    let backend = Backend::start().await;
    let port = backend.port();
    let (sidecar, _dir) = serving(
        json!({
            "profiles": [
                {"name": "open", "auth": {"type": "Anonymous"}},
                {"name": "staff", "auth": {"type": "Basic"}},
            ],
            "routes": [
                {"name": "basic", "pathPrefix": "/basic", "methods": ["GET", "POST"], "profiles": ["staff"],
                 "backend": {"type": "Local", "port": port}},
                {"name": "pub", "pathPrefix": "/", "profiles": ["open"], "backend": {"type": "Local", "port": port}},
            ],
        }),
        json!({"profiles": {"staff": {"basic": {"username": "alice", "password": "pw"}}}}),
    )
    .await;
    for method in ["DELETE", "PUT", "PATCH", "OPTIONS"] {
        let req = http::Request::builder()
            .method(method)
            .uri(sidecar.url("/basic/x"))
            .body(http_body_util::Full::default())
            .unwrap();
        let (status, headers, body) = send(&client(), req).await.expect("answer");
        assert_eq!(status, 405, "{method}");
        assert_eq!(headers["allow"], "GET, POST, HEAD", "{method}");
        // The sidecar's answer, not the app's echo.
        assert_eq!(json_of(&body)["error"], "method not allowed", "{method}");
    }
    assert_eq!(get(&sidecar.url("/basic/x")).await.unwrap().0, 401);
    let (status, _, body) = get(&sidecar.url("/elsewhere")).await.unwrap();
    assert_eq!((status.as_u16(), &json_of(&body)["path"]), (200, &json!("/elsewhere")));
}

/// A body with a transfer coding other than a lone `chunked` is refused with 501 before it
/// reaches the app: hyper would decode the chunks and the app would get, say, gzip bytes
/// without being told.
#[tokio::test]
async fn a_body_coded_other_than_chunked_is_not_implemented() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = two_hosts(backend.port()).await;
    for coding in ["gzip, chunked", "identity, chunked", "chunked, chunked"] {
        let (status, body) = raw(
            &sidecar,
            &format!("POST /x HTTP/1.1\r\nHost: public.example\r\nTransfer-Encoding: {coding}"),
        )
        .await;
        assert_eq!(status, 501, "{coding}: {body}");
        assert_eq!(body["error"], "transfer coding not implemented", "{coding}");
    }
    let lines = sidecar.wait_audit(3).await;
    assert!(
        lines.iter().all(|l| l["status"] == 501
            && l["decision"] == "deny"
            && l["reason"] == "transfer coding other than chunked"),
        "{lines:?}"
    );
}
