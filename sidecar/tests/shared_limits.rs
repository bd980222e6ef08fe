//! Rate limits shared by three sidecar processes through a real `redis-server` (started by
//! the test on 127.0.0.1): the hits admitted across all three equal the limit exactly, for a
//! profile limit and the org allowance, 404s from the app are not counted; a signed request
//! admitted by one sidecar is a replay for the others; a stopped store has each profile do
//! what its `onStoreUnavailable` says until the store is back. The limits hold the same
//! through Redis Sentinel, with the data nodes' password in a file. Per-consumer limits and a
//! daily quota hold exactly too, on one Redis and on a Redis Cluster. A client that leaves
//! while a silent store is asked is audited all the same.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use portcullis_limits::testing::{Redis, RedisCluster, RedisSentinel};
use portcullis_signatures::{Algorithm, Key, Message, rfc9421};
use serde_json::json;

const SECRET: &str = "a shared secret for gw-1";

/// Three sidecars sharing `redis`, each serving, under an org allowance of `org`:
/// - `/status/`: profile limit `profile` (`onStoreUnavailable` LocalShare, 3 sidecars);
/// - `/q/`: no profile limit;
/// - `/allow/`: limit 5, `Allow`; `/deny/`: limit 1000, `Deny`;
/// - `/signed/`: HMAC-signed calls (replays refused cluster-wide, fail closed without the
///   store); `/signed-local/`: the same, remembered locally while the store is unavailable.
async fn three_sidecars(redis: &Redis, app: u16, profile: u32, org: u32) -> (Vec<Sidecar>, tempfile::TempDir) {
    let url = redis.url();
    three_sidecars_on(
        &["--limits-store", url.as_str(), "--limits-store-timeout", "200ms"],
        app,
        profile,
        org,
    )
    .await
}

/// The same with the store flags `args`.
async fn three_sidecars_on(args: &[&str], app: u16, profile: u32, org: u32) -> (Vec<Sidecar>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let local = |name: &str, path: &str, profile: &str| json!({"name": name, "pathPrefix": path, "profiles": [profile], "backend": {"type": "Local", "port": app}});
    let signed = |name: &str, fallback: &str| {
        json!({"name": name, "auth": {"type": "HttpSignature", "standard": "RFC9421",
            "algorithms": ["hmac-sha256"], "maxAgeSeconds": 300, "onStoreUnavailable": fallback}})
    };
    loaded(
        "g1",
        json!({
            "orgAllowance": org,
            "replicas": 3,
            "profiles": [
                {"name": "limited", "auth": {"type": "Anonymous"}, "rateLimitPerMinute": profile, "replicas": 3},
                {"name": "open", "auth": {"type": "Anonymous"}},
                {"name": "allow", "auth": {"type": "Anonymous"}, "rateLimitPerMinute": 5,
                    "onStoreUnavailable": "Allow", "replicas": 3},
                {"name": "deny", "auth": {"type": "Anonymous"}, "rateLimitPerMinute": 1000,
                    "onStoreUnavailable": "Deny", "replicas": 3},
                signed("signed", "Deny"),
                signed("signed-local", "Local"),
            ],
            "routes": [
                local("p", "/status", "limited"),
                local("q", "/q", "open"),
                local("a", "/allow", "allow"),
                local("d", "/deny", "deny"),
                local("s", "/signed", "signed"),
                local("sl", "/signed-local", "signed-local"),
            ],
        }),
        json!({"profiles": {
            "signed": {"signatureKeys": {"gw-1": SECRET}},
            "signed-local": {"signatureKeys": {"gw-1": SECRET}},
        }}),
    )
    .write_dir(dir.path())
    .unwrap();
    let mut sidecars = Vec::new();
    for _ in 0..3 {
        sidecars.push(Sidecar::start_with(dir.path(), args).await);
    }
    (sidecars, dir)
}

