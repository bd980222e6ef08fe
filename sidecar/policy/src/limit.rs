//! Rate limits over a rolling minute, and quotas over calendar periods.
//!
//! The engine talks to a [`Limiter`]: it resolves its counters once, when a configuration is
//! compiled (a consumer's counters when the consumer calls, [`Limiter::consumer`]), and on
//! each admitted call asks for one hit on all the counters that apply (the org allowance
//! first, then the profile's or the consumer's per-minute limit, then the quota) at once:
//! either every counter takes the hit or none does, so a refused call consumes nothing.
//! [`InMemoryLimiter`] is exact within one process; a shared (Redis) limiter for several
//! replicas implements the same trait.
//!
//! [`Window`] counts a rolling minute in 100 ms buckets (a hit leaves the window between
//! 59.9 and 60 seconds after it was taken) on the monotonic clock, keeping only the buckets
//! that hold hits (at most 600), or a calendar period (an hour, a day, a month, in UTC) on
//! the wall clock. Each operation is O(1) amortized.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use portcullis_config::QuotaPeriod;
use portcullis_signatures::ReplayCache;

use crate::Now;
use crate::signature::ReplayRegistry;

/// What a counter limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The org allowance, across every route.
    Org,
    /// One profile's per-minute limit, across all its routes.
    Profile,
    /// One consumer's per-minute limit (`rateLimit.per: Consumer`).
    Consumer,
    /// A profile's or a consumer's quota.
    Quota,
}

impl Scope {
    /// The label used in metrics and audit lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Org => "org",
            Self::Profile => "profile",
            Self::Consumer => "consumer",
            Self::Quota => "quota",
        }
    }
}

/// How long a counter remembers a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Span {
    /// A rolling minute.
    Minute,
    /// The calendar period (UTC) the hit was taken in.
    Period(QuotaPeriod),
}

impl Span {
    /// The label used in store keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Period(QuotaPeriod::Hour) => "hour",
            Self::Period(QuotaPeriod::Day) => "day",
            Self::Period(QuotaPeriod::Month) => "month",
        }
    }
}

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

/// The calendar period holding `unix_ms` (an index that grows by one from period to
/// period) and when it ends, in ms since the epoch.
pub fn period(kind: QuotaPeriod, unix_ms: u64) -> (u64, u64) {
    match kind {
        QuotaPeriod::Hour => (unix_ms / HOUR_MS, (unix_ms / HOUR_MS + 1) * HOUR_MS),
        QuotaPeriod::Day => (unix_ms / DAY_MS, (unix_ms / DAY_MS + 1) * DAY_MS),
        QuotaPeriod::Month => {
            let (y, m) = year_month((unix_ms / DAY_MS) as i64);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let index = (y * 12 + (m as i64 - 1)).max(0) as u64;
            (index, days_from_civil(ny, nm, 1).max(0) as u64 * DAY_MS)
        }
    }
}

/// Year and month (1..=12) of a day counted from 1970-01-01.
fn year_month(days: i64) -> (i64, u32) {
    let (y, m, _) = civil_from_days(days);
    (y, m)
}

/// The proleptic Gregorian date (year, month, day) of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days from 1970-01-01 to the given date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Names a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CounterId<'a> {
    pub scope: Scope,
    /// The profile, `<namespace>/<name>` (empty for the org allowance).
    pub name: &'a str,
    /// The consumer, for a per-consumer counter.
    pub consumer: Option<&'a str>,
    pub span: Span,
}

impl<'a> CounterId<'a> {
    /// The org allowance.
    pub fn org() -> Self {
        Self {
            scope: Scope::Org,
            name: "",
            consumer: None,
            span: Span::Minute,
        }
    }

