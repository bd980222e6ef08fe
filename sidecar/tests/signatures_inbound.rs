//! Black-box tests of HttpSignature profiles through the real binary: requests signed in the
//! test with portcullis-signatures (RFC 9421 and draft-cavage), the identity passed to the app
//! and written to the audit log, replays, bodies that do not match their signed digest, and
//! bodies too large to check.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::Full;
use portcullis_signatures::digest::{DigestAlgorithm, content_digest, digest_header};
use portcullis_signatures::{Algorithm, Key, Message, cavage, rfc9421};
use serde_json::{Value, json};

const SECRET: &str = "a shared secret for gw-1";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

async fn sidecar_with(port: u16, extra: &[&str]) -> (Sidecar, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    configuration(port, "g1", json!({"gw-1": SECRET}))
        .write_dir(dir.path())
        .unwrap();
    (Sidecar::start_with(dir.path(), extra).await, dir)
}

/// Two HttpSignature profiles with the same keys (keyId → secret): RFC 9421 on `/api` and
/// `/count`, draft-cavage on `/old`.
fn configuration(port: u16, generation: &str, keys: Value) -> portcullis_config::Loaded {
    let profile = |name: &str, standard: &str, required: &[&str]| {
        json!({"name": name, "auth": {"type": "HttpSignature", "standard": standard,
            "algorithms": ["hmac-sha256", "ed25519"], "requiredComponents": required, "maxAgeSeconds": 300}})
    };
    let route = |name: &str, prefix: &str, profile: &str| {
        json!({"name": name, "pathPrefix": prefix, "profiles": [profile],
            "backend": {"type": "Local", "port": port}})
    };
    loaded(
        generation,
        json!({
            "profiles": [profile("signed", "RFC9421", &["@method", "@path"]),
                         profile("legacy", "Cavage", &["(request-target)"])],
            "routes": [route("api", "/api", "signed"), route("counted", "/count", "signed"),
                       route("old", "/old", "legacy")],
        }),
        json!({"profiles": {
            "signed": {"signatureKeys": keys.clone()},
            "legacy": {"signatureKeys": keys},
        }}),
    )
}

/// A request to the sidecar, signed as the caller would.
struct Signed {
    method: &'static str,
    url: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Signed {
    fn new(sidecar: &Sidecar, method: &'static str, path_and_query: &str, body: &[u8]) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_str(&sidecar.inbound.to_string()).unwrap());
        Self {
            method,
            url: sidecar.url(path_and_query),
            headers,
            body: Bytes::copy_from_slice(body),
        }
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.insert(name, HeaderValue::from_str(value).unwrap());
        self
    }

    fn sign_9421(self, secret: &str, created: u64, components: &[&str]) -> Self {
        self.sign_9421_as("gw-1", secret, created, components)
    }

    fn sign_9421_as(mut self, key_id: &str, secret: &str, created: u64, components: &[&str]) -> Self {
        let uri: http::Uri = self.url.parse().unwrap();
        let method = http::Method::from_bytes(self.method.as_bytes()).unwrap();
        let key = Key::from_secret(secret.as_bytes()).unwrap();
        let params = rfc9421::SignParams::new("sig1", key_id, Algorithm::HmacSha256, created, components);
        let signed = rfc9421::sign(
            &Message::from_parts(&method, &uri, &self.headers, "http"),
            &key,
            &params,
        )
        .unwrap();
        signed.apply(&mut self.headers).unwrap();
        self
    }

    fn sign_cavage(self, secret: &str, created: u64, headers: &[&str]) -> Self {
        let uri: http::Uri = self.url.parse().unwrap();
        let method = http::Method::from_bytes(self.method.as_bytes()).unwrap();
        let key = Key::from_secret(secret.as_bytes()).unwrap();
        let params = cavage::SignParams {
            key_id: "gw-1",
            alg: Algorithm::HmacSha256,
            algorithm_name: cavage::AlgorithmName::Hs2019,
            headers,
            created: Some(created),
            expires: None,
        };
        let signed = cavage::sign(
            &Message::from_parts(&method, &uri, &self.headers, "http"),
            &key,
            &params,
        )
        .unwrap();
        let value = signed.signature_header().to_owned();
        self.header("signature", &value)
    }

    async fn send(&self) -> (StatusCode, HeaderMap, Value) {
        self.send_body(self.body.clone()).await
    }

    async fn send_body(&self, body: Bytes) -> (StatusCode, HeaderMap, Value) {
        let mut req = Request::builder().method(self.method).uri(&self.url);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let (status, headers, body) = send(&client(), req.body(Full::new(body)).unwrap())
            .await
            .expect("sidecar answers");
        (status, headers, json_of(&body))
    }
}

#[tokio::test]
async fn signed_calls_are_admitted_as_the_key_id_and_replays_refused() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = sidecar_with(backend.port(), &[]).await;
    let components = ["@method", "@authority", "@path", "@query"];

