//! [`SharedLimiter`]: the engine's [`Limiter`] when the counts live in a shared store.
//!
//! Far from a limit, a request takes its hit from a *block*: hits this sidecar reserved in
//! the store for the current 100 ms bucket, counted there at once, so every other replica
//! sees them. A background task reserves the next bucket's block shortly before the bucket
//! begins, sized by the demand it saw (at most `max_block`, and at most the smallest
//! remaining budget / `divisor`), and gives back what a block did not use once its bucket
//! has ended: far from the limit no request waits for the store. Near the limit blocks
//! shrink to nothing and each request takes its own hit in one round trip (the price of
//! exactness): the hits admitted in any window are never more than the limit, and a refusal
//! happens only when the store's count, every replica's hits included, is at the limit.
//!
//! A hit is counted in the bucket it was used in (a block is only used inside its bucket),
//! so the window is the in-memory one: a hit leaves it 59.9 to 60 s after it was taken.
//!
//! When the store fails or is slow (`timeout`), the limiter says so once in the log and each
//! decision follows its profile's `onStoreUnavailable` ([`Fallback`]): counted locally
//! against this replica's share of each limit (the limit divided by the replica count the
//! operator wrote into the configuration, rounded up), admitted without counting, or refused;
//! it probes the store every second until it answers again.
//!
//! With a store, signatures of HttpSignature profiles are remembered there too
//! ([`SharedLimiter::remember`]): a captured signed request is admitted once in the cluster.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use portcullis_policy::limit::{ConsumerTable, CounterKey, DEFAULT_MAX_CONSUMERS, SharedWindow, Window};
use portcullis_policy::{
    Counted, CounterId, Fallback, Grant, InMemoryLimiter, Limiter, MAX_HITS, Now, RateInfo, Refusal, Refused,
    ReplayEntry, SharedReplay, Span,
};
use portcullis_signatures::ReplayCache;
use sha2::{Digest, Sha256};

use crate::store::{Remember, Remembered, Store, StoreError, Take, Taken, span_code};

/// The length of a bucket, ms (the in-memory window's).
const BUCKET_MS: u64 = 100;

/// Calls that must fail in a row before the store is taken for unavailable.
const FAILURES_TO_SWITCH: u32 = 2;

/// How blocks are sized, and keys named.
#[derive(Debug, Clone)]
pub struct Options {
    /// Most hits one block reserves.
    pub max_block: u32,
    /// A block is at most the smallest remaining budget divided by this (keep it above the
    /// replica count, so that the replicas' blocks together never hold the whole budget).
    pub divisor: u32,
    /// Key prefix, with the Redis Cluster hash tag that keeps one decision's keys in one
    /// slot (every counter shares it: the org allowance is in every decision).
    pub prefix: &'static str,
    /// Key prefix of remembered signatures (each key's signatures in a slot of their own).
    pub replay_prefix: &'static str,
    /// Most consumers with counters kept (`rateLimit.per: Consumer`).
    pub max_consumers: usize,
    /// The key of the HMAC that names a consumer in the store (the store's password: every
    /// replica has it, a reader of the store's keys alone does not); `None`: SHA-256 of the
    /// profile and the consumer, which names nobody outright but lets a guess be confirmed.
    pub consumer_key: Option<std::sync::Arc<[u8]>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_block: 64,
            divisor: 32,
            prefix: "portcullis:{limits}:",
            replay_prefix: "portcullis:replay:",
            max_consumers: DEFAULT_MAX_CONSUMERS,
            consumer_key: None,
        }
    }
}

/// Which counts a limiter is enforcing with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No store configured: this sidecar's own counts.
    Local,
    /// The shared store.
    Shared,
    /// The store is unavailable: this sidecar's share of each limit, counted locally.
    LocalShare,
}

impl Mode {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Shared => "shared",
            Self::LocalShare => "local_share",
        }
    }
}

