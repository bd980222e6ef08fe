//! Rate limits over a rolling minute.
//!
//! The engine talks to a [`Limiter`]: it resolves its counters once, when a configuration is
//! compiled, and on each admitted call asks for one hit on all the counters that apply (the
//! org allowance first, then the profile's limit) at once: either every counter takes the
//! hit or none does, so a refused call consumes nothing. [`InMemoryLimiter`] is exact within
//! one process; a shared (Redis) limiter for several replicas implements the same trait.
//!
//! [`Window`] counts hits in 600 buckets of 100 ms: a hit leaves the window between 59.9 and
//! 60 seconds after it was taken. Memory per counter is fixed (2.4 KB) whatever the limit,
//! and each operation is O(1) amortized.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use portcullis_signatures::ReplayCache;

use crate::signature::ReplayRegistry;

/// What a counter limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The org allowance, across every route.
    Org,
    /// One profile, across all its routes.
    Profile,
}

impl Scope {
    /// The label used in metrics and audit lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Org => "org",
            Self::Profile => "profile",
        }
    }
}

/// The state of a limit after a decision, for the `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    /// Hits allowed per window.
    pub limit: u32,
    /// Hits left in the window.
    pub remaining: u32,
    /// Seconds until a hit is available again.
    pub reset_secs: u64,
}

/// Where a hit was counted: where it is given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// In this process's windows.
    Local,
    /// On the shared store.
    Shared,
    /// Nowhere: admitted without counting while the store was unavailable
    /// ([`Fallback::Allow`]).
    Nowhere,
}

/// A hit taken: what it takes to give it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// When the hit was taken (ms): on the limiter's own monotonic clock, or on the shared
    /// store's clock when counted there.
    pub at_ms: u64,
    /// Where it was counted.
    pub counted: Counted,
    /// The tightest of the limits that applied.
    pub info: RateInfo,
}

/// A hit refused by the counter at `index` of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub index: usize,
    pub info: RateInfo,
    /// Refused because the shared store could not be asked and the profile says
    /// [`Fallback::Deny`] (503), not because a limit was reached (429).
    pub store_unavailable: bool,
}

impl Refusal {
    /// The counter at `index` is at its limit.
    pub fn over_limit(index: usize, info: RateInfo) -> Self {
        Self {
            index,
            info,
            store_unavailable: false,
        }
    }
}

/// What one decision's limits do when the shared store cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Count in this process, against these shares of the limits (in the order of the hits:
    /// each limit divided by the sidecars that enforce it, rounded up).
    LocalShare([u32; 2]),
    /// Admit without counting.
    Allow,
    /// Refuse (503).
    Deny,
}

/// Counts hits against limits.
pub trait Limiter: Send + Sync + 'static {
    /// A resolved counter.
    type Counter: Send + Sync;

    /// The counter of `name` in `scope`; the same counter every time it is asked for, so
    /// that counts survive configuration reloads.
    fn counter(&self, scope: Scope, name: &str) -> Self::Counter;

    /// Takes one hit on every `(counter, limit)` or on none. Refuses with the first counter
    /// (in the order given) that is at its limit.
    fn acquire(&self, hits: &[(&Self::Counter, u32)], now_ms: u64) -> Result<Grant, Refusal>;

    /// [`acquire`](Self::acquire) when this limiter can decide at once, from what it holds;
    /// `None` when the decision needs a shared store first (nothing taken yet): the engine
    /// then admits the call pending its limits ([`crate::Admission::limits_pending`]), and the
    /// caller takes them on the store and [`crate::Engine::settle`]s. The in-memory limiter
    /// always decides at once.
    fn try_acquire(&self, hits: &[(&Self::Counter, u32)], now_ms: u64) -> Option<Result<Grant, Refusal>> {
        Some(self.acquire(hits, now_ms))
    }

    /// Gives back a hit taken by `acquire` with `grant` (the backend answered 404).
    fn refund(&self, counters: &[&Self::Counter], grant: &Grant);

    /// Whether signatures are remembered against replay on a shared store: the engine then
    /// leaves them to the caller ([`crate::Engine::pending_replay`]) instead of recording
    /// them in [`replay_cache`](Self::replay_cache).
    fn shares_replays(&self) -> bool {
        false
    }

    /// The replay cache of HttpSignature profile `profile`. Like counters, it should be the
    /// same cache every time it is asked for, so that a reload forgets no signature; this
    /// default gives a new one each time (signatures are then remembered per compiled engine).
    fn replay_cache(&self, profile: &str) -> Arc<ReplayCache> {
        let _ = profile;
        Arc::new(ReplayCache::new(crate::signature::DEFAULT_REPLAY_CAPACITY))
    }

    /// The key slot of OAuth2 `jwksUri` `uri`. Like counters, it should be the same slot every
    /// time it is asked for, so that a reload keeps the keys fetched; this default gives a new,
    /// empty one each time.
    fn jwks(&self, uri: &str) -> Arc<crate::oauth2::KeySlot> {
        let _ = uri;
        Arc::default()
    }

    /// The introspection cache of OAuth2 profile `profile` asking `url`. Like counters, it
    /// should be the same cache every time it is asked for, so that a reload keeps the answers;
    /// this default gives a new, empty one each time.
    fn introspection(&self, profile: &str, url: &str) -> Arc<crate::oauth2::introspection::IntrospectionCache> {
        let _ = (profile, url);
        Arc::default()
    }

    /// The failed-authentication counts ([`crate::throttle`]), kept across reloads; `None`
    /// (the default): no throttling.
    fn throttle(&self) -> Option<&crate::throttle::Throttle> {
        None
    }
}

