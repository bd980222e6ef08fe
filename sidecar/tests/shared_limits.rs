//! Rate limits shared by three sidecar processes through a real `redis-server` (started by
//! the test on 127.0.0.1): the hits admitted across all three equal the limit exactly, for a
//! profile limit and the org allowance, 404s from the app are not counted, and a stopped
//! store leaves each sidecar its share of every limit until the store is back. The same
//! through Redis Sentinel, with the data nodes' password in a file.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use portcullis_limits::testing::{Redis, RedisSentinel};
use serde_json::json;

/// Three sidecars sharing `redis`, each serving `/status/` (profile limit `profile`) and `/q/`
/// (unlimited profile) under an org allowance of `org`.
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
    loaded(
        "g1",
        json!({
            "orgAllowance": org,
            "profiles": [
                {"name": "limited", "auth": {"type": "Anonymous"}, "rateLimitPerMinute": profile},
                {"name": "open", "auth": {"type": "Anonymous"}},
            ],
            "routes": [
                {"name": "p", "pathPrefix": "/status", "profiles": ["limited"], "backend": {"type": "Local", "port": app}},
                {"name": "q", "pathPrefix": "/q", "profiles": ["open"], "backend": {"type": "Local", "port": app}},
            ],
        }),
        json!({}),
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
    let urls: Arc<Vec<String>> = Arc::new(sidecars.iter().map(|s| s.url(path)).collect());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..12 {
        let (urls, next) = (Arc::clone(&urls), Arc::clone(&next));
        clients.push(tokio::spawn(async move {
            let (mut ok, mut limited) = (0, 0);
            let admitted = if urls[0].ends_with("/status/404") { 404 } else { 200 };
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return (ok, limited);
                }
                match get(&urls[i % urls.len()]).await.map(|r| r.0.as_u16()) {
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
    assert_eq!(drive(&sidecars, "/status/200", 900).await, (300, 600));
    // The org allowance holds 200 more (500 - 300), taken through the unlimited profile.
    let (ok, limited) = drive(&sidecars, "/q/x", 600).await;
    assert_eq!((ok, limited), (200, 400), "the org allowance across the three sidecars");
    for s in &sidecars {
        let metrics = s.metrics().await;
        assert!(
            metrics.contains("portcullis_limits_store_mode{mode=\"shared\"} 1"),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn a_stopped_store_leaves_each_sidecar_its_share_until_it_is_back() {
    let mut redis = Redis::start();
    let backend = Backend::start().await;
    let (sidecars, _dir) = three_sidecars(&redis, backend.port(), 30, 1_000_000).await;
    assert_eq!(drive(&sidecars[..1], "/status/200", 1).await, (1, 0));
    redis.stop();
    // The configuration names no replica count: one replica, the whole limit for each.
    // Each sidecar learns on its first call that the store is gone.
    let (ok, _) = drive(&sidecars[..1], "/status/200", 40).await;
    assert_eq!(ok, 30, "the local share of a sidecar alone: the whole limit");
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
    assert_eq!(drive(&sidecars, "/status/200", 60).await, (30, 30));
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
    assert_eq!(drive(&sidecars, "/status/200", 900).await, (300, 600));
    for s in &sidecars {
        let metrics = s.metrics().await;
        assert!(
            metrics.contains("portcullis_limits_store_mode{mode=\"shared\"} 1"),
            "{metrics}"
        );
        assert!(!s.log().contains("s3cret-pw"), "the password in the log");
    }
}