/// A counter: its key in the store, its local window (used when the store is unavailable)
/// and the block of hits this sidecar holds for it.
#[derive(Debug)]
pub struct Counter {
    key: String,
    /// The script's code of its window ([`span_code`]).
    span: u8,
    window: SharedWindow,
    blocks: Mutex<Blocks>,
    /// One round trip at a time per counter: waiters after the first find its block.
    refill: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Blocks {
    current: Option<Block>,
    next: Option<Block>,
    /// Hits of ended blocks (and refunds) not given back yet, at most [`MAX_UNUSED`]; beyond,
    /// they stay counted until they leave the window (never more than the limit).
    unused: Vec<Unused>,
    /// The store's last refusal, repeated without a round trip for the rest of its bucket:
    /// a flood of calls over a limit costs the store at most one call per bucket and sidecar.
    refused: Option<Memo>,
}

/// A refusal of the store, for one set of counters and limits, in one bucket.
#[derive(Debug, Clone)]
struct Memo {
    bucket: u64,
    keys: Vec<Arc<Counter>>,
    limits: Vec<u32>,
    refusal: Refusal,
}

impl Memo {
    fn matches(&self, bucket: u64, hits: &[(&Arc<Counter>, u32)]) -> bool {
        self.bucket == bucket && same_hits(&self.keys, &self.limits, hits)
    }
}

/// Whether `hits` are exactly the counters `keys` with the limits `limits`.
fn same_hits(keys: &[Arc<Counter>], limits: &[u32], hits: &[(&Arc<Counter>, u32)]) -> bool {
    keys.len() == hits.len()
        && keys
            .iter()
            .zip(limits)
            .zip(hits)
            .all(|((k, l), (c, n))| Arc::ptr_eq(k, c) && l == n)
}

/// Most batches of hits owed back to the store per counter.
const MAX_UNUSED: usize = 8;

/// Hits to give back to the store.
#[derive(Debug, Clone)]
struct Unused {
    bucket: u64,
    hits: u32,
    keys: Vec<Arc<Counter>>,
}

impl Unused {
    fn same_keys(&self, keys: &[Arc<Counter>]) -> bool {
        self.keys.len() == keys.len() && self.keys.iter().zip(keys).all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

/// Adds `hits` in `bucket` on `keys` to what is owed back.
fn owe(blocks: &mut Blocks, bucket: u64, hits: u32, keys: &[Arc<Counter>]) {
    if hits == 0 {
        return;
    }
    if let Some(u) = blocks
        .unused
        .iter_mut()
        .find(|u| u.bucket == bucket && u.same_keys(keys))
    {
        u.hits += hits;
    } else if blocks.unused.len() < MAX_UNUSED {
        blocks.unused.push(Unused {
            bucket,
            hits,
            keys: keys.to_vec(),
        });
    }
}

/// Hits reserved in one bucket for one set of counters.
#[derive(Debug, Clone)]
struct Block {
    bucket: u64,
    left: u32,
    used: u32,
    /// The counters (org first) and limits it was reserved for.
    keys: Vec<Arc<Counter>>,
    limits: Vec<u32>,
    /// The state of the tightest limit when it was reserved.
    info: RateInfo,
}

impl Block {
    fn serves(&self, hits: &[(&Arc<Counter>, u32)]) -> bool {
        same_hits(&self.keys, &self.limits, hits)
    }
}

/// The limiter. Everything but the counts (replay caches, key sets, introspection caches,
/// failed-authentication throttling) is the in-memory limiter's.
pub struct SharedLimiter {
    local: InMemoryLimiter,
    store: Option<Store>,
    options: Options,
    counters: Mutex<HashMap<CounterKey, Arc<Counter>>>,
    consumers: Mutex<ConsumerTable<Arc<Counter>>>,
    available: AtomicBool,
    /// Calls failed in a row.
    failures: AtomicU32,
    /// Store clock minus this process's monotonic clock, ms (`i64::MIN`: not known yet).
    offset_ms: AtomicI64,
    started: Instant,
    on_mode: Box<dyn Fn(Mode) + Send + Sync>,
    on_round_trip: Box<dyn Fn(Duration, bool) + Send + Sync>,
}

impl std::fmt::Debug for SharedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimiter")
            .field("mode", &self.mode())
            .finish_non_exhaustive()
    }
}

impl SharedLimiter {
    /// A limiter over `local` (which keeps everything but the counts) and, when given, the
    /// shared `store`.
    pub fn new(local: InMemoryLimiter, store: Option<Store>, options: Options) -> Self {
        Self {
            local,
            store,
            consumers: Mutex::new(ConsumerTable::new(options.max_consumers)),
            options,
            counters: Mutex::default(),
            available: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            offset_ms: AtomicI64::new(i64::MIN),
            started: Instant::now(),
            on_mode: Box::new(|_| {}),
            on_round_trip: Box::new(|_, _| {}),
        }
    }

