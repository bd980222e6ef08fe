//! The shared limiter against a real `redis-server` (Debian's package), started by each test
//! on 127.0.0.1: several limiters stand for several sidecars.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{exactly_the_limit, hit, limiter, now_ms};
use portcullis_limits::Mode;
use portcullis_limits::testing::{Redis, RedisCluster};
use portcullis_policy::{Limiter, Scope};

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
    let o = a.counter(Scope::Org, "");
    let p = a.counter(Scope::Profile, "demo/p");
    for _ in 0..5 {
        let grant = a.take(&[(&o, 1000), (&p, 5)], now_ms()).await.unwrap();
        a.refund(&[&o, &p], &grant);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut admitted = 0;
    for _ in 0..10 {
        admitted += u32::from(hit(&b, 1000, 5, &trips).await);
    }
    assert_eq!(admitted, 5, "the 5 refunded hits were given back");
}

/// Redis stopped: each sidecar enforces its share (limit / replicas) locally, says so, and
/// goes back to the shared counts when Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_store_means_a_local_share_until_it_is_back() {
    let mut redis = Redis::start();
    let l = limiter(&redis.url());
    l.set_replicas(3);
    let trips = AtomicU32::new(0);
    assert!(hit(&l, 1_000_000, 30, &trips).await);
    redis.stop();
    // The first call after the stop finds out.
    let mut admitted = 0;
    for _ in 0..40 {
        admitted += u32::from(hit(&l, 1_000_000, 30, &trips).await);
    }
    assert_eq!(l.mode(), Mode::LocalShare);
    assert_eq!(admitted, 10, "a third of 30, counted here");
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
    let o = a.counter(Scope::Org, "");
    let p = a.counter(Scope::Profile, "demo/p");
    let mut grants = Vec::new();
    for _ in 0..5 {
        grants.push(a.take(&[(&o, 1000), (&p, 5)], now_ms()).await.unwrap());
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