    let req = Signed::new(&sidecar, "GET", "/api/orders?id=7", b"").sign_9421(SECRET, now(), &components);
    let (status, _, body) = req.send().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["headers"]["x-portcullis-identity"], json!(["gw-1"]));
    assert_eq!(body["headers"]["x-portcullis-profile"], json!(["signed"]));

    // The very same signed request again: a replay.
    let (status, headers, body) = req.send().await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers["www-authenticate"], "Signature realm=\"api\"");
    assert_eq!(body["route"], "api");

    // Wrong key, stale created, a changed component: 401.
    let wrong = Signed::new(&sidecar, "GET", "/api/orders", b"").sign_9421("not the secret", now(), &components);
    assert_eq!(wrong.send().await.0, 401);
    let stale = Signed::new(&sidecar, "GET", "/api/orders", b"").sign_9421(SECRET, now() - 400, &components);
    assert_eq!(stale.send().await.0, 401);
    let mut moved = Signed::new(&sidecar, "GET", "/api/orders", b"").sign_9421(SECRET, now(), &components);
    moved.url = sidecar.url("/api/refunds");
    assert_eq!(moved.send().await.0, 401);

    // draft-cavage on its own route.
    let old = Signed::new(&sidecar, "GET", "/old/x", b"").sign_cavage(
        SECRET,
        now(),
        &["(request-target)", "host", "(created)"],
    );
    let (status, _, body) = old.send().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["headers"]["x-portcullis-identity"], json!(["gw-1"]));
    assert_eq!(old.send().await.0, 401, "cavage replay");

    let lines = sidecar.wait_audit(7).await;
    assert_eq!(lines[0]["identity"], "gw-1");
    assert_eq!(lines[0]["profile"], "signed");
    assert_eq!(lines[0]["decision"], "allow");
    assert_eq!(lines[1]["status"], 401);
    assert_eq!(lines[1]["reason"], "signature replayed");
    assert_eq!(lines[2]["reason"], "signature does not verify");
    assert_eq!(lines[3]["reason"], "signature is stale (older than maxAgeSeconds)");
    assert_eq!(lines[5]["identity"], "gw-1");
    assert_eq!(lines[6]["reason"], "signature replayed");
    let raw = std::fs::read_to_string(&sidecar.audit).unwrap() + &sidecar.log();
    assert!(!raw.contains(SECRET), "a key reached a log");
}

#[tokio::test]
async fn signed_bodies_must_match_their_digest_and_fit_the_limit() {
    let backend = Backend::start().await;
    let (sidecar, _dir) = sidecar_with(backend.port(), &["--max-signed-body-bytes", "1024"]).await;
    let covered = ["@method", "@authority", "@path", "content-digest"];
    let body = br#"{"amount": 12}"#;
    // One reading of the clock: `t - 1` must differ from the first signature's `created`.
    let t = now();

    let ok = Signed::new(&sidecar, "POST", "/count", body)
        .header("content-digest", &content_digest(DigestAlgorithm::Sha256, body))
        .sign_9421(SECRET, t, &covered);
    let (status, _, answer) = ok.send().await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["bytes"],
        json!(body.len()),
        "the checked body reaches the app whole"
    );

    // The same headers (signed a second earlier: not a replay), another body.
    let changed = Signed::new(&sidecar, "POST", "/count", body)
        .header("content-digest", &content_digest(DigestAlgorithm::Sha256, body))
        .sign_9421(SECRET, t - 1, &covered);
    let (status, headers, answer) = changed.send_body(Bytes::from_static(br#"{"amount": 12000}"#)).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"], "body does not match its signed digest");
    assert_eq!(headers["www-authenticate"], "Signature realm=\"counted\"");

    // Larger than --max-signed-body-bytes: 413, even with a right digest.
    let big = vec![b'x'; 4096];
    let large = Signed::new(&sidecar, "POST", "/count", &big)
        .header("content-digest", &content_digest(DigestAlgorithm::Sha256, &big))
        .sign_9421(SECRET, t, &covered);
    let (status, _, answer) = large.send().await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"], "signed request body too large");

    // A signature that covers no digest leaves the body alone (it streams, whatever its size).
    let unchecked = Signed::new(&sidecar, "POST", "/count", &big).sign_9421(SECRET, t, &["@method", "@path"]);
    let (status, _, answer) = unchecked.send().await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["bytes"], json!(big.len()));

    // draft-cavage: the Digest header.
    let legacy = Signed::new(&sidecar, "POST", "/old/x", body)
        .header("digest", &digest_header(DigestAlgorithm::Sha256, body))
        .sign_cavage(SECRET, t, &["(request-target)", "(created)", "digest"]);
    assert_eq!(legacy.send().await.0, 200);
    let legacy = Signed::new(&sidecar, "POST", "/old/x", body)
        .header("digest", &digest_header(DigestAlgorithm::Sha256, body))
        .sign_cavage(SECRET, t - 1, &["(request-target)", "(created)", "digest"]);
    assert_eq!(legacy.send_body(Bytes::from_static(b"tampered")).await.0, 401);

    let lines = sidecar.wait_audit(6).await;
    assert_eq!(lines[1]["reason"], "body does not match its signed digest");
    assert_eq!(lines[1]["identity"], "gw-1");
    assert_eq!(lines[2]["status"], 413);
    assert_eq!(
        lines[2]["reason"],
        "signed request body larger than --max-signed-body-bytes"
    );
}