    /// Calls `f` with the mode at start and on every change (metrics).
    pub fn on_mode(mut self, f: impl Fn(Mode) + Send + Sync + 'static) -> Self {
        f(self.mode());
        self.on_mode = Box::new(f);
        self
    }

    /// Calls `f` with each store round trip's time and whether it failed (metrics).
    pub fn on_round_trip(mut self, f: impl Fn(Duration, bool) + Send + Sync + 'static) -> Self {
        self.on_round_trip = Box::new(f);
        self
    }

    /// The counts in force.
    pub fn mode(&self) -> Mode {
        match (&self.store, self.available.load(Ordering::Relaxed)) {
            (None, _) => Mode::Local,
            (Some(_), true) => Mode::Shared,
            (Some(_), false) => Mode::LocalShare,
        }
    }

    fn mono_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The store's bucket now, once the offset of its clock to ours is known.
    fn bucket(&self) -> Option<u64> {
        let offset = self.offset_ms.load(Ordering::Relaxed);
        if offset == i64::MIN {
            return None;
        }
        Some((self.mono_ms() as i64 + offset).max(0) as u64 / BUCKET_MS)
    }

    /// A call failed: the store is taken for unavailable after [`FAILURES_TO_SWITCH`] in a
    /// row (one slow answer on a busy sidecar does not switch every profile to its fallback;
    /// the call that failed follows its own).
    fn failed(&self, error: &StoreError) {
        if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= FAILURES_TO_SWITCH {
            self.set_available(false, Some(error));
        }
    }

    fn set_available(&self, up: bool, error: Option<&StoreError>) {
        if self.available.swap(up, Ordering::Relaxed) != up {
            match error {
                Some(e) => tracing::warn!(error = %e, mode = Mode::LocalShare.as_str(),
                    "limits store unavailable: each replica enforces its share of every limit"),
                None => tracing::info!(mode = Mode::Shared.as_str(), "limits store available again"),
            }
            (self.on_mode)(self.mode());
        }
    }

    /// A hit from the current block of `hits`' last counter, if it holds one.
    fn hit_from_block(&self, hits: &[(&Arc<Counter>, u32)]) -> Option<Grant> {
        let (last, _) = hits.last()?;
        let bucket = self.bucket()?;
        let mut blocks = lock(&last.blocks);
        promote(&mut blocks, bucket);
        let block = blocks
            .current
            .as_mut()
            .filter(|b| b.bucket == bucket && b.serves(hits))?;
        if block.left == 0 {
            return None;
        }
        block.left -= 1;
        block.used += 1;
        block.info.remaining = block.info.remaining.saturating_sub(1);
        Some(Grant {
            at_ms: bucket * BUCKET_MS,
            at_unix_ms: bucket * BUCKET_MS,
            counted: Counted::Shared,
            info: block.info,
        })
    }

    /// `hits` counted in this process against `limits` (in the same order).
    fn local(&self, hits: &[(&Arc<Counter>, u32)], limits: impl Fn(usize) -> u32, now: Now) -> Result<Grant, Refusal> {
        let mut windows: [(&SharedWindow, u32); MAX_HITS] = [(&hits[0].0.window, 0); MAX_HITS];
        for (i, (slot, (c, _))) in windows.iter_mut().zip(hits).enumerate() {
            *slot = (&c.window, limits(i));
        }
        self.local.acquire(&windows[..hits.len().min(MAX_HITS)], now)
    }