    /// A profile's per-minute limit.
    pub fn profile(name: &'a str) -> Self {
        Self {
            scope: Scope::Profile,
            name,
            consumer: None,
            span: Span::Minute,
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
    /// When the hit was taken on the wall clock (ms since the epoch): the calendar period
    /// it was counted in.
    pub at_unix_ms: u64,
    /// Where it was counted.
    pub counted: Counted,
    /// The tightest of the limits that applied.
    pub info: RateInfo,
}

/// Why a hit was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The counter is at its limit (429).
    OverLimit,
    /// The shared store could not be asked and the profile says [`Fallback::Deny`] (503).
    StoreUnavailable,
    /// The consumer's counters could not be kept: the limiter holds as many consumers as it
    /// may, each with hits in its window (429, fails closed).
    TooManyConsumers,
}

/// A hit refused by the counter at `index` of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub index: usize,
    pub info: RateInfo,
    pub why: Refused,
}

impl Refusal {
    /// The counter at `index` is at its limit.
    pub fn over_limit(index: usize, info: RateInfo) -> Self {
        Self {
            index,
            info,
            why: Refused::OverLimit,
        }
    }
}

/// Most counters one decision takes a hit on: the org allowance, a per-minute limit and a
/// quota.
pub const MAX_HITS: usize = 3;

/// What one decision's limits do when the shared store cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Count in this process, against these shares of the limits (in the order of the hits:
    /// each limit divided by the sidecars that enforce it, rounded up).
    LocalShare([u32; MAX_HITS]),
    /// Admit without counting.
    Allow,
    /// Refuse (503).
    Deny,
}

/// Most consumers a limiter keeps counters for, by default.
pub const DEFAULT_MAX_CONSUMERS: usize = 20_000;

