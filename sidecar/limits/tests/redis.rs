//! The shared limiter against a real `redis-server` (Debian's package), started by each test
//! on 127.0.0.1: several limiters stand for several sidecars.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{counters, exactly, exactly_the_limit, exactly_through, hit, hit_ids, hit_or, limiter, now};
use portcullis_limits::Mode;
use portcullis_limits::testing::{Redis, RedisCluster};
use portcullis_policy::{CounterId, Fallback, Limiter, QuotaPeriod, ReplayEntry, Scope, SharedReplay, Span};

/// Three sidecars, 12 clients, demand far above the limit: exactly the limit is admitted,
/// whichever sidecar takes the hits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_admit_exactly_the_limit() {
    let redis = Redis::start();
    exactly_the_limit(&redis.url()).await;
}

/// The same against a Redis Cluster of three masters: one decision's keys share a slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_a_redis_cluster_admit_exactly_the_limit() {
    let cluster = RedisCluster::start();
    exactly_the_limit(&cluster.url()).await;
}

/// Far from the limit, steady demand is served from blocks reserved ahead: few requests wait
/// for the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_from_the_limit_requests_do_not_wait_for_the_store() {
    let redis = Redis::start();
    let l = limiter(&redis.url());
    let trips = AtomicU32::new(0);
    let mut admitted = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        for _ in 0..20 {
            admitted += u32::from(hit(&l, 10_000_000, 10_000_000, &trips).await);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let trips = trips.load(Ordering::Relaxed);
    assert!(admitted > 1000, "{admitted}");
    assert!(trips * 20 < admitted, "{trips} round trips for {admitted} hits");
}

/// A refunded hit (the backend answered 404) is not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_are_given_back_to_the_store() {
    let redis = Redis::start();
    let (a, b) = (limiter(&redis.url()), limiter(&redis.url()));
    let trips = AtomicU32::new(0);
    let o = a.counter(CounterId::org());
    let p = a.counter(CounterId::profile("demo/p"));
    for _ in 0..5 {
        let grant = a.take(&[(&o, 1000), (&p, 5)], Fallback::Deny, now()).await.unwrap();
        a.refund(&[&o, &p], &grant);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut admitted = 0;
    for _ in 0..10 {
        admitted += u32::from(hit(&b, 1000, 5, &trips).await);
    }
    assert_eq!(admitted, 5, "the 5 refunded hits were given back");
}

/// Redis stopped: each decision follows its profile's fallback (a local share of limit /
/// replicas, admitted uncounted, or refused as unavailable), the limiter says so, and goes
/// back to the shared counts when Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_store_means_each_profiles_fallback_until_it_is_back() {
    let mut redis = Redis::start();
    let l = limiter(&redis.url());
    let trips = AtomicU32::new(0);
    assert!(hit(&l, 1_000_000, 30, &trips).await);
    redis.stop();
    // The first call after the stop finds out. Three replicas: a third of each limit.
    let share = Fallback::LocalShare([333_334, 10, 0]);
    let mut admitted = 0;
    for _ in 0..40 {
        admitted += u32::from(hit_or(&l, 1_000_000, 30, share, &trips).await.is_ok());
    }
    assert_eq!(l.mode(), Mode::LocalShare);
    assert_eq!(admitted, 10, "a third of 30, counted here");
    for _ in 0..40 {
        assert_eq!(
            hit_or(&l, 1_000_000, 30, Fallback::Allow, &trips).await,
            Ok(()),
            "Allow: uncounted"
        );
    }
    for _ in 0..3 {
        assert_eq!(
            hit_or(&l, 1_000_000, 30, Fallback::Deny, &trips).await,
            Err(true),
            "Deny: refused as unavailable"
        );
    }
    assert_eq!(
        hit_or(&l, 1_000_000, 30, share, &trips).await,
        Err(false),
        "the Allowed hits were not counted against the share, nor did they free any"
    );
    let _back = Redis::start_on(redis.port);
    let deadline = Instant::now() + Duration::from_secs(5);
    while l.mode() != Mode::Shared {
        assert!(Instant::now() < deadline, "still {:?}", l.mode());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut admitted = 0;
    for _ in 0..40 {
        admitted += u32::from(hit(&l, 1_000_000, 30, &trips).await);
    }
    assert_eq!(admitted, 30, "the fresh Redis holds the whole limit");
}