/// `n` GETs of `path` spread over the sidecars by 12 concurrent clients: (admitted, 429s),
/// admitted being 200 (or 404 for `/status/404`, the app's own).
async fn drive(sidecars: &[Sidecar], path: &str, n: usize) -> (usize, usize) {
    drive_as(sidecars, path, None, n).await
}

/// [`drive_as`], then, once the blocks of hits the sidecars reserved ahead and did not use
/// have been given back (about 200 ms), `more` calls again: the admitted total is what the
/// limit let through for a demand that went on (a hit held in a block when the demand stopped
/// is given back, not lost).
async fn drive_on(
    sidecars: &[Sidecar],
    path: &str,
    host: Option<&'static str>,
    n: usize,
    more: usize,
) -> (usize, usize) {
    let (ok, limited) = drive_as(sidecars, path, host, n).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok2, limited2) = drive_as(sidecars, path, host, more).await;
    (ok + ok2, limited + limited2)
}

/// [`drive`], with the `Host` header `host`.
async fn drive_as(sidecars: &[Sidecar], path: &str, host: Option<&'static str>, n: usize) -> (usize, usize) {
    let urls: Arc<Vec<String>> = Arc::new(sidecars.iter().map(|s| s.url(path)).collect());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..12 {
        let (urls, next) = (Arc::clone(&urls), Arc::clone(&next));
        clients.push(tokio::spawn(async move {
            let (mut ok, mut limited) = (0, 0);
            let admitted = if urls[0].contains("/status/404") { 404 } else { 200 };
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return (ok, limited);
                }
                let url = &urls[i % urls.len()];
                let answer = match host {
                    None => get(url).await.map(|r| r.0.as_u16()),
                    Some(host) => Some(get_with(url, &[("host", host)]).await.0.as_u16()),
                };
                match answer {
                    Some(s) if s == admitted => ok += 1,
                    Some(429) => limited += 1,
                    other => panic!("unexpected answer {other:?}"),
                }
            }
        }));
    }
    let mut total = (0, 0);
    for c in clients {
        let (ok, limited) = c.await.unwrap();
        total.0 += ok;
        total.1 += limited;
    }
    total
}

#[tokio::test]
async fn three_sidecars_admit_exactly_the_profile_limit_and_the_org_allowance() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let (sidecars, _dir) = three_sidecars(&redis, backend.port(), 300, 500).await;

    // 404s from the app are given back: they take nothing from either limit.
    assert_eq!(drive(&sidecars, "/status/404", 150).await, (150, 0));
    // The profile limit: 300 of 900, across the three.
    assert_eq!(drive_on(&sidecars, "/status/200", None, 870, 30).await, (300, 600));
    // The org allowance holds 200 more (500 - 300), taken through the unlimited profile.
    let (ok, limited) = drive_on(&sidecars, "/q/x", None, 570, 30).await;
    assert_eq!((ok, limited), (200, 400), "the org allowance across the three sidecars");
    // A refusal for a limit names who was refused.
    assert!(audited(&sidecars[0], "org allowance exceeded").await);
    let lines = sidecars[0].audit_lines();
    let refused: Vec<_> = lines
        .iter()
        .filter(|l| l["reason"] == "org allowance exceeded")
        .collect();
    assert!(refused.iter().all(|l| l["identity"] == "anonymous"), "{refused:?}");
    for s in &sidecars {
        let metrics = s.metrics().await;
        assert!(
            metrics.contains("portcullis_limits_store_mode{mode=\"shared\"} 1"),
            "{metrics}"
        );
    }
}

/// A GET of `path` signed (RFC 9421, HMAC) over its method and path only, so that the same
/// signature is valid on every sidecar: the headers to send.
fn signed_get(path: &str) -> http::HeaderMap {
    let uri: http::Uri = format!("http://127.0.0.1{path}").parse().unwrap();
    let mut headers = http::HeaderMap::new();
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let key = Key::from_secret(SECRET.as_bytes()).unwrap();
    let params = rfc9421::SignParams::new("sig1", "gw-1", Algorithm::HmacSha256, created, &["@method", "@path"]);
    let signed = rfc9421::sign(
        &Message::from_parts(&http::Method::GET, &uri, &headers, "http"),
        &key,
        &params,
    )
    .unwrap();
    signed.apply(&mut headers).unwrap();
    headers
}