/// Exact in-process limiter; it also keeps the replay caches of HttpSignature profiles.
#[derive(Debug, Default)]
pub struct InMemoryLimiter {
    counters: Mutex<HashMap<(Scope, String), SharedWindow>>,
    replays: ReplayRegistry,
    jwks: crate::oauth2::JwksRegistry,
    introspection: crate::oauth2::introspection::IntrospectionRegistry,
    throttle: crate::throttle::Throttle,
}

/// A window shared by every engine compiled with the same limiter.
pub type SharedWindow = Arc<Mutex<Window>>;

impl InMemoryLimiter {
    /// A limiter with no counters yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A limiter whose replay caches hold about `capacity` live signatures per profile.
    pub fn with_replay_capacity(capacity: usize) -> Self {
        Self {
            counters: Mutex::default(),
            replays: ReplayRegistry::with_capacity(capacity),
            jwks: Default::default(),
            introspection: Default::default(),
            throttle: Default::default(),
        }
    }
}

impl InMemoryLimiter {
    /// This limiter, throttling failed authentications to `budget`.
    pub fn with_auth_failure_budget(mut self, budget: crate::throttle::Budget) -> Self {
        self.throttle = crate::throttle::Throttle::new(budget);
        self
    }
}

impl Limiter for InMemoryLimiter {
    type Counter = SharedWindow;

    fn counter(&self, scope: Scope, name: &str) -> Self::Counter {
        let mut counters = lock(&self.counters);
        counters
            .entry((scope, name.to_owned()))
            .or_insert_with(|| Arc::new(Mutex::new(Window::new())))
            .clone()
    }