/// A refund that comes after its bucket ended (a slow backend) is given back too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_refunds_are_given_back_to_the_store() {
    let redis = Redis::start();
    let (a, b) = (limiter(&redis.url()), limiter(&redis.url()));
    let trips = AtomicU32::new(0);
    let o = a.counter(CounterId::org());
    let p = a.counter(CounterId::profile("demo/p"));
    let mut grants = Vec::new();
    for _ in 0..5 {
        grants.push(a.take(&[(&o, 1000), (&p, 5)], Fallback::Deny, now()).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    for grant in &grants {
        a.refund(&[&o, &p], grant);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut admitted = 0;
    for _ in 0..10 {
        admitted += u32::from(hit(&b, 1000, 5, &trips).await);
    }
    assert_eq!(admitted, 5, "the 5 refunded hits were given back");
}

fn entry<'a>(replay_key: &'a [u8; 32], budget: usize) -> ReplayEntry<'a> {
    ReplayEntry {
        profile: "demo/signed",
        key_id: "gw-1",
        replay_key,
        ttl_secs: 2,
        window_secs: 20,
        budget,
    }
}

/// A signature remembered through one sidecar is a replay for the others; it is forgotten
/// once its window has passed; one key holds at most its budget; a stopped store says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_are_remembered_once_for_every_replica() {
    let mut redis = Redis::start();
    let sidecars = [limiter(&redis.url()), limiter(&redis.url()), limiter(&redis.url())];
    assert!(sidecars.iter().all(|l| l.shares_replays()));
    let key = [7u8; 32];
    assert_eq!(sidecars[0].remember(&entry(&key, 100)).await, SharedReplay::Fresh);
    for l in &sidecars {
        assert_eq!(l.remember(&entry(&key, 100)).await, SharedReplay::Seen);
    }
    let other_profile = ReplayEntry {
        profile: "demo/other",
        ..entry(&key, 100)
    };
    assert_eq!(sidecars[1].remember(&other_profile).await, SharedReplay::Fresh);
    // Its time to live (2 s) passed: forgotten (the signature would be stale by now).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(sidecars[2].remember(&entry(&key, 100)).await, SharedReplay::Fresh);
    // A budget of 3 live signatures per key (two recorded already under this key).
    let keys: Vec<[u8; 32]> = (0..4u8).map(|i| [i + 100; 32]).collect();
    let verdicts: Vec<SharedReplay> = {
        let mut v = Vec::new();
        for k in &keys {
            v.push(sidecars[0].remember(&entry(k, 3)).await);
        }
        v
    };
    assert_eq!(
        verdicts,
        [
            SharedReplay::Fresh,
            SharedReplay::Full,
            SharedReplay::Full,
            SharedReplay::Full
        ],
        "the key already held 2 of 3"
    );
    redis.stop();
    assert_eq!(
        sidecars[0].remember(&entry(&[9; 32], 100)).await,
        SharedReplay::Unavailable
    );
    assert_eq!(sidecars[0].mode(), Mode::Shared, "one failure does not switch the mode");
    assert_eq!(
        sidecars[0].remember(&entry(&[10; 32], 100)).await,
        SharedReplay::Unavailable
    );
    assert_eq!(sidecars[0].mode(), Mode::LocalShare, "the second in a row does");
}

/// The same on a Redis Cluster: a signature's keys share one slot (its key's hash tag).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_are_remembered_once_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let sidecars = [limiter(&cluster.url()), limiter(&cluster.url())];
    for i in 0..20u8 {
        let key = [i; 32];
        let profile = format!("demo/p{i}");
        let e = ReplayEntry {
            profile: &profile,
            ..entry(&key, 100)
        };
        assert_eq!(sidecars[usize::from(i % 2)].remember(&e).await, SharedReplay::Fresh);
        assert_eq!(sidecars[usize::from(1 - i % 2)].remember(&e).await, SharedReplay::Seen);
    }
}