/// `headers` sent with a GET of `path` to `sidecar`: the status and the audit reason's
/// error body.
async fn send_signed(sidecar: &Sidecar, path: &str, headers: &http::HeaderMap) -> StatusCode {
    let mut req = Request::get(sidecar.url(path));
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let (status, _, _) = send(&client(), req.body(Full::default()).unwrap())
        .await
        .expect("sidecar answers");
    status
}

/// A captured signed request is admitted once in the cluster, not once per sidecar.
#[tokio::test]
async fn a_signed_request_admitted_by_one_sidecar_is_a_replay_for_the_others() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let (sidecars, _dir) = three_sidecars(&redis, backend.port(), 300, 1_000_000).await;
    for (i, path) in ["/signed/a", "/signed/b", "/signed/c"].into_iter().enumerate() {
        let captured = signed_get(path);
        assert_eq!(send_signed(&sidecars[i], path, &captured).await, 200);
        for (j, other) in sidecars.iter().enumerate() {
            assert_eq!(
                send_signed(other, path, &captured).await,
                401,
                "sidecar {j} admitted a replay of a call sidecar {i} admitted"
            );
        }
    }
    for s in &sidecars {
        assert!(audited(s, "signature replayed").await);
        // The refusal names who signed.
        assert!(
            s.audit_lines()
                .iter()
                .filter(|l| l["reason"] == "signature replayed")
                .all(|l| l["identity"] == "gw-1")
        );
    }
}