    fn acquire(&self, hits: &[(&Self::Counter, u32)], now_ms: u64) -> Result<Grant, Refusal> {
        // Lock every counter, always in the engine's order (org, then one profile): the
        // check and the commit are one atomic step across counters.
        let mut guards: [Option<MutexGuard<'_, Window>>; 2] = [None, None];
        assert!(hits.len() <= guards.len(), "at most an org and a profile counter");
        for (slot, (counter, _)) in guards.iter_mut().zip(hits) {
            *slot = Some(lock(counter));
        }
        let windows = guards.iter_mut().flatten();
        let mut tightest: Option<RateInfo> = None;
        for (index, (window, &(_, limit))) in windows.zip(hits).enumerate() {
            window.advance(now_ms);
            if window.total >= limit {
                let info = RateInfo {
                    limit,
                    remaining: 0,
                    reset_secs: window.reset_secs(now_ms),
                };
                return Err(Refusal::over_limit(index, info));
            }
        }
        for (window, &(_, limit)) in guards.iter_mut().flatten().zip(hits) {
            window.take(now_ms);
            let info = RateInfo {
                limit,
                remaining: limit - window.total,
                reset_secs: window.reset_secs(now_ms),
            };
            if tightest.is_none_or(|t| info.remaining < t.remaining) {
                tightest = Some(info);
            }
        }
        let info = tightest.unwrap_or(RateInfo {
            limit: u32::MAX,
            remaining: u32::MAX,
            reset_secs: 0,
        });
        Ok(Grant {
            at_ms: now_ms,
            counted: Counted::Local,
            info,
        })
    }

    fn refund(&self, counters: &[&Self::Counter], grant: &Grant) {
        if grant.counted == Counted::Nowhere {
            return;
        }
        for counter in counters {
            lock(counter).give_back(grant.at_ms);
        }
    }

    fn replay_cache(&self, profile: &str) -> Arc<ReplayCache> {
        self.replays.cache(profile)
    }

    fn jwks(&self, uri: &str) -> Arc<crate::oauth2::KeySlot> {
        self.jwks.slot(uri)
    }

    fn introspection(&self, profile: &str, url: &str) -> Arc<crate::oauth2::introspection::IntrospectionCache> {
        self.introspection.cache(profile, url)
    }

    fn throttle(&self) -> Option<&crate::throttle::Throttle> {
        Some(&self.throttle)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a window leaves consistent counts: keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

const BUCKET_MS: u64 = 100;
const BUCKETS: u64 = 600;

/// Hits over the last minute, in 100 ms buckets.
#[derive(Debug, Clone)]
pub struct Window {
    counts: Box<[u32; BUCKETS as usize]>,
    /// Absolute index of the newest bucket (ms / 100).
    head: u64,
    /// Absolute index at or before the oldest non-empty bucket.
    oldest: u64,
    /// Hits in the live buckets `(head - BUCKETS, head]`.
    total: u32,
}

impl Default for Window {
    fn default() -> Self {
        Self::new()
    }
}

impl Window {
    /// An empty window.
    pub fn new() -> Self {
        Self {
            counts: Box::new([0; BUCKETS as usize]),
            head: 0,
            oldest: 0,
            total: 0,
        }
    }

    /// Hits in the window (as of the last operation).
    pub fn total(&self) -> u32 {
        self.total
    }

    /// Moves the window to `now_ms`, dropping the buckets that left it. A clock that goes
    /// back leaves the window where it is.
    fn advance(&mut self, now_ms: u64) {
        let now = now_ms / BUCKET_MS;
        if now <= self.head {
            return;
        }
        if now - self.head >= BUCKETS || self.total == 0 {
            if self.total != 0 {
                self.counts.fill(0);
                self.total = 0;
            }
        } else {
            // Buckets head+1..=now reuse the slots of the buckets that expire.
            for idx in self.head + 1..=now {
                let slot = &mut self.counts[(idx % BUCKETS) as usize];
                self.total -= *slot;
                *slot = 0;
            }
        }
        self.head = now;
        let first_live = now + 1 - BUCKETS.min(now + 1);
        if self.oldest < first_live {
            self.oldest = first_live;
        }
    }

    fn take(&mut self, now_ms: u64) {
        self.advance(now_ms);
        if self.total == 0 {
            self.oldest = self.head;
        }
        self.counts[(self.head % BUCKETS) as usize] += 1;
        self.total += 1;
    }

    fn give_back(&mut self, at_ms: u64) {
        let at = at_ms / BUCKET_MS;
        if at > self.head || at + BUCKETS <= self.head {
            return;
        }
        let slot = &mut self.counts[(at % BUCKETS) as usize];
        if *slot > 0 {
            *slot -= 1;
            self.total -= 1;
        }
    }

    /// Seconds until the oldest hit leaves the window (0 when empty), rounded up.
    fn reset_secs(&mut self, now_ms: u64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        while self.oldest < self.head && self.counts[(self.oldest % BUCKETS) as usize] == 0 {
            self.oldest += 1;
        }
        let leaves_ms = (self.oldest + BUCKETS) * BUCKET_MS;
        leaves_ms.saturating_sub(now_ms).div_ceil(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn one(l: &InMemoryLimiter, c: &Arc<Mutex<Window>>, limit: u32, now: u64) -> Result<Grant, Refusal> {
        l.acquire(&[(c, limit)], now)
    }

    #[test]
    fn admits_exactly_the_limit_per_rolling_minute() {
        let l = InMemoryLimiter::new();
        let c = l.counter(Scope::Profile, "p");
        for i in 0..5 {
            let g = one(&l, &c, 5, T0 + i * 1000).unwrap();
            assert_eq!(g.info.remaining, 4 - i as u32);
            assert_eq!(g.info.reset_secs, 60 - i, "the oldest hit leaves at T0+60s");
        }
        let r = one(&l, &c, 5, T0 + 30_000).unwrap_err();
        assert_eq!(
            r.info,
            RateInfo {
                limit: 5,
                remaining: 0,
                reset_secs: 30
            }
        );
        // The first hit leaves at T0+60s, then one per second.
        assert!(one(&l, &c, 5, T0 + 59_899).is_err());
        assert!(one(&l, &c, 5, T0 + 60_000).is_ok());
        assert!(one(&l, &c, 5, T0 + 60_500).is_err());
        assert!(one(&l, &c, 5, T0 + 61_000).is_ok());
    }

    #[test]
    fn a_refused_hit_consumes_nothing_on_any_counter() {
        let l = InMemoryLimiter::new();
        let org = l.counter(Scope::Org, "");
        let p = l.counter(Scope::Profile, "p");
        let q = l.counter(Scope::Profile, "q");
        for _ in 0..2 {
            l.acquire(&[(&org, 10), (&p, 2)], T0).unwrap();
        }
        let r = l.acquire(&[(&org, 10), (&p, 2)], T0).unwrap_err();
        assert_eq!(r.index, 1, "the profile refused");
        assert_eq!(lock(&org).total(), 2, "the org kept nothing of the refused hit");
        for _ in 0..8 {
            l.acquire(&[(&org, 10), (&q, 100)], T0).unwrap();
        }
        let r = l.acquire(&[(&org, 10), (&q, 100)], T0).unwrap_err();
        assert_eq!(r.index, 0, "the org allowance takes precedence");
        assert_eq!(lock(&q).total(), 8);
    }

    #[test]
    fn the_tightest_limit_is_reported() {
        let l = InMemoryLimiter::new();
        let org = l.counter(Scope::Org, "");
        let p = l.counter(Scope::Profile, "p");
        let g = l.acquire(&[(&org, 100), (&p, 3)], T0).unwrap();
        assert_eq!(g.info.limit, 3);
        assert_eq!(g.info.remaining, 2);
    }

    #[test]
    fn refunds_give_the_hit_back_only_inside_the_window() {
        let l = InMemoryLimiter::new();
        let c = l.counter(Scope::Profile, "p");
        let g = one(&l, &c, 1, T0).unwrap();
        assert!(one(&l, &c, 1, T0 + 10).is_err());
        l.refund(&[&c], &g);
        let g2 = one(&l, &c, 1, T0 + 20).unwrap();
        // A refund after the hit left the window takes nothing from newer hits.
        let later = one(&l, &c, 1, T0 + 120_000).unwrap();
        l.refund(&[&c], &g2);
        assert_eq!(lock(&c).total(), 1);
        l.refund(&[&c], &later);
        assert_eq!(lock(&c).total(), 0);
    }

    #[test]
    fn counters_are_shared_by_name_across_reloads() {
        let l = InMemoryLimiter::new();
        let a = l.counter(Scope::Profile, "p");
        one(&l, &a, 1, T0).unwrap();
        let b = l.counter(Scope::Profile, "p");
        assert!(one(&l, &b, 1, T0).is_err());
        let other_scope = l.counter(Scope::Org, "p");
        assert!(one(&l, &other_scope, 1, T0).is_ok());
    }

    #[test]
    fn a_long_idle_window_empties() {
        let l = InMemoryLimiter::new();
        let c = l.counter(Scope::Profile, "p");
        for i in 0..600 {
            one(&l, &c, 1000, T0 + i * 100).unwrap();
        }
        assert_eq!(lock(&c).total(), 600);
        one(&l, &c, 1000, T0 + 59_999 + 30_000).unwrap();
        assert_eq!(lock(&c).total(), 301, "half the buckets expired, plus the new hit");
        one(&l, &c, 1000, T0 + 10 * 60_000).unwrap();
        assert_eq!(lock(&c).total(), 1);
    }

    #[test]
    fn exact_under_concurrency() {
        let l = Arc::new(InMemoryLimiter::new());
        let org = l.counter(Scope::Org, "");
        let p = l.counter(Scope::Profile, "p");
        let admitted = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        if l.acquire(&[(&org, 1_000_000), (&p, 777)], T0).is_ok() {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 777);
        assert_eq!(lock(&org).total(), 777);
    }
}