fn consumer(name: &'static str) -> CounterId<'static> {
    CounterId {
        scope: Scope::Consumer,
        name: "demo/partners",
        consumer: Some(name),
        span: Span::Minute,
    }
}

fn daily(consumer: Option<&'static str>) -> CounterId<'static> {
    CounterId {
        scope: Scope::Quota,
        name: "demo/metered",
        consumer,
        span: Span::Period(QuotaPeriod::Day),
    }
}

/// `rateLimit.per: Consumer` across three sidecars: each consumer gets exactly the limit,
/// apart from the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_consumer_gets_exactly_its_limit_across_replicas() {
    let redis = Redis::start();
    let sidecars: Vec<_> = (0..3).map(|_| limiter(&redis.url())).collect();
    for name in ["alice", "bob"] {
        let ids = [(CounterId::org(), 1_000_000), (consumer(name), 200)];
        exactly_through(&sidecars, &ids, 200).await;
    }
    assert!(sidecars.iter().all(|l| l.consumers() == 2));
}

/// A daily quota across three sidecars: exactly the quota is admitted; a hit given back
/// (404) is admitted again; the refusal says when the day ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_quota_admits_exactly_its_requests_across_replicas() {
    let redis = Redis::start();
    let ids = [(CounterId::org(), 1_000_000), (daily(None), 700)];
    exactly(&redis.url(), &ids, 700).await;
    let l = limiter(&redis.url());
    let c = counters(&l, &ids);
    let hits = [(&c[0], 1_000_000), (&c[1], 700)];
    let refusal = l.take(&hits, Fallback::Deny, now()).await.unwrap_err();
    assert_eq!(refusal.index, 1);
    let to_midnight = 86_400 - (now().unix_ms / 1000) % 86_400;
    assert!(
        refusal.info.reset_secs.abs_diff(to_midnight) <= 1,
        "{refusal:?}, {to_midnight} s to midnight UTC"
    );
    // Another profile's quota, and another consumer's, are their own.
    let trips = AtomicU32::new(0);
    let alice = [(CounterId::org(), 1_000_000), (daily(Some("alice")), 1)];
    assert_eq!(hit_ids(&l, &alice, Fallback::Deny, &trips).await, Ok(()));
    assert_eq!(hit_ids(&l, &alice, Fallback::Deny, &trips).await, Err(false));
}

/// A hit refunded (the backend answered 404) goes back to the quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_are_given_back_to_a_quota() {
    let redis = Redis::start();
    let (a, b) = (limiter(&redis.url()), limiter(&redis.url()));
    let ids = [(daily(None), 5)];
    let c = counters(&a, &ids);
    for _ in 0..5 {
        let grant = a.take(&[(&c[0], 5)], Fallback::Deny, now()).await.unwrap();
        a.refund(&[&c[0]], &grant);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let trips = AtomicU32::new(0);
    let mut admitted = 0;
    for _ in 0..10 {
        admitted += u32::from(hit_ids(&b, &ids, Fallback::Deny, &trips).await.is_ok());
    }
    assert_eq!(admitted, 5, "the 5 refunded hits were given back");
}

/// On a Redis Cluster: the org allowance, a consumer's per-minute limit and the consumer's
/// daily quota in one decision (one slot), the tightest holding exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumers_limit_and_quota_hold_together_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let ids = [
        (CounterId::org(), 1_000_000),
        (consumer("alice"), 1000),
        (daily(Some("alice")), 300),
    ];
    exactly(&cluster.url(), &ids, 300).await;
    let ids = [
        (CounterId::org(), 1_000_000),
        (consumer("bob"), 250),
        (daily(Some("bob")), 1000),
    ];
    exactly(&cluster.url(), &ids, 250).await;
}

/// While the store is unavailable a quota is counted here against its share (LocalShare).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_store_means_a_local_share_of_the_quota() {
    let mut redis = Redis::start();
    let l = limiter(&redis.url());
    let trips = AtomicU32::new(0);
    let ids = [(daily(None), 30)];
    assert_eq!(
        hit_ids(&l, &ids, Fallback::LocalShare([10, 0, 0]), &trips).await,
        Ok(())
    );
    redis.stop();
    let mut admitted = 0;
    for _ in 0..40 {
        admitted += u32::from(
            hit_ids(&l, &ids, Fallback::LocalShare([10, 0, 0]), &trips)
                .await
                .is_ok(),
        );
    }
    assert_eq!(admitted, 10, "a third of 30, counted here");
}

/// Calls over a limit are refused from the store's last answer for the rest of its 100 ms
/// bucket: a flood costs the store about one call per bucket, not one per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_over_a_limit_costs_the_store_one_call_per_bucket() {
    use portcullis_limits::{Options, SharedLimiter, Store, Target};
    use portcullis_policy::InMemoryLimiter;
    use std::sync::Arc;
    let redis = Redis::start();
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let store = Store::new(&Target::parse(&redis.url()).unwrap(), None, Duration::from_millis(200)).unwrap();
    let l = Arc::new(
        SharedLimiter::new(InMemoryLimiter::new(), Some(store), Options::default()).on_round_trip(move |_, _| {
            counted.fetch_add(1, Ordering::Relaxed);
        }),
    );
    tokio::spawn(Arc::clone(&l).run());
    let trips = AtomicU32::new(0);
    for _ in 0..5 {
        assert!(hit(&l, 1_000_000, 5, &trips).await);
    }
    let before = calls.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut refused = 0;
    while start.elapsed() < Duration::from_millis(500) {
        refused += u32::from(!hit(&l, 1_000_000, 5, &trips).await);
    }
    let made = calls.load(Ordering::Relaxed) - before;
    assert!(refused > 100, "{refused}");
    assert!(made <= 15, "{made} store calls for {refused} refusals in 500 ms");
}