    /// What a decision does while the store is unavailable: its profile's `fallback`.
    fn fallback(&self, hits: &[(&Arc<Counter>, u32)], fallback: Fallback, now: Now) -> Result<Grant, Refusal> {
        let tightest = hits.iter().map(|&(_, n)| n).min().unwrap_or(u32::MAX);
        match fallback {
            Fallback::LocalShare(shares) => self.local(hits, |i| shares[i], now),
            Fallback::Allow => Ok(Grant {
                at_ms: now.mono_ms,
                at_unix_ms: now.unix_ms,
                counted: Counted::Nowhere,
                info: RateInfo {
                    limit: tightest,
                    remaining: tightest,
                    reset_secs: 0,
                },
            }),
            Fallback::Deny => Err(Refusal {
                index: hits.len().saturating_sub(1),
                info: RateInfo {
                    limit: tightest,
                    remaining: 0,
                    reset_secs: 1,
                },
                why: Refused::StoreUnavailable,
            }),
        }
    }

    /// Takes `hits` on the store for a request that found no block (one round trip); while
    /// the store is unavailable, does what `fallback` says. Without a store, counts exactly
    /// in this process.
    pub async fn take(&self, hits: &[(&Arc<Counter>, u32)], fallback: Fallback, now: Now) -> Result<Grant, Refusal> {
        let Some((last, _)) = hits.last() else {
            return Err(Refusal::over_limit(
                0,
                RateInfo {
                    limit: 0,
                    remaining: 0,
                    reset_secs: 0,
                },
            ));
        };
        let Some(store) = &self.store else {
            return self.local(hits, |i| hits[i].1, now);
        };
        if !self.available.load(Ordering::Relaxed) {
            return self.fallback(hits, fallback, now);
        }
        let _one_at_a_time = last.refill.lock().await;
        if let Some(grant) = self.hit_from_block(hits) {
            return Ok(grant);
        }
        if let Some(bucket) = self.bucket()
            && let Some(memo) = lock(&last.blocks).refused.as_ref().filter(|m| m.matches(bucket, hits))
        {
            return Err(memo.refusal);
        }
        let (want, release) = {
            let mut blocks = lock(&last.blocks);
            let demand = blocks.current.as_ref().map_or(0, |b| b.used);
            let same = blocks.unused.iter().position(|u| {
                u.keys.len() == hits.len() && u.keys.iter().zip(hits).all(|(a, (b, _))| Arc::ptr_eq(a, b))
            });
            (
                demand.saturating_mul(2).clamp(1, self.options.max_block),
                same.map(|i| blocks.unused.swap_remove(i)),
            )
        };
        let keys: Vec<&str> = hits.iter().map(|(c, _)| c.key.as_str()).collect();
        let spans: Vec<u8> = hits.iter().map(|(c, _)| c.span).collect();
        let limits: Vec<u32> = hits.iter().map(|&(_, n)| n).collect();
        let call = Take {
            keys: &keys,
            limits: &limits,
            want,
            divisor: self.options.divisor,
            lead: 0,
            release: release.as_ref().map_or((0, 0), |u| (u.bucket, u.hits)),
            spans: &spans,
        };
        let taken = match self.round_trip(store, &call).await {
            Ok(taken) => taken,
            Err(e) => {
                if let Some(u) = release {
                    owe(&mut lock(&last.blocks), u.bucket, u.hits, &u.keys);
                }
                self.failed(&e);
                return self.fallback(hits, fallback, now);
            }
        };
        if let Some(index) = taken.refused {
            let refusal = Refusal::over_limit(
                index,
                RateInfo {
                    limit: limits[index],
                    remaining: 0,
                    reset_secs: taken.reset_ms.div_ceil(1000),
                },
            );
            lock(&last.blocks).refused = Some(Memo {
                bucket: taken.bucket,
                keys: hits.iter().map(|(c, _)| Arc::clone(c)).collect(),
                limits,
                refusal,
            });
            return Err(refusal);
        }
        let info = RateInfo {
            limit: limits[taken.tightest],
            remaining: taken.remaining + taken.taken.saturating_sub(1),
            reset_secs: taken.reset_ms.div_ceil(1000),
        };
        let block = Block {
            bucket: taken.bucket,
            left: taken.taken.saturating_sub(1),
            used: 1,
            keys: hits.iter().map(|(c, _)| Arc::clone(c)).collect(),
            limits,
            info,
        };
        let mut blocks = lock(&last.blocks);
        if let Some(old) = blocks.current.replace(block) {
            retire(&mut blocks, old);
        }
        Ok(Grant {
            at_ms: taken.bucket * BUCKET_MS,
            at_unix_ms: taken.bucket * BUCKET_MS,
            counted: Counted::Shared,
            info,
        })
    }