#[tokio::test]
async fn keys_reload_without_restart_and_replays_outlive_the_reload() {
    let backend = Backend::start().await;
    let (sidecar, dir) = sidecar_with(backend.port(), &[]).await;
    let components = ["@method", "@authority", "@path"];
    let first = Signed::new(&sidecar, "GET", "/api/a", b"").sign_9421(SECRET, now(), &components);
    assert_eq!(first.send().await.0, 200);

    // A second key arrives: it is accepted, and the first signature is still a replay.
    configuration(backend.port(), "g2", json!({"gw-1": SECRET, "gw-2": "the second key"}))
        .write_dir(dir.path())
        .unwrap();
    assert!(sidecar.wait_generation("g2", std::time::Duration::from_secs(5)).await);
    let (status, _, body) = Signed::new(&sidecar, "GET", "/api/b", b"")
        .sign_9421_as("gw-2", "the second key", now(), &components)
        .send()
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["headers"]["x-portcullis-identity"], json!(["gw-2"]));
    assert_eq!(first.send().await.0, 401);

    // The first key is withdrawn: refused.
    configuration(backend.port(), "g3", json!({"gw-2": "the second key"}))
        .write_dir(dir.path())
        .unwrap();
    assert!(sidecar.wait_generation("g3", std::time::Duration::from_secs(5)).await);
    let late = Signed::new(&sidecar, "GET", "/api/c", b"").sign_9421(SECRET, now(), &components);
    assert_eq!(late.send().await.0, 401);

    let lines = sidecar.wait_audit(4).await;
    assert_eq!(lines[1]["identity"], "gw-2");
    assert_eq!(lines[2]["reason"], "signature replayed");
    assert_eq!(lines[3]["reason"], "unknown signature keyId");
}

/// Bodies held in memory to check their digest share one budget (`--body-buffer-budget`):
/// uploads that stall half-way cannot make the sidecar hold more, a request beyond it gets
/// 503 with `Retry-After`, and the room comes back when the stalled uploads go away.
#[tokio::test]
async fn held_bodies_share_one_memory_budget() {
    use tokio::io::AsyncWriteExt;

    let backend = Backend::start().await;
    let (sidecar, _dir) = sidecar_with(
        backend.port(),
        &["--max-signed-body-bytes", "65536", "--body-buffer-budget", "65536"],
    )
    .await;
    let covered = ["@method", "@authority", "@path", "content-digest"];
    let body = vec![b'x'; 40_000];
    let signed = |created: u64| {
        Signed::new(&sidecar, "POST", "/count", &body)
            .header("content-digest", &content_digest(DigestAlgorithm::Sha256, &body))
            .sign_9421(SECRET, created, &covered)
    };
    // An upload that sends 40,000 of its 40,000 bytes but one, then waits.
    let stalled = signed(now() - 2);
    let mut head = format!("POST /count HTTP/1.1\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in &stalled.headers {
        head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap()));
    }
    head.push_str("\r\n");
    let mut upload = tokio::net::TcpStream::connect(sidecar.inbound).await.unwrap();
    upload.write_all(head.as_bytes()).await.unwrap();
    upload.write_all(&body[..body.len() - 1]).await.unwrap();
    upload.flush().await.unwrap();
    // Bounded wait until the sidecar has read what was sent.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let (status, headers, answer) = signed(now() - 1).send().await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(answer["error"], "too many request bodies held in memory; retry shortly");

    drop(upload);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut created = now();
    loop {
        let (status, _, answer) = signed(created).send().await;
        if status == 200 {
            assert_eq!(answer["bytes"], json!(body.len()));
            break;
        }
        assert_eq!(status, 503, "{answer}");
        assert!(std::time::Instant::now() < deadline, "the budget never came back");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        created -= 1;
    }
}

