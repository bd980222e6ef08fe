//! Failed-authentication throttling: passwords, API keys and signing keys cannot be guessed
//! at line rate.
//!
//! Every refused guessable credential (a wrong Basic password, an unknown API key or key
//! signature) is counted against the client address and, for Basic, against the username it
//! claimed. Bearer tokens and HTTP message signatures are not counted: they cannot be guessed,
//! and replays or stale signatures are ordinary failures of honest clients. Within one window (a minute from
//! the first failure) an address may fail [`Budget::per_address`] times and a user
//! [`Budget::per_user`] times; beyond that, requests from that address or for that user are
//! answered `429` **before their credentials are looked at**, right ones included, until the
//! window ends, so the throttle is no oracle either. Successful requests cost nothing and
//! reset nothing (a correct guess inside a burst of failures must not clear the count).
//!
//! IPv6 clients are counted per /64 (one host usually owns a whole /64); users by a keyed
//! SipHash of the name, so no credential is kept in memory. The table is bounded
//! ([`MAX_ENTRIES`], over 16 shards): when a shard is full, expired entries go first, then
//! the oldest eighth. With no failure anywhere the check is one atomic load.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::ip::client_network;

/// Most entries kept (addresses and users together).
pub const MAX_ENTRIES: usize = 64 * 1024;
const SHARDS: usize = 16;
const PER_SHARD: usize = MAX_ENTRIES / SHARDS;

/// How many failures are tolerated, and over how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Failures one client address (IPv6: one /64) may have in a window (0: no limit).
    pub per_address: u32,
    /// Failures one claimed user may have in a window, from any address (0: no limit).
    pub per_user: u32,
    /// The window, in milliseconds, from its first failure.
    pub window_ms: u64,
}

impl Default for Budget {
    /// 30 failures per address and 10 per user in a minute.
    fn default() -> Self {
        Self {
            per_address: 30,
            per_user: 10,
            window_ms: 60_000,
        }
    }
}

/// Who a failure is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    /// An IPv4 address, or the /64 of an IPv6 one.
    Address(u128),
    /// The keyed hash of a claimed user.
    User(u64),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: u64,
    failures: u32,
}

/// The failure counts of one engine, kept across configuration reloads.
#[derive(Debug)]
pub struct Throttle {
    budget: Budget,
    shards: Vec<Mutex<HashMap<Key, Entry>>>,
    /// Entries in all shards: zero means nobody failed, and checks cost one load.
    entries: AtomicUsize,
    hasher: RandomState,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new(Budget::default())
    }
}

impl Throttle {
    /// An empty throttle with `budget`.
    pub fn new(budget: Budget) -> Self {
        Self {
            budget,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            entries: AtomicUsize::new(0),
            hasher: RandomState::new(),
        }
    }

    /// The budget in force.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// When `address`, or `user` when given, spent its budget: the seconds until its window
    /// ends (at least 1). `None`: go ahead and check the credentials.
    pub fn blocked(&self, address: IpAddr, user: Option<&str>, now_ms: u64) -> Option<u64> {
        if self.entries.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let by_address = self.spent(Key::Address(address_key(address)), self.budget.per_address, now_ms);
        let by_user = user.and_then(|u| self.spent(self.user_key(u), self.budget.per_user, now_ms));
        by_address.max(by_user)
    }

    /// Counts one refused credential from `address`, claiming `user` when given.
    pub fn failed(&self, address: IpAddr, user: Option<&str>, now_ms: u64) {
        if self.budget.per_address != 0 {
            self.count(Key::Address(address_key(address)), now_ms);
        }
        if let Some(user) = user.filter(|_| self.budget.per_user != 0) {
            self.count(self.user_key(user), now_ms);
        }
    }

    fn user_key(&self, user: &str) -> Key {
        Key::User(self.hasher.hash_one(user))
    }