    /// The shared store, when there is one.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// Remembers a signature on the store: whether it was seen before. `Unavailable` at once
    /// (no round trip) while the store is known to be down, or without a store.
    pub async fn remember(&self, entry: &ReplayEntry<'_>) -> SharedReplay {
        let Some(store) = &self.store else {
            return SharedReplay::Unavailable;
        };
        if !self.available.load(Ordering::Relaxed) {
            return SharedReplay::Unavailable;
        }
        let call = Remember::new(self.options.replay_prefix, entry);
        let start = Instant::now();
        let result = store.remember(&call).await;
        (self.on_round_trip)(start.elapsed(), result.is_err());
        if result.is_ok() {
            self.failures.store(0, Ordering::Relaxed);
        }
        match result {
            Ok(Remembered::Fresh) => SharedReplay::Fresh,
            Ok(Remembered::Seen) => SharedReplay::Seen,
            Ok(Remembered::Full) => SharedReplay::Full,
            Err(e) => {
                self.failed(&e);
                SharedReplay::Unavailable
            }
        }
    }

    async fn round_trip(&self, store: &Store, call: &Take<'_>) -> Result<Taken, StoreError> {
        let sent = self.mono_ms();
        let start = Instant::now();
        let result = store.take(call).await;
        (self.on_round_trip)(start.elapsed(), result.is_err());
        if result.is_ok() {
            self.failures.store(0, Ordering::Relaxed);
        }
        if let Ok(taken) = &result {
            let received = self.mono_ms();
            let local = (sent + received) / 2;
            self.offset_ms
                .store(taken.now_ms as i64 - local as i64, Ordering::Relaxed);
        }
        result
    }

    /// Runs until the process ends: reserves each bucket's blocks ahead (about 20 ms before
    /// the bucket begins), gives back what ended blocks did not use, and probes an
    /// unavailable store every second.
    pub async fn run(self: Arc<Self>) {
        let Some(store) = &self.store else { return };
        loop {
            if !self.available.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.probe(store).await;
                continue;
            }
            let Some(bucket) = self.bucket() else {
                // Learn the store's clock.
                self.probe(store).await;
                tokio::time::sleep(Duration::from_millis(BUCKET_MS)).await;
                continue;
            };
            let into = (self.mono_ms() as i64 + self.offset_ms.load(Ordering::Relaxed)).max(0) as u64 % BUCKET_MS;
            let wait = (BUCKET_MS - 20).saturating_sub(into);
            tokio::time::sleep(Duration::from_millis(wait.max(1))).await;
            let mut counters: Vec<Arc<Counter>> = lock(&self.counters).values().cloned().collect();
            counters.extend(lock(&self.consumers).values().cloned());
            for counter in counters {
                self.ahead(store, &counter, bucket).await;
            }
            // Into the next bucket before looking again.
            let into = (self.mono_ms() as i64 + self.offset_ms.load(Ordering::Relaxed)).max(0) as u64 % BUCKET_MS;
            if into >= BUCKET_MS - 20 {
                tokio::time::sleep(Duration::from_millis(BUCKET_MS - into + 1)).await;
            }
        }
    }

