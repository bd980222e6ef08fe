//! What the integration tests share: limiters standing for sidecars, and a request's hits.
#![allow(dead_code)] // each test file uses some of it

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use portcullis_limits::{Counter, Mode, Options, SharedLimiter, Store, Target};
use portcullis_policy::{CounterId, Fallback, InMemoryLimiter, Limiter, Now, Refused};

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

/// The wall clock, for both of the engine's clocks.
pub fn now() -> Now {
    now_ms().into()
}

/// One hit on (org, profile) through `l`, as the request path takes it: from a block, or
/// one round trip. Counts the round trips in `trips`. While the store is unavailable, the
/// whole limits are this process's share.
pub async fn hit(l: &SharedLimiter, org: u32, profile: u32, trips: &AtomicU32) -> bool {
    hit_or(l, org, profile, Fallback::LocalShare([org, profile, 0]), trips)
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
    let ids = [(CounterId::org(), org), (CounterId::profile(name), profile)];
    hit_ids(l, &ids, fallback, trips).await
}

/// One hit on the counters `ids` (each with its limit; a consumer's when it names one), as
/// the request path takes it: whether admitted, or refused for the store (`Err(true)`) or a
/// limit (`Err(false)`).
pub async fn hit_ids(
    l: &SharedLimiter,
    ids: &[(CounterId<'_>, u32)],
    fallback: Fallback,
    trips: &AtomicU32,
) -> Result<(), bool> {
    let counters = counters(l, ids);
    let hits: Vec<(&Arc<Counter>, u32)> = counters.iter().zip(ids).map(|(c, (_, n))| (c, *n)).collect();
    let taken = match l.try_acquire(&hits, now()) {
        Some(r) => r,
        None => {
            trips.fetch_add(1, Ordering::Relaxed);
            l.take(&hits, fallback, now()).await
        }
    };
    taken.map(drop).map_err(|r| r.why == Refused::StoreUnavailable)
}

/// The counters of `ids`, as the engine resolves them.
pub fn counters(l: &SharedLimiter, ids: &[(CounterId<'_>, u32)]) -> Vec<Arc<Counter>> {
    ids.iter()
        .map(|(id, _)| match id.consumer {
            Some(_) => l.consumer(*id, now()).expect("room for the consumer"),
            None => l.counter(*id),
        })
        .collect()
}

/// Three sidecars on the store at `url`, 12 clients, demand far above the limit: exactly the
/// limit is admitted, whichever sidecar takes the hits.
pub async fn exactly_the_limit(url: &str) {
    let ids = [(CounterId::org(), 1_000_000), (CounterId::profile("demo/p"), 1000)];
    exactly(url, &ids, 1000).await;
}

/// Three sidecars on the store at `url`, 12 clients asking 3,750 hits on the counters `ids`:
/// exactly `expected` are admitted, whichever sidecar takes them.
pub async fn exactly(url: &str, ids: &[(CounterId<'static>, u32)], expected: u32) {
    let sidecars: Vec<_> = (0..3).map(|_| limiter(url)).collect();
    exactly_through(&sidecars, ids, expected).await;
}

/// [`exactly`], through the limiters `sidecars`.
pub async fn exactly_through(sidecars: &[Arc<SharedLimiter>], ids: &[(CounterId<'static>, u32)], expected: u32) {
    let mut shares = [0; 3];
    for (share, (_, n)) in shares.iter_mut().zip(ids) {
        *share = *n;
    }
    let fallback = Fallback::LocalShare(shares);
    let ids: Arc<[(CounterId<'static>, u32)]> = ids.into();
    let admitted = Arc::new(AtomicU32::new(0));
    let trips = Arc::new(AtomicU32::new(0));
    let mut clients = Vec::new();
    for i in 0..12 {
        let l = Arc::clone(&sidecars[i % 3]);
        let (admitted, trips, ids) = (Arc::clone(&admitted), Arc::clone(&trips), Arc::clone(&ids));
        clients.push(tokio::spawn(async move {
            for _ in 0..300 {
                if hit_ids(&l, &ids, fallback, &trips).await.is_ok() {
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
    for l in sidecars {
        for _ in 0..50 {
            if hit_ids(l, &ids, fallback, &trips).await.is_ok() {
                admitted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    assert_eq!(admitted.load(Ordering::Relaxed), expected, "3,750 asked of {ids:?}");
    for l in sidecars {
        assert_eq!(l.mode(), Mode::Shared);
    }
}