/// Counts hits against limits.
pub trait Limiter: Send + Sync + 'static {
    /// A resolved counter.
    type Counter: Send + Sync;

    /// The counter `id` (the org allowance, a profile's limit or quota); the same counter
    /// every time it is asked for, so that counts survive configuration reloads.
    fn counter(&self, id: CounterId<'_>) -> Self::Counter;

    /// The per-consumer counter `id`, kept while it holds hits (or a block of the store);
    /// `None` when the limiter already keeps as many consumers as it may, none idle.
    fn consumer(&self, id: CounterId<'_>, now: Now) -> Option<Self::Counter>;

    /// The per-consumer counter `id` if it is kept now (to give a hit back: never makes one).
    fn kept_consumer(&self, id: CounterId<'_>) -> Option<Self::Counter>;

    /// Whether quotas can be counted: they need a shared store (a sidecar's own count would
    /// multiply with the replicas and restart from zero with the process).
    fn counts_quotas(&self) -> bool {
        false
    }

    /// Takes one hit on every `(counter, limit)` or on none. Refuses with the first counter
    /// (in the order given) that is at its limit.
    fn acquire(&self, hits: &[(&Self::Counter, u32)], now: Now) -> Result<Grant, Refusal>;

    /// [`acquire`](Self::acquire) when this limiter can decide at once, from what it holds;
    /// `None` when the decision needs a shared store first (nothing taken yet): the engine
    /// then admits the call pending its limits ([`crate::Admission::limits_pending`]), and the
    /// caller takes them on the store and [`crate::Engine::settle`]s. The in-memory limiter
    /// always decides at once.
    fn try_acquire(&self, hits: &[(&Self::Counter, u32)], now: Now) -> Option<Result<Grant, Refusal>> {
        Some(self.acquire(hits, now))
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

    /// The discovery document (and ID-token keys) of the OpenID provider at `url`. Like key
    /// slots, it should be the same slot every time it is asked for, so that a reload keeps
    /// what was fetched.
    fn discovery(&self, url: &str) -> Arc<crate::oauth2::login::DiscoverySlot> {
        let _ = url;
        Arc::default()
    }

    /// The introspection cache of OAuth2 profile `profile` asking `url`. Like counters, it
    /// should be the same cache every time it is asked for, so that a reload keeps the answers;
    /// this default gives a new, empty one each time.
    fn introspection(&self, profile: &str, url: &str) -> Arc<crate::oauth2::introspection::IntrospectionCache> {
        let _ = (profile, url);
        Arc::default()
    }

    /// The grant book of Builtin OAuth2 profile `owner` (`namespace/name`). Like counters, it
    /// should be the same book every time it is asked for, so that a reload forgets no grant
    /// and no revocation; this default gives a new, empty one each time.
    fn grants(&self, owner: &str) -> Arc<crate::oauth2::grants::GrantBook> {
        let _ = owner;
        Arc::default()
    }

    /// The failed-authentication counts ([`crate::throttle`]), kept across reloads; `None`
    /// (the default): no throttling.
    fn throttle(&self) -> Option<&crate::throttle::Throttle> {
        None
    }
}

/// The key of a counter in a limiter's tables.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CounterKey {
    pub scope: Scope,
    pub span: Span,
    /// The profile, then (for a consumer) `\0` and the consumer.
    pub name: String,
}

impl CounterKey {
    pub fn new(id: &CounterId<'_>) -> Self {
        let name = match id.consumer {
            None => id.name.to_owned(),
            Some(c) => {
                let mut name = String::with_capacity(id.name.len() + 1 + c.len());
                name.push_str(id.name);
                name.push('\0');
                name.push_str(c);
                name
            }
        };
        Self {
            scope: id.scope,
            span: id.span,
            name,
        }
    }
}

/// Per-consumer entries, at most `max`: when full, those `idle` says may go are swept (at
/// most once a second), and a new consumer beyond that is refused.
#[derive(Debug)]
pub struct ConsumerTable<T> {
    entries: HashMap<CounterKey, T>,
    max: usize,
    last_sweep_ms: Option<u64>,
}

impl<T: Clone> ConsumerTable<T> {
    pub fn new(max: usize) -> Self {
        Self {
            entries: HashMap::new(),
            max,
            last_sweep_ms: None,
        }
    }

    /// The entry of `key`, made with `make` if there is room.
    pub fn get_or_make(
        &mut self,
        key: CounterKey,
        now_ms: u64,
        idle: impl Fn(&T) -> bool,
        make: impl FnOnce() -> T,
    ) -> Option<T> {
        if let Some(entry) = self.entries.get(&key) {
            return Some(entry.clone());
        }
        if self.entries.len() >= self.max {
            if self.last_sweep_ms.is_some_and(|at| now_ms < at + 1000) {
                return None;
            }
            self.last_sweep_ms = Some(now_ms);
            self.entries.retain(|_, e| !idle(e));
            if self.entries.len() >= self.max {
                return None;
            }
        }
        let entry = make();
        self.entries.insert(key, entry.clone());
        Some(entry)
    }

    /// The entry of `key`, if kept.
    pub fn get(&self, key: &CounterKey) -> Option<T> {
        self.entries.get(key).cloned()
    }

    /// Every entry (the shared limiter's background work).
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Exact in-process limiter; it also keeps the replay caches of HttpSignature profiles.
#[derive(Debug)]
pub struct InMemoryLimiter {
    counters: Mutex<HashMap<CounterKey, SharedWindow>>,
    consumers: Mutex<ConsumerTable<SharedWindow>>,
    replays: ReplayRegistry,
    jwks: crate::oauth2::JwksRegistry,
    discovery: crate::oauth2::login::DiscoveryRegistry,
    introspection: crate::oauth2::introspection::IntrospectionRegistry,
    grants: crate::oauth2::grants::GrantRegistry,
    throttle: crate::throttle::Throttle,
}

impl Default for InMemoryLimiter {
    fn default() -> Self {
        Self {
            counters: Mutex::default(),
            consumers: Mutex::new(ConsumerTable::new(DEFAULT_MAX_CONSUMERS)),
            replays: ReplayRegistry::default(),
            jwks: Default::default(),
            discovery: Default::default(),
            introspection: Default::default(),
            grants: Default::default(),
            throttle: Default::default(),
        }
    }
}

/// A window shared by every engine compiled with the same limiter.
pub type SharedWindow = Arc<Mutex<Window>>;

impl InMemoryLimiter {
    /// A limiter with no counters yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The grant book of Builtin profile `owner`, journaling its changes for a shared store
    /// when `shared` (the first ask decides).
    pub fn grant_book(&self, owner: &str, shared: bool) -> Arc<crate::oauth2::grants::GrantBook> {
        self.grants.book(owner, shared)
    }

    /// A limiter whose replay caches hold about `capacity` live signatures per profile.
    pub fn with_replay_capacity(capacity: usize) -> Self {
        Self {
            replays: ReplayRegistry::with_capacity(capacity),
            ..Self::default()
        }
    }

    /// This limiter, throttling failed authentications to `budget`.
    pub fn with_auth_failure_budget(mut self, budget: crate::throttle::Budget) -> Self {
        self.throttle = crate::throttle::Throttle::new(budget);
        self
    }

    /// This limiter, keeping counters for at most `max` consumers.
    pub fn with_max_consumers(mut self, max: usize) -> Self {
        self.consumers = Mutex::new(ConsumerTable::new(max));
        self
    }

    /// Consumers with counters now.
    pub fn consumers(&self) -> usize {
        lock(&self.consumers).len()
    }

    /// Whether `window` holds no hit at `now` and nothing else uses it.
    pub fn idle(window: &SharedWindow, now: Now) -> bool {
        Arc::strong_count(window) == 1 && lock(window).is_empty_at(now)
    }
}

impl Limiter for InMemoryLimiter {
    type Counter = SharedWindow;

    fn counter(&self, id: CounterId<'_>) -> Self::Counter {
        let mut counters = lock(&self.counters);
        counters
            .entry(CounterKey::new(&id))
            .or_insert_with(|| Arc::new(Mutex::new(Window::new(id.span))))
            .clone()
    }

    fn consumer(&self, id: CounterId<'_>, now: Now) -> Option<Self::Counter> {
        lock(&self.consumers).get_or_make(
            CounterKey::new(&id),
            now.mono_ms,
            |w| Self::idle(w, now),
            || Arc::new(Mutex::new(Window::new(id.span))),
        )
    }

    fn kept_consumer(&self, id: CounterId<'_>) -> Option<Self::Counter> {
        lock(&self.consumers).get(&CounterKey::new(&id))
    }

    fn acquire(&self, hits: &[(&Self::Counter, u32)], now: Now) -> Result<Grant, Refusal> {
        // Lock every counter, always in the engine's order (org, then a per-minute limit,
        // then a quota): the check and the commit are one atomic step across counters.
        let mut guards: [Option<MutexGuard<'_, Window>>; MAX_HITS] = [None, None, None];
        assert!(
            hits.len() <= guards.len(),
            "at most an org, a minute and a quota counter"
        );
        for (slot, (counter, _)) in guards.iter_mut().zip(hits) {
            *slot = Some(lock(counter));
        }
        let windows = guards.iter_mut().flatten();
        let mut tightest: Option<RateInfo> = None;
        for (index, (window, &(_, limit))) in windows.zip(hits).enumerate() {
            window.advance(now);
            if window.total >= limit {
                let info = RateInfo {
                    limit,
                    remaining: 0,
                    reset_secs: window.reset_secs(now),
                };
                return Err(Refusal::over_limit(index, info));
            }
        }
        for (window, &(_, limit)) in guards.iter_mut().flatten().zip(hits) {
            window.take(now);
            let info = RateInfo {
                limit,
                remaining: limit - window.total,
                reset_secs: window.reset_secs(now),
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
            at_ms: now.mono_ms,
            at_unix_ms: now.unix_ms,
            counted: Counted::Local,
            info,
        })
    }

    fn refund(&self, counters: &[&Self::Counter], grant: &Grant) {
        if grant.counted == Counted::Nowhere {
            return;
        }
        for counter in counters {
            lock(counter).give_back(grant);
        }
    }

    fn replay_cache(&self, profile: &str) -> Arc<ReplayCache> {
        self.replays.cache(profile)
    }

    fn jwks(&self, uri: &str) -> Arc<crate::oauth2::KeySlot> {
        self.jwks.slot(uri)
    }

    fn discovery(&self, url: &str) -> Arc<crate::oauth2::login::DiscoverySlot> {
        self.discovery.slot(url)
    }

    fn introspection(&self, profile: &str, url: &str) -> Arc<crate::oauth2::introspection::IntrospectionCache> {
        self.introspection.cache(profile, url)
    }

    fn grants(&self, owner: &str) -> Arc<crate::oauth2::grants::GrantBook> {
        self.grants.book(owner, false)
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

/// Hits over the last minute in 100 ms buckets (only those that hold hits), or over the
/// current calendar period.
#[derive(Debug, Clone)]
pub struct Window {
    span: Span,
    /// Rolling minute: `(absolute bucket index, hits)`, oldest first, indices increasing.
    buckets: VecDeque<(u64, u32)>,
    /// Calendar period: the index of the period `total` counts.
    period: u64,
    /// Hits in the window (as of the last operation).
    total: u32,
}

impl Window {
    /// An empty window.
    pub fn new(span: Span) -> Self {
        Self {
            span,
            buckets: VecDeque::new(),
            period: 0,
            total: 0,
        }
    }

    /// Hits in the window (as of the last operation).
    pub fn total(&self) -> u32 {
        self.total
    }

    /// Whether the window holds no hit at `now`.
    pub fn is_empty_at(&mut self, now: Now) -> bool {
        self.advance(now);
        self.total == 0
    }

    /// Moves the window to `now`, dropping the hits that left it. A clock that goes back
    /// leaves the window where it is.
    fn advance(&mut self, now: Now) {
        match self.span {
            Span::Minute => {
                let now = now.mono_ms / BUCKET_MS;
                while let Some(&(bucket, hits)) = self.buckets.front() {
                    if bucket + BUCKETS > now && hits > 0 {
                        break;
                    }
                    self.total -= hits;
                    self.buckets.pop_front();
                }
            }
            Span::Period(kind) => {
                let (period, _) = period(kind, now.unix_ms);
                if period > self.period {
                    self.period = period;
                    self.total = 0;
                }
            }
        }
    }

    fn take(&mut self, now: Now) {
        self.advance(now);
        self.total += 1;
        if self.span != Span::Minute {
            return;
        }
        let bucket = now.mono_ms / BUCKET_MS;
        match self.buckets.back_mut() {
            // A caller that read the clock before another one took its hit counts in the
            // newer bucket (it leaves a little later: never early).
            Some((newest, hits)) if *newest >= bucket => *hits += 1,
            _ => self.buckets.push_back((bucket, 1)),
        }
    }

    fn give_back(&mut self, grant: &Grant) {
        match self.span {
            Span::Minute => {
                // Back into the bucket it was counted in, while that is in the window (a hit
                // that joined a newer bucket stays counted: never more than the limit).
                let at = grant.at_ms / BUCKET_MS;
                let i = self.buckets.partition_point(|&(b, _)| b < at);
                if let Some((bucket, hits)) = self.buckets.get_mut(i)
                    && *bucket == at
                    && *hits > 0
                {
                    *hits -= 1;
                    self.total -= 1;
                }
            }
            Span::Period(kind) => {
                if period(kind, grant.at_unix_ms).0 == self.period && self.total > 0 {
                    self.total -= 1;
                }
            }
        }
    }

    /// Seconds until a hit is available again after the window is full: until the oldest
    /// hit leaves it, or the period ends (0 when empty), rounded up.
    fn reset_secs(&mut self, now: Now) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let leaves_ms = match self.span {
            Span::Minute => {
                while self.buckets.front().is_some_and(|&(_, hits)| hits == 0) {
                    self.buckets.pop_front();
                }
                let Some(&(oldest, _)) = self.buckets.front() else {
                    return 0;
                };
                return ((oldest + BUCKETS) * BUCKET_MS)
                    .saturating_sub(now.mono_ms)
                    .div_ceil(1000);
            }
            Span::Period(kind) => period(kind, now.unix_ms).1,
        };
        leaves_ms.saturating_sub(now.unix_ms).div_ceil(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn one(l: &InMemoryLimiter, c: &Arc<Mutex<Window>>, limit: u32, now: u64) -> Result<Grant, Refusal> {
        l.acquire(&[(c, limit)], now.into())
    }

    #[test]
    fn admits_exactly_the_limit_per_rolling_minute() {
        let l = InMemoryLimiter::new();
        let c = l.counter(CounterId::profile("p"));
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
        let org = l.counter(CounterId::org());
        let p = l.counter(CounterId::profile("p"));
        let q = l.counter(CounterId::profile("q"));
        for _ in 0..2 {
            l.acquire(&[(&org, 10), (&p, 2)], T0.into()).unwrap();
        }
        let r = l.acquire(&[(&org, 10), (&p, 2)], T0.into()).unwrap_err();
        assert_eq!(r.index, 1, "the profile refused");
        assert_eq!(lock(&org).total(), 2, "the org kept nothing of the refused hit");
        for _ in 0..8 {
            l.acquire(&[(&org, 10), (&q, 100)], T0.into()).unwrap();
        }
        let r = l.acquire(&[(&org, 10), (&q, 100)], T0.into()).unwrap_err();
        assert_eq!(r.index, 0, "the org allowance takes precedence");
        assert_eq!(lock(&q).total(), 8);
    }

    #[test]
    fn the_tightest_limit_is_reported() {
        let l = InMemoryLimiter::new();
        let org = l.counter(CounterId::org());
        let p = l.counter(CounterId::profile("p"));
        let g = l.acquire(&[(&org, 100), (&p, 3)], T0.into()).unwrap();
        assert_eq!(g.info.limit, 3);
        assert_eq!(g.info.remaining, 2);
    }

    #[test]
    fn refunds_give_the_hit_back_only_inside_the_window() {
        let l = InMemoryLimiter::new();
        let c = l.counter(CounterId::profile("p"));
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
        let a = l.counter(CounterId::profile("p"));
        one(&l, &a, 1, T0).unwrap();
        let b = l.counter(CounterId::profile("p"));
        assert!(one(&l, &b, 1, T0).is_err());
        let other_scope = l.counter(CounterId {
            scope: Scope::Org,
            ..CounterId::profile("p")
        });
        assert!(one(&l, &other_scope, 1, T0).is_ok());
    }

    #[test]
    fn a_long_idle_window_empties() {
        let l = InMemoryLimiter::new();
        let c = l.counter(CounterId::profile("p"));
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
        let org = l.counter(CounterId::org());
        let p = l.counter(CounterId::profile("p"));
        let admitted = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        if l.acquire(&[(&org, 1_000_000), (&p, 777)], T0.into()).is_ok() {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 777);
        assert_eq!(lock(&org).total(), 777);
    }

    fn at(unix_ms: u64) -> Now {
        Now {
            unix_ms,
            mono_ms: unix_ms,
        }
    }

    #[test]
    fn calendar_periods_start_and_end_in_utc() {
        // 2026-12-03T20:56:47Z
        let t = 1_796_331_407_000;
        assert_eq!(period(QuotaPeriod::Hour, t).1, 1_796_331_600_000, "21:00");
        assert_eq!(period(QuotaPeriod::Day, t).1, 1_796_342_400_000, "2026-12-04T00:00Z");
        // December 2026 ends at 2027-01-01T00:00Z; January 2027 at 2027-02-01.
        let (dec, end) = period(QuotaPeriod::Month, t);
        assert_eq!(end, 1_798_761_600_000);
        let (jan, feb) = period(QuotaPeriod::Month, end);
        assert_eq!(jan, dec + 1);
        assert_eq!(feb, 1_801_440_000_000);
        assert_eq!(period(QuotaPeriod::Month, end - 1).0, dec);
        // A leap February: 2028-02-01 .. 2028-03-01 is 29 days.
        let feb_2028 = 1_832_976_000_000;
        let (_, mar) = period(QuotaPeriod::Month, feb_2028);
        assert_eq!(mar - feb_2028, 29 * DAY_MS);
        for ms in [0, 1, DAY_MS - 1, 951_782_400_000, 4_102_444_800_000] {
            let (p, end) = period(QuotaPeriod::Month, ms);
            assert!(end > ms);
            assert_eq!(period(QuotaPeriod::Month, end).0, p + 1, "at {ms}");
        }
    }

    #[test]
    fn a_quota_counts_a_calendar_period_and_resets_at_its_end() {
        let l = InMemoryLimiter::new();
        let id = CounterId {
            scope: Scope::Quota,
            name: "p",
            consumer: None,
            span: Span::Period(QuotaPeriod::Day),
        };
        let q = l.counter(id);
        let midnight = 1_796_342_400_000;
        let evening = midnight - 3_600_000;
        let g = l.acquire(&[(&q, 2)], at(evening)).unwrap();
        assert_eq!(g.info.reset_secs, 3600);
        l.acquire(&[(&q, 2)], at(evening + 1)).unwrap();
        let r = l.acquire(&[(&q, 2)], at(midnight - 1)).unwrap_err();
        assert_eq!(r.info.reset_secs, 1);
        // A refund of the earlier period's hit gives nothing in the new one.
        let g2 = l.acquire(&[(&q, 2)], at(midnight)).unwrap();
        l.refund(&[&q], &g);
        assert_eq!(lock(&q).total(), 1);
        l.refund(&[&q], &g2);
        assert_eq!(lock(&q).total(), 0);
    }

    #[test]
    fn consumers_count_apart_and_their_table_is_bounded() {
        let l = InMemoryLimiter::new().with_max_consumers(2);
        let id = |c| CounterId {
            scope: Scope::Consumer,
            name: "ns/p",
            consumer: Some(c),
            span: Span::Minute,
        };
        let alice = l.consumer(id("alice"), at(T0)).unwrap();
        let bob = l.consumer(id("bob"), at(T0)).unwrap();
        l.acquire(&[(&alice, 1)], at(T0)).unwrap();
        assert!(l.acquire(&[(&alice, 1)], at(T0)).is_err());
        assert!(l.acquire(&[(&bob, 1)], at(T0)).is_ok(), "bob has a window of his own");
        // The same consumer gets the same counter; a third is refused while both hold hits
        // (fails closed: forgetting one would let it start over).
        let again = l.consumer(id("alice"), at(T0)).unwrap();
        assert!(Arc::ptr_eq(&again, &alice));
        drop((alice, bob, again));
        assert!(l.consumer(id("carol"), at(T0 + 1000)).is_none());
        // Once their hits left the window, idle consumers make room.
        assert!(l.consumer(id("carol"), at(T0 + 60_000)).is_some());
        assert_eq!(l.consumers(), 1);
        // A sweep happens at most once a second.
        let carol = l.consumer(id("carol"), at(T0 + 60_000)).unwrap();
        l.acquire(&[(&carol, 5)], at(T0 + 60_000)).unwrap();
        assert!(l.consumer(id("dave"), at(T0 + 60_000)).is_some());
        assert!(l.consumer(id("erin"), at(T0 + 60_001)).is_none());
    }

    #[test]
    fn a_window_keeps_only_the_buckets_that_hold_hits() {
        let l = InMemoryLimiter::new();
        let c = l.counter(CounterId::profile("p"));
        for i in 0..10 {
            one(&l, &c, 1000, T0 + i * 5_000).unwrap();
        }
        assert_eq!(lock(&c).buckets.len(), 10);
        for i in 0..2000 {
            one(&l, &c, 1_000_000, T0 + 70_000 + i * 50).unwrap();
        }
        assert!(lock(&c).buckets.len() <= BUCKETS as usize);
    }
}