    async fn probe(&self, store: &Store) {
        let key = format!("{}probe", self.options.prefix);
        let call = Take {
            keys: &[key.as_str()],
            limits: &[1],
            want: 0,
            divisor: 1,
            lead: 1,
            release: (0, 0),
            spans: &[],
        };
        match self.round_trip(store, &call).await {
            Ok(_) => self.set_available(true, None),
            // The probe confirms: no second failure is waited for.
            Err(e) => self.set_available(false, Some(&e)),
        }
    }

    /// For `counter` in bucket `bucket`: reserves the next bucket's block when this one saw
    /// demand, and gives back ended blocks' unused hits.
    async fn ahead(&self, store: &Store, counter: &Arc<Counter>, bucket: u64) {
        let Ok(_one_at_a_time) = counter.refill.try_lock() else {
            return;
        };
        let (reserve, mut owed) = {
            let mut blocks = lock(&counter.blocks);
            promote(&mut blocks, bucket);
            if blocks.refused.as_ref().is_some_and(|m| m.bucket < bucket) {
                blocks.refused = None;
            }
            if blocks.current.as_ref().is_some_and(|b| b.bucket < bucket)
                && let Some(ended) = blocks.current.take()
            {
                retire(&mut blocks, ended);
            }
            let reserve = blocks
                .current
                .as_ref()
                .filter(|b| b.used > 0 && blocks.next.is_none())
                .cloned();
            (reserve, std::mem::take(&mut blocks.unused))
        };
        if let Some(template) = reserve {
            let release = owed
                .iter()
                .position(|u| u.same_keys(&template.keys))
                .map(|i| owed.swap_remove(i));
            let want = template.used.saturating_mul(2).min(self.options.max_block);
            let keys: Vec<&str> = template.keys.iter().map(|c| c.key.as_str()).collect();
            let spans: Vec<u8> = template.keys.iter().map(|c| c.span).collect();
            let call = Take {
                keys: &keys,
                limits: &template.limits,
                want,
                divisor: self.options.divisor,
                lead: 1,
                release: release.as_ref().map_or((0, 0), |u| (u.bucket, u.hits)),
                spans: &spans,
            };
            match self.round_trip(store, &call).await {
                Ok(taken) if taken.taken > 0 => {
                    let info = RateInfo {
                        limit: template.limits[taken.tightest],
                        remaining: taken.remaining + taken.taken,
                        reset_secs: taken.reset_ms.div_ceil(1000),
                    };
                    lock(&counter.blocks).next = Some(Block {
                        bucket: taken.bucket,
                        left: taken.taken,
                        used: 0,
                        info,
                        ..template
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    owed.extend(release);
                    self.keep_owed(counter, owed);
                    self.failed(&e);
                    return;
                }
            }
        }
        while let Some(u) = owed.pop() {
            let keys: Vec<&str> = u.keys.iter().map(|c| c.key.as_str()).collect();
            let spans: Vec<u8> = u.keys.iter().map(|c| c.span).collect();
            let limits = vec![u32::MAX; keys.len()];
            let call = Take {
                keys: &keys,
                limits: &limits,
                want: 0,
                divisor: 1,
                lead: 1,
                release: (u.bucket, u.hits),
                spans: &spans,
            };
            if let Err(e) = self.round_trip(store, &call).await {
                owed.push(u);
                self.keep_owed(counter, owed);
                self.failed(&e);
                return;
            }
        }
    }

    /// Puts back what could not be given back yet.
    fn keep_owed(&self, counter: &Counter, owed: Vec<Unused>) {
        let mut blocks = lock(&counter.blocks);
        for u in owed {
            owe(&mut blocks, u.bucket, u.hits, &u.keys);
        }
    }
}

impl SharedLimiter {
    /// The counter `id`, counting in `window` while the store is unavailable. Its key: the
    /// prefix, scope and name (a quota's also its period); a consumer by a hash of who it is
    /// (a username or an API key is not written into the store).
    fn make(&self, id: CounterId<'_>, window: SharedWindow) -> Arc<Counter> {
        let mut key = format!("{}{}:", self.options.prefix, id.scope.as_str());
        if let Span::Period(_) = id.span {
            key.push_str(id.span.as_str());
            key.push(':');
        }
        key.push_str(id.name);
        if let Some(consumer) = id.consumer {
            let digest: [u8; 32] = match &self.options.consumer_key {
                Some(k) => {
                    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(k).expect("HMAC takes any key length");
                    mac.update(id.name.as_bytes());
                    mac.update(b"\0");
                    mac.update(consumer.as_bytes());
                    mac.finalize().into_bytes().into()
                }
                None => Sha256::new()
                    .chain_update(id.name.as_bytes())
                    .chain_update(b"\0")
                    .chain_update(consumer.as_bytes())
                    .finalize()
                    .into(),
            };
            key.push(':');
            for b in &digest[..16] {
                key.push_str(&format!("{b:02x}"));
            }
        }
        Arc::new(Counter {
            key,
            span: span_code(id.span),
            window,
            blocks: Mutex::default(),
            refill: tokio::sync::Mutex::new(()),
        })
    }

    /// Consumers with counters now.
    pub fn consumers(&self) -> usize {
        lock(&self.consumers).len()
    }
}

impl Counter {
    /// Its key in the store.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// Whether a consumer's counter may be dropped: nobody holds it, it holds no block of the
/// store and owes it nothing, and its local window is empty.
fn idle(counter: &Arc<Counter>, now: Now) -> bool {
    // Only the table holds it (a block names its counters, itself included: a counter with
    // a block is never idle, and none is dropped in a cycle).
    if Arc::strong_count(counter) > 1 {
        return false;
    }
    let blocks = lock(&counter.blocks);
    blocks.current.is_none()
        && blocks.next.is_none()
        && blocks.unused.is_empty()
        && blocks.refused.is_none()
        && lock(&counter.window).is_empty_at(now)
}

/// Makes the block of `bucket` current, retiring an ended one.
fn promote(blocks: &mut Blocks, bucket: u64) {
    if blocks.current.as_ref().is_some_and(|b| b.bucket >= bucket) {
        return;
    }
    if blocks.next.as_ref().is_some_and(|b| b.bucket <= bucket)
        && let Some(next) = blocks.next.take()
        && let Some(old) = blocks.current.replace(next)
    {
        retire(blocks, old);
    }
}

/// Notes an ended block's unused hits, to give back.
fn retire(blocks: &mut Blocks, old: Block) {
    owe(blocks, old.bucket, old.left, &old.keys);
}

impl Limiter for SharedLimiter {
    type Counter = Arc<Counter>;

    fn counter(&self, id: CounterId<'_>) -> Self::Counter {
        lock(&self.counters)
            .entry(CounterKey::new(&id))
            .or_insert_with(|| self.make(id, self.local.counter(id)))
            .clone()
    }

    fn consumer(&self, id: CounterId<'_>, now: Now) -> Option<Self::Counter> {
        let window = || self.local.consumer(id, now);
        lock(&self.consumers).get_or_make(
            CounterKey::new(&id),
            now.mono_ms,
            |c| idle(c, now),
            // The local window is only needed while the store is unavailable; without room
            // for it, the consumer is refused then (fail closed) but counted on the store now.
            || {
                self.make(
                    id,
                    window().unwrap_or_else(|| Arc::new(Mutex::new(Window::new(id.span)))),
                )
            },
        )
    }

    fn kept_consumer(&self, id: CounterId<'_>) -> Option<Self::Counter> {
        lock(&self.consumers).get(&CounterKey::new(&id))
    }

    fn counts_quotas(&self) -> bool {
        self.store.is_some()
    }

    /// Counts in this process against the full limits (what a sidecar without a store does).
    fn acquire(&self, hits: &[(&Self::Counter, u32)], now: Now) -> Result<Grant, Refusal> {
        self.local(hits, |i| hits[i].1, now)
    }

    /// Without a store: at once, in this process. With one: a hit from this sidecar's block,
    /// or `None` (the caller [`take`](SharedLimiter::take)s, which also applies the profile's
    /// fallback while the store is unavailable).
    fn try_acquire(&self, hits: &[(&Self::Counter, u32)], now: Now) -> Option<Result<Grant, Refusal>> {
        if self.store.is_none() {
            return Some(self.acquire(hits, now));
        }
        if !self.available.load(Ordering::Relaxed) {
            return None;
        }
        self.hit_from_block(hits).map(Ok)
    }

    fn shares_replays(&self) -> bool {
        self.store.is_some()
    }

    fn refund(&self, counters: &[&Self::Counter], grant: &Grant) {
        match grant.counted {
            Counted::Nowhere => return,
            Counted::Local => {
                let windows: Vec<&SharedWindow> = counters.iter().map(|c| &c.window).collect();
                self.local.refund(&windows, grant);
                return;
            }
            Counted::Shared => {}
        }
        // Back into the block it came from (given back with its unused hits), or owed.
        let Some(last) = counters.last() else { return };
        let bucket = grant.at_ms / BUCKET_MS;
        let mut blocks = lock(&last.blocks);
        // A hit given back may be one the store would now admit.
        blocks.refused = None;
        match blocks.current.as_mut().filter(|b| b.bucket == bucket) {
            Some(block) => {
                block.left += 1;
                block.used = block.used.saturating_sub(1);
            }
            None => {
                let keys: Vec<Arc<Counter>> = counters.iter().map(|c| Arc::clone(c)).collect();
                owe(&mut blocks, bucket, 1, &keys);
            }
        }
    }

    fn replay_cache(&self, profile: &str) -> Arc<ReplayCache> {
        self.local.replay_cache(profile)
    }

    fn jwks(&self, uri: &str) -> Arc<portcullis_policy::oauth2::KeySlot> {
        self.local.jwks(uri)
    }

    fn grants(&self, owner: &str) -> Arc<portcullis_policy::oauth2::grants::GrantBook> {
        self.local.grant_book(owner, self.store.is_some())
    }

    fn discovery(&self, url: &str) -> Arc<portcullis_policy::oauth2::login::DiscoverySlot> {
        self.local.discovery(url)
    }

    fn introspection(
        &self,
        profile: &str,
        url: &str,
    ) -> Arc<portcullis_policy::oauth2::introspection::IntrospectionCache> {
        self.local.introspection(profile, url)
    }

    fn throttle(&self) -> Option<&portcullis_policy::throttle::Throttle> {
        self.local.throttle()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy::Scope;

    fn consumer_key(options: Options, who: &str) -> String {
        let l = SharedLimiter::new(InMemoryLimiter::new(), None, options);
        let id = CounterId {
            scope: Scope::Consumer,
            name: "demo/p",
            consumer: Some(who),
            span: Span::Minute,
        };
        l.consumer(id, Now::from(0)).unwrap().key().to_owned()
    }

    /// A consumer is named in the store by an HMAC keyed with the store's password: a reader of
    /// the keys alone can neither read nor confirm a guessed username or API key.
    #[test]
    fn consumers_are_named_by_a_keyed_hash() {
        let keyed = |k: &[u8]| Options {
            consumer_key: Some(k.into()),
            ..Options::default()
        };
        let plain = consumer_key(Options::default(), "alice");
        let a = consumer_key(keyed(b"store password"), "alice");
        assert!(a.starts_with("portcullis:{limits}:consumer:demo/p:"), "{a}");
        assert!(!a.contains("alice"));
        assert_ne!(a, plain);
        assert_ne!(a, consumer_key(keyed(b"another password"), "alice"));
        assert_eq!(
            a,
            consumer_key(keyed(b"store password"), "alice"),
            "every replica names it alike"
        );
        let bare: String = Sha256::digest(b"alice")[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!plain.ends_with(&bare), "not the bare SHA-256 of the identity");
    }
}