    fn shard(&self, key: &Key) -> &Mutex<HashMap<Key, Entry>> {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    fn spent(&self, key: Key, budget: u32, now_ms: u64) -> Option<u64> {
        let shard = self.shard(&key).lock().unwrap_or_else(|p| p.into_inner());
        let entry = shard.get(&key)?;
        let ends = entry.window_start.saturating_add(self.budget.window_ms);
        (now_ms < ends && entry.failures >= budget).then(|| (ends - now_ms).div_ceil(1000).max(1))
    }

    fn count(&self, key: Key, now_ms: u64) {
        let window = self.budget.window_ms;
        let mut shard = self.shard(&key).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = shard.get_mut(&key) {
            if now_ms >= entry.window_start.saturating_add(window) {
                *entry = Entry {
                    window_start: now_ms,
                    failures: 1,
                };
            } else {
                entry.failures = entry.failures.saturating_add(1);
            }
            return;
        }
        if shard.len() >= PER_SHARD {
            let before = shard.len();
            shard.retain(|_, e| now_ms < e.window_start.saturating_add(window));
            if shard.len() >= PER_SHARD {
                // Still full of live windows: the oldest eighth goes, so this work is done
                // once per PER_SHARD / 8 new entries, not per entry.
                let mut starts: Vec<u64> = shard.values().map(|e| e.window_start).collect();
                let cut = starts.len() / 8;
                let (_, threshold, _) = starts.select_nth_unstable(cut);
                let threshold = *threshold;
                shard.retain(|_, e| e.window_start > threshold);
            }
            self.entries.fetch_sub(before - shard.len(), Ordering::Relaxed);
        }
        shard.insert(
            key,
            Entry {
                window_start: now_ms,
                failures: 1,
            },
        );
        self.entries.fetch_add(1, Ordering::Relaxed);
    }

    /// Entries held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The client's network ([`client_network`]: IPv6 by its /64) as one number, IPv4 mapped
/// into IPv6.
fn address_key(address: IpAddr) -> u128 {
    match client_network(address) {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const BUDGET: Budget = Budget {
        per_address: 3,
        per_user: 2,
        window_ms: 60_000,
    };

    #[test]
    fn an_address_is_blocked_after_its_budget_until_the_window_ends() {
        let t = Throttle::new(BUDGET);
        let a = ip("203.0.113.7");
        assert_eq!(t.blocked(a, None, 0), None);
        for n in 0..3 {
            assert_eq!(t.blocked(a, None, n * 1000), None, "failure {n}");
            t.failed(a, None, n * 1000);
        }
        assert_eq!(t.blocked(a, None, 2_500), Some(58));
        assert_eq!(t.blocked(a, None, 59_999), Some(1));
        assert_eq!(t.blocked(ip("203.0.113.8"), None, 2_500), None, "another address");
        assert_eq!(t.blocked(a, None, 60_000), None, "the window ended");
        t.failed(a, None, 60_000);
        assert_eq!(t.blocked(a, None, 60_001), None, "a new window starts at one failure");
    }

    #[test]
    fn a_user_is_blocked_from_every_address() {
        let t = Throttle::new(BUDGET);
        t.failed(ip("10.0.0.1"), Some("alice"), 0);
        t.failed(ip("10.0.0.2"), Some("alice"), 1);
        assert!(t.blocked(ip("10.0.0.3"), Some("alice"), 2).is_some());
        assert_eq!(t.blocked(ip("10.0.0.3"), Some("bob"), 2), None);
        assert_eq!(t.blocked(ip("10.0.0.3"), None, 2), None);
    }

    #[test]
    fn a_zero_budget_is_no_limit_and_keeps_nothing() {
        let t = Throttle::new(Budget {
            per_address: 0,
            per_user: 2,
            ..BUDGET
        });
        for n in 0..10 {
            t.failed(ip("10.0.0.1"), None, n);
        }
        assert_eq!(t.blocked(ip("10.0.0.1"), None, 10), None);
        assert_eq!(t.len(), 0);
        t.failed(ip("10.0.0.1"), Some("alice"), 11);
        t.failed(ip("10.0.0.1"), Some("alice"), 12);
        assert!(
            t.blocked(ip("10.0.0.1"), Some("alice"), 13).is_some(),
            "the user budget still holds"
        );
        assert_eq!(t.blocked(ip("10.0.0.1"), None, 13), None);
    }

    #[test]
    fn ipv6_clients_are_counted_per_slash_64() {
        let t = Throttle::new(BUDGET);
        for i in 1..=3 {
            t.failed(ip(&format!("2001:db8:1:2::{i}")), None, 0);
        }
        assert!(t.blocked(ip("2001:db8:1:2:ffff::9"), None, 1).is_some());
        assert_eq!(t.blocked(ip("2001:db8:1:3::1"), None, 1), None);
        assert_eq!(address_key(ip("::ffff:10.1.2.3")), address_key(ip("10.1.2.3")));
    }

    #[test]
    fn the_table_is_bounded() {
        let t = Throttle::new(BUDGET);
        for i in 0..(MAX_ENTRIES as u32 + 5_000) {
            t.failed(IpAddr::V4(i.into()), None, u64::from(i));
        }
        assert!(t.len() <= MAX_ENTRIES, "{}", t.len());
        let held: usize = t.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert_eq!(held, t.len());
    }

    #[test]
    fn nothing_failed_nothing_held() {
        let t = Throttle::default();
        assert!(t.is_empty());
        assert_eq!(t.blocked(ip("10.0.0.1"), Some("alice"), 0), None);
        assert!(t.is_empty());
    }
}