/// Whether `sidecar` wrote an audit line with `reason` (within 2 s: the audit log is
/// written in the background).
async fn audited(sidecar: &Sidecar, reason: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if sidecar.audit_lines().iter().any(|l| l["reason"] == reason) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_stopped_store_means_each_profiles_fallback_until_it_is_back() {
    let mut redis = Redis::start();
    let backend = Backend::start().await;
    let (sidecars, _dir) = three_sidecars(&redis, backend.port(), 30, 1_000_000).await;
    assert_eq!(drive(&sidecars[..1], "/status/200", 1).await, (1, 0));
    let before = signed_get("/signed-local/x");
    assert_eq!(send_signed(&sidecars[0], "/signed-local/x", &before).await, 200);
    redis.stop();
    // LocalShare: the configuration counts 3 sidecars for the profile, so each enforces a
    // third of 30. Each sidecar learns on its first call that the store is gone.
    let (ok, _) = drive(&sidecars[..1], "/status/200", 40).await;
    assert_eq!(ok, 10, "the local share of one sidecar of three");
    // Allow: admitted without counting, far beyond the limit of 5.
    assert_eq!(drive(&sidecars[..1], "/allow/200", 20).await, (20, 0));
    let (status, headers, _) = get(&sidecars[0].url("/allow/200")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers.get("ratelimit-remaining").is_none(),
        "uncounted: no budget is advertised: {headers:?}"
    );
    // Deny: refused with 503 and Retry-After.
    let (status, headers, _) = get(&sidecars[0].url("/deny/200")).await.unwrap();
    assert_eq!(
        (status, headers.get("retry-after").map(|v| v.to_str().unwrap())),
        (StatusCode::SERVICE_UNAVAILABLE, Some("1"))
    );
    // Signed calls: refused (their replay check needs the store), unless the profile says
    // Local: then remembered by this sidecar (a replay to it is refused, not to the others).
    let fresh = signed_get("/signed/y");
    assert_eq!(send_signed(&sidecars[0], "/signed/y", &fresh).await, 503);
    let fresh = signed_get("/signed-local/y");
    assert_eq!(send_signed(&sidecars[0], "/signed-local/y", &fresh).await, 200);
    assert_eq!(send_signed(&sidecars[0], "/signed-local/y", &fresh).await, 401);
    assert!(
        audited(
            &sidecars[0],
            "limits store unavailable (the profile refuses calls then)"
        )
        .await
    );
    assert!(audited(&sidecars[0], "replay store unavailable (signed calls refused)").await);
    let metrics = sidecars[0].metrics().await;
    assert!(
        metrics.contains("portcullis_limits_store_mode{mode=\"local_share\"} 1"),
        "{metrics}"
    );
    assert!(sidecars[0].log().contains("limits store unavailable"));

    let _back = Redis::start_on(redis.port);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = sidecars[0].metrics().await;
        if metrics.contains("portcullis_limits_store_mode{mode=\"shared\"} 1") {
            break;
        }
        assert!(Instant::now() < deadline, "not back on the shared store: {metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A fresh store: the whole limit again, across the three.
    assert_eq!(drive_on(&sidecars, "/status/200", None, 50, 10).await, (30, 30));
    assert_eq!(drive_on(&sidecars, "/allow/200", None, 8, 2).await, (5, 5));
    assert_eq!(drive(&sidecars, "/deny/200", 10).await, (10, 0));
    let fresh = signed_get("/signed/z");
    assert_eq!(send_signed(&sidecars[1], "/signed/z", &fresh).await, 200);
    assert_eq!(send_signed(&sidecars[2], "/signed/z", &fresh).await, 401);
}

/// Behind Redis Sentinel, the password from `--limits-store-password-file` (a Secret's file,
/// with its trailing newline): the three sidecars admit exactly the limit, counted on the
/// master the sentinels name.
#[tokio::test]
async fn three_sidecars_behind_sentinel_with_a_password_file_admit_exactly_the_limit() {
    let set = RedisSentinel::start_with_password("s3cret-pw", false);
    let backend = Backend::start().await;
    let secret = tempfile::tempdir().unwrap();
    let password = secret.path().join("password");
    std::fs::write(&password, "s3cret-pw\n").unwrap();
    let url = set.url();
    let args = [
        "--limits-store",
        url.as_str(),
        "--limits-store-password-file",
        password.to_str().unwrap(),
        "--limits-store-timeout",
        "200ms",
    ];
    let (sidecars, _dir) = three_sidecars_on(&args, backend.port(), 300, 1_000_000).await;
    assert_eq!(drive_on(&sidecars, "/status/200", None, 870, 30).await, (300, 600));
    for s in &sidecars {
        let metrics = s.metrics().await;
        assert!(
            metrics.contains("portcullis_limits_store_mode{mode=\"shared\"} 1"),
            "{metrics}"
        );
        assert!(!s.log().contains("s3cret-pw"), "the password in the log");
    }
}

/// A per-consumer limit (`rateLimit.per: Consumer`, API keys) and a daily quota, through three
/// sidecars on one Redis: each key gets exactly its limit, the quota admits exactly its
/// requests, the app's 404s are given back, and the refusals say which limit and when it
/// resets. A sidecar without the store refuses the configuration (quotas need the store).
#[tokio::test]
async fn three_sidecars_hold_a_per_consumer_limit_and_a_daily_quota_exactly() {
    let redis = Redis::start();
    per_consumer_and_quota(&redis.url()).await;
}

/// The same on a Redis Cluster of three masters (`redis-cluster://`).
#[tokio::test]
async fn three_sidecars_on_a_redis_cluster_hold_a_per_consumer_limit_and_a_daily_quota_exactly() {
    let cluster = RedisCluster::start();
    per_consumer_and_quota(&cluster.url()).await;
}

async fn per_consumer_and_quota(url: &str) {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = backend.port();
    loaded(
        "g1",
        json!({
            "profiles": [
                {"name": "partners", "auth": {"type": "ApiKey", "keyParam": "apikey"},
                    "rateLimitPerMinute": 40, "rateLimitPer": "Consumer", "replicas": 3},
                {"name": "metered", "auth": {"type": "Anonymous"},
                    "quota": {"requests": 120, "period": "Day"}, "replicas": 3},
            ],
            "routes": [
                {"name": "c", "pathPrefix": "/status", "profiles": ["partners"],
                    "backend": {"type": "Local", "port": app}},
                {"name": "m", "hosts": ["metered.test"], "pathPrefix": "/status", "profiles": ["metered"],
                    "backend": {"type": "Local", "port": app}},
            ],
        }),
        json!({"profiles": {"partners": {"apiKeys": {"k1": "s1", "k2": "s2"}}}}),
    )
    .write_dir(dir.path())
    .unwrap();
    let mut sidecars = Vec::new();
    for _ in 0..3 {
        let args = ["--limits-store", url, "--limits-store-timeout", "200ms"];
        sidecars.push(Sidecar::start_with(dir.path(), &args).await);
    }

    // Each consumer its own 40, across the three; the app's 404s take nothing.
    assert_eq!(drive(&sidecars, "/status/404?apikey=k1", 60).await, (60, 0));
    assert_eq!(
        drive_on(&sidecars, "/status/200?apikey=k1", None, 120, 30).await,
        (40, 110)
    );
    assert_eq!(
        drive_on(&sidecars, "/status/200?apikey=k2", None, 120, 30).await,
        (40, 110)
    );
    assert!(audited(&sidecars[0], "consumer rate limit exceeded").await);
    let (status, headers, _) = get_with(&sidecars[2].url("/status/200?apikey=k2"), &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["ratelimit-limit"], "40");

    // The daily quota: 120 across the three, 404s given back.
    let host = Some("metered.test");
    assert_eq!(drive_as(&sidecars, "/status/404", host, 60).await, (60, 0));
    assert_eq!(drive_on(&sidecars, "/status/200", host, 270, 30).await, (120, 180));
    let (status, headers, _) = get_with(&sidecars[1].url("/status/200"), &[("host", "metered.test")]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["ratelimit-limit"], "120");
    assert_eq!(headers["ratelimit-remaining"], "0");
    let reset: u64 = headers["ratelimit-reset"].to_str().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let to_midnight = 86_400 - now % 86_400;
    assert!(
        reset.abs_diff(to_midnight) <= 2,
        "reset {reset} s, midnight UTC in {to_midnight} s"
    );
    assert!(audited(&sidecars[1], "quota exceeded").await);
    let line = sidecars[1]
        .audit_lines()
        .into_iter()
        .find(|l| l["reason"] == "quota exceeded")
        .unwrap();
    assert_eq!(line["status"], 429, "{line}");

    // Without the store, a quota is refused when the configuration loads: nothing is served.
    let alone = Sidecar::start_with(dir.path(), &[]).await;
    let (status, _, _) = get_with(&alone.url("/status/200"), &[("host", "metered.test")]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        alone
            .log()
            .contains("quota needs a shared limits store (--limits-store)"),
        "{}",
        alone.log()
    );
}

/// A client that leaves while the shared store is asked about its limits (a store that
/// never answers, up to the store timeout) is audited all the same: its hit may count.
#[tokio::test]
async fn a_client_that_leaves_while_the_store_is_asked_is_audited() {
    // A "store" that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            conns.push(conn);
        }
    });
    let backend = Backend::start().await;
    let args = ["--limits-store", url.as_str(), "--limits-store-timeout", "5s"];
    let (sidecars, _dir) = three_sidecars_on(&args, backend.port(), 30, 1_000_000).await;
    let sidecar = &sidecars[0];
    let head = b"GET /status/200 HTTP/1.1\r\nhost: x\r\n\r\n";
    send_then_leave(sidecar.inbound, head, Duration::from_millis(300)).await;
    let reason = "client left while its limits were checked";
    assert!(audited(sidecar, reason).await, "{:?}", sidecar.audit_lines());
    let line = sidecar
        .audit_lines()
        .into_iter()
        .find(|l| l["reason"] == reason)
        .unwrap();
    assert_abandoned(&line, reason, &[("route", "p"), ("profile", "limited")]);
    held.abort();
}
