//! What the integration tests share: limiters standing for sidecars, and a request's hits.
#![allow(dead_code)] // each test file uses some of it

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use portcullis_limits::{Mode, Options, SharedLimiter, Store, Target};
use portcullis_policy::{Fallback, InMemoryLimiter, Limiter, Scope};

/// A sidecar's limiter on the store at `url`, its background task running.
pub fn limiter(url: &str) -> Arc<SharedLimiter> {
    limiter_with_password(url, None)
}

/// The same with the store's password (`--limits-store-password-file`).
pub fn limiter_with_password(url: &str, password: Option<&str>) -> Arc<SharedLimiter> {
    let store = Store::new(
        &Target::parse(url).unwrap(),
        password.map(str::to_owned),
        Duration::from_millis(200),
    )
    .unwrap();
    let l = Arc::new(SharedLimiter::new(
        InMemoryLimiter::new(),
        Some(store),
        Options::default(),
    ));
    tokio::spawn(Arc::clone(&l).run());
    l
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// One hit on (org, profile) through `l`, as the request path takes it: from a block, or
/// one round trip. Counts the round trips in `trips`. While the store is unavailable, the
/// whole limits are this process's share.
pub async fn hit(l: &SharedLimiter, org: u32, profile: u32, trips: &AtomicU32) -> bool {
    hit_or(l, org, profile, Fallback::LocalShare([org, profile]), trips)
        .await
        .is_ok()
}

/// [`hit`], with `fallback` while the store is unavailable: whether admitted, or refused
/// for the store (`Err(true)`) or a limit (`Err(false)`).
pub async fn hit_or(
    l: &SharedLimiter,
    org: u32,
    profile: u32,
    fallback: Fallback,
    trips: &AtomicU32,
) -> Result<(), bool> {
    hit_profile(l, "demo/p", org, profile, fallback, trips).await
}

/// [`hit_or`] on the profile `name`.
pub async fn hit_profile(
    l: &SharedLimiter,
    name: &str,
    org: u32,
    profile: u32,
    fallback: Fallback,
    trips: &AtomicU32,
) -> Result<(), bool> {
    let o = l.counter(Scope::Org, "");
    let p = l.counter(Scope::Profile, name);
    let hits = [(&o, org), (&p, profile)];
    let taken = match l.try_acquire(&hits, now_ms()) {
        Some(r) => r,
        None => {
            trips.fetch_add(1, Ordering::Relaxed);
            l.take(&hits, fallback, now_ms()).await
        }
    };
    taken.map(drop).map_err(|r| r.store_unavailable)
}

/// Three sidecars on the store at `url`, 12 clients, demand far above the limit: exactly the
/// limit is admitted, whichever sidecar takes the hits.
pub async fn exactly_the_limit(url: &str) {
    let sidecars: Vec<_> = (0..3).map(|_| limiter(url)).collect();
    let admitted = Arc::new(AtomicU32::new(0));
    let trips = Arc::new(AtomicU32::new(0));
    let mut clients = Vec::new();
    for i in 0..12 {
        let l = Arc::clone(&sidecars[i % 3]);
        let (admitted, trips) = (Arc::clone(&admitted), Arc::clone(&trips));
        clients.push(tokio::spawn(async move {
            for _ in 0..300 {
                if hit(&l, 1_000_000, 1000, &trips).await {
                    admitted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    // Blocks reserved ahead and not used are given back within a few buckets; a last round
    // of demand then takes exactly what is left.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for l in &sidecars {
        for _ in 0..50 {
            if hit(l, 1_000_000, 1000, &trips).await {
                admitted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    assert_eq!(admitted.load(Ordering::Relaxed), 1000, "3,750 asked, limit 1,000");
    for l in &sidecars {
        assert_eq!(l.mode(), Mode::Shared);
    }
}