/// Issue 15, item 3: a `Signature-Input` of 7,000 components (55 KB), a `Signature` of 7,000
/// members and a draft-cavage `headers` of 7,000 names are refused as malformed by their
/// bounds, before any component is looked up; the sidecar keeps serving.
#[tokio::test]
async fn huge_signature_headers_are_refused_as_malformed() {
    let backend = Backend::start().await;
    // Heads up to 128 KiB: the 7,000 members of `Signature` take 84 KB.
    let (sidecar, _dir) = sidecar_with(backend.port(), &["--max-header-bytes", "131072"]).await;
    let n = 7000;
    let components: Vec<String> = (0..n).map(|i| format!("\"h{i}\"")).collect();
    let input = format!(
        "sig1=(\"@method\" \"@path\" {});created={};keyid=\"gw-1\";alg=\"hmac-sha256\"",
        components.join(" "),
        now()
    );
    let members: Vec<String> = (0..n).map(|i| format!("s{i}=:AAAA:")).collect();
    let members = members.join(", ");
    let names: Vec<String> = (0..n).map(|i| format!("h{i}")).collect();
    let cavage = format!(
        "keyId=\"gw-1\",algorithm=\"hs2019\",created={},headers=\"(request-target) (created) {}\",signature=\"AAAA\"",
        now(),
        names.join(" ")
    );
    let hostile: [(&str, Vec<(&str, &str)>); 3] = [
        (
            "/api/x",
            vec![("signature-input", &input), ("signature", "sig1=:AAAA:")],
        ),
        (
            "/api/x",
            vec![
                (
                    "signature-input",
                    "sig1=(\"@method\" \"@path\");created=1;keyid=\"gw-1\"",
                ),
                ("signature", &members),
            ],
        ),
        ("/old/x", vec![("signature", &cavage)]),
    ];
    for (path, headers) in &hostile {
        let (status, _, body) = get_with(&sidecar.url(path), headers).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", String::from_utf8_lossy(&body));
    }
    let lines = sidecar.wait_audit(3).await;
    for line in &lines[..3] {
        assert_eq!(line["reason"], "malformed HTTP message signature", "{line}");
    }
    assert_eq!(get_with(&sidecar.url("/nowhere"), &[]).await.0, StatusCode::NOT_FOUND);
}

/// A client that leaves while its signed body is read (its connection closes in the middle of
/// the body, or it resets its HTTP/2 stream) is audited 499 `abandoned`: nobody refused its
/// body, and no answer reaches it. The app sees nothing of it.
#[tokio::test]
async fn a_client_that_leaves_while_its_signed_body_is_read_is_abandoned() {
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    let backend = Backend::start().await;
    let (sidecar, _dir) = sidecar_with(backend.port(), &[]).await;
    let covered = ["@method", "@path", "content-digest"];
    let body = vec![b'x'; 1000];
    let digest = content_digest(DigestAlgorithm::Sha256, &body);
    let t = now();

    // HTTP/1.1: half the body, then the connection closes.
    let signed = Signed::new(&sidecar, "POST", "/count", &body)
        .header("content-digest", &digest)
        .sign_9421(SECRET, t, &covered);
    let mut head = "POST /count HTTP/1.1\r\ncontent-length: 1000\r\n".to_owned();
    for (name, value) in &signed.headers {
        head += &format!("{name}: {}\r\n", value.to_str().unwrap());
    }
    head += "\r\n";
    let half = [head.as_bytes(), &body[..500]].concat();
    send_then_leave(sidecar.inbound, &half, std::time::Duration::from_millis(200)).await;

    // HTTP/2: half the body, then the body fails, which resets the stream.
    let signed = Signed::new(&sidecar, "POST", "/count", &body)
        .header("content-digest", &digest)
        .sign_9421(SECRET, t - 1, &covered);
    let tcp = tokio::net::TcpStream::connect(sidecar.inbound).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(2);
    let upload = StreamBody::new(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let mut req = Request::post(&signed.url).header("content-length", body.len());
    for (name, value) in &signed.headers {
        if name != "host" {
            req = req.header(name, value);
        }
    }
    let call = tokio::spawn(sender.send_request(req.body(upload).unwrap()));
    tx.send(Ok(Frame::data(Bytes::copy_from_slice(&body[..500]))))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    tx.send(Err(std::io::Error::other("the client gives up")))
        .await
        .unwrap();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), call).await;

    let lines = sidecar.wait_audit(2).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        let reason = "client left while its body was read";
        assert_abandoned(line, reason, &[("route", "counted"), ("identity", "gw-1")]);
    }
}
