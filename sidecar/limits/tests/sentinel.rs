//! The shared limiter on a master behind Redis Sentinel (Debian's `redis-server`, in sentinel
//! mode for the sentinels), all started by each test on 127.0.0.1: a master, its replica and
//! three sentinels; several limiters stand for several sidecars.

mod common;

use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use common::{exactly_the_limit, hit_profile, limiter, limiter_with_password};
use portcullis_limits::store::Take;
use portcullis_limits::testing::RedisSentinel;
use portcullis_limits::{Mode, SharedLimiter, Store, Target};
use portcullis_policy::{Fallback, ReplayEntry, SharedReplay};

/// Hits on the profile `name` (limit `limit`) out of `n` asked through `l`; while the store
/// is unavailable, this sidecar's share is a third (three replicas).
async fn admitted(l: &SharedLimiter, name: &str, limit: u32, n: u32) -> u32 {
    let trips = AtomicU32::new(0);
    let share = Fallback::LocalShare([333_334, limit.div_ceil(3), 0]);
    let mut admitted = 0;
    for _ in 0..n {
        admitted += u32::from(hit_profile(l, name, 1_000_000, limit, share, &trips).await.is_ok());
    }
    admitted
}

/// Three sidecars through the sentinels' URL: exactly the limit is admitted, as on one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_behind_sentinel_admit_exactly_the_limit() {
    let set = RedisSentinel::start();
    exactly_the_limit(&set.url()).await;
}

/// The master dies: each sidecar enforces its share locally while the sentinels fail over,
/// then asks them for the new master and counts there again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_the_limiter_counts_on_the_promoted_replica() {
    let mut set = RedisSentinel::start();
    let l = limiter(&set.url());
    assert_eq!(
        admitted(&l, "demo/before", 30, 40).await,
        30,
        "the whole limit: shared counts"
    );
    assert_eq!(l.mode(), Mode::Shared);

    let old = set.kill_master();
    // The first call after the kill finds the connection gone, and the master the sentinels
    // still name refuses connections.
    assert_eq!(
        admitted(&l, "demo/during", 30, 40).await,
        10,
        "a third of 30, counted here"
    );
    assert_eq!(l.mode(), Mode::LocalShare);

    let start = Instant::now();
    let new = set.wait_for_failover(old, Duration::from_secs(30));
    assert_ne!(new, old);
    while l.mode() != Mode::Shared {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "still {:?} {:?} after the kill, the sentinels name {new}",
            l.mode(),
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        admitted(&l, "demo/after", 30, 40).await,
        30,
        "the whole limit again: counted on the new master"
    );
    assert_eq!(l.mode(), Mode::Shared);
    // Signatures are remembered on the new master too, once for every sidecar.
    let other = limiter(&set.url());
    let key = [9u8; 32];
    let entry = ReplayEntry {
        profile: "demo/signed",
        key_id: "gw-1",
        replay_key: &key,
        ttl_secs: 30,
        window_secs: 30,
        budget: 100,
    };
    assert_eq!(l.remember(&entry).await, SharedReplay::Fresh);
    assert_eq!(other.remember(&entry).await, SharedReplay::Seen);
}

/// The master stops answering without closing its connections (a node lost without a word):
/// calls time out, and a timed-out connection is dropped so that the next call asks the
/// sentinels again: the sidecar finds the promoted replica instead of waiting on the silent
/// master until TCP gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_master_is_left_for_the_promoted_replica() {
    let mut set = RedisSentinel::start();
    let l = limiter(&set.url());
    assert_eq!(admitted(&l, "demo/before", 30, 40).await, 30);
    let old = set.freeze_master();
    assert_eq!(
        admitted(&l, "demo/during", 30, 40).await,
        10,
        "a third of 30, counted here"
    );
    assert_eq!(l.mode(), Mode::LocalShare);
    let start = Instant::now();
    let new = set.wait_for_failover(old, Duration::from_secs(30));
    while l.mode() != Mode::Shared {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "still {:?} {:?} after the master stopped, the sentinels name {new}",
            l.mode(),
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(admitted(&l, "demo/after", 30, 40).await, 30);
}

/// One call of the script with `password`, as the sidecar's store makes it.
async fn take_with(url: &str, password: Option<&str>) -> Result<(), String> {
    let store = Store::new(
        &Target::parse(url).unwrap(),
        password.map(str::to_owned),
        Duration::from_millis(500),
    )
    .unwrap();
    let call = Take {
        keys: &["{t}:a"],
        limits: &[10],
        want: 1,
        divisor: 1,
        lead: 0,
        release: (0, 0),
        spans: &[],
    };
    store.take(&call).await.map(|_| ()).map_err(|e| e.to_string())
}

/// Data nodes with a password, sentinels without (the usual setup): the password file's
/// password reaches the master, and the sentinels accept it too. A wrong one is refused
/// without being told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_reaches_the_master_behind_password_less_sentinels() {
    let set = RedisSentinel::start_with_password("s3cret-pw", false);
    let url = set.url();
    take_with(&url, Some("s3cret-pw")).await.unwrap();
    let l = limiter_with_password(&url, Some("s3cret-pw"));
    assert_eq!(admitted(&l, "demo/p", 30, 40).await, 30);
    assert_eq!(l.mode(), Mode::Shared);
    let err = take_with(&url, Some("hunter2")).await.unwrap_err();
    assert!(!err.contains("hunter2"), "{err}");
    let err = take_with(&url, None).await.unwrap_err();
    assert!(err.contains("NOAUTH") || err.contains("uthentication"), "{err}");
}

/// Sentinels that require the same password as the data nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_reaches_sentinels_that_require_it() {
    let set = RedisSentinel::start_with_password("s3cret-pw", true);
    let url = set.url();
    take_with(&url, Some("s3cret-pw")).await.unwrap();
    let err = take_with(&url, Some("hunter2")).await.unwrap_err();
    assert!(!err.contains("hunter2"), "{err}");
}
