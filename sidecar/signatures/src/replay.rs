//! Replay protection: a bounded cache of signatures seen inside their validity window.

use std::collections::HashMap;
use std::sync::Mutex;

use ring::digest;

/// Why [`ReplayCache::check_and_insert`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The signature was already seen and its window has not ended.
    #[error("signature replayed")]
    Replay,
    /// Every slot holds a live entry: refused rather than forget one (fails closed).
    #[error("replay cache full")]
    Full,
}

impl From<ReplayError> for crate::Error {
    fn from(e: ReplayError) -> Self {
        match e {
            ReplayError::Replay => crate::Error::Replay,
            ReplayError::Full => crate::Error::ReplayCacheFull,
        }
    }
}

const SHARDS: usize = 16;

struct Shard {
    entries: HashMap<[u8; 16], u64>,
    /// The earliest expiry in `entries` (a lower bound): nothing to prune before it.
    earliest: u64,
}

/// A bounded set of signature values with their expiry, split into 16 shards each behind its
/// own mutex. Entries are keyed by SHA-256 of the signature (truncated to 128 bits).
///
/// It never evicts an entry still inside its window: when a shard is full of live entries the
/// insert fails with [`ReplayError::Full`]. Expired entries are pruned when a shard fills.
/// Capacity is split evenly over the shards (rounded up).
pub struct ReplayCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

impl std::fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayCache")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .finish()
    }
}

impl ReplayCache {
    /// A cache holding at most about `capacity` live signatures (at least one per shard).
    pub fn new(capacity: usize) -> ReplayCache {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        ReplayCache {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        entries: HashMap::new(),
                        earliest: u64::MAX,
                    })
                })
                .collect(),
            per_shard,
        }
    }

    /// The total number of slots.
    pub fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }

    /// Entries held (live or not yet pruned).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).entries.len())
            .sum()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records `signature` as seen until `expires_at` (Unix seconds). Refuses a signature
    /// already seen whose entry is still live at `now`, and refuses anything when its shard is
    /// full of live entries. A signature whose window already ended (`expires_at <= now`) is
    /// not recorded: verification refuses it as stale anyway.
    pub fn check_and_insert(&self, signature: &[u8], expires_at: u64, now: u64) -> Result<(), ReplayError> {
        let d = digest::digest(&digest::SHA256, signature);
        let mut key = [0u8; 16];
        key.copy_from_slice(&d.as_ref()[..16]);
        let shard = &self.shards[key[0] as usize % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        if shard.entries.get(&key).is_some_and(|&exp| exp > now) {
            return Err(ReplayError::Replay);
        }
        if expires_at <= now {
            shard.entries.remove(&key);
            return Ok(());
        }
        if !shard.entries.contains_key(&key) && shard.entries.len() >= self.per_shard {
            if shard.earliest <= now {
                shard.entries.retain(|_, exp| *exp > now);
                shard.earliest = shard.entries.values().copied().min().unwrap_or(u64::MAX);
            }
            if shard.entries.len() >= self.per_shard {
                return Err(ReplayError::Full);
            }
        }
        shard.entries.insert(key, expires_at);
        shard.earliest = shard.earliest.min(expires_at);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_replay_inside_window_and_accepts_after() {
        let c = ReplayCache::new(64);
        c.check_and_insert(b"sig-a", 200, 100).unwrap();
        assert_eq!(c.check_and_insert(b"sig-a", 200, 150), Err(ReplayError::Replay));
        c.check_and_insert(b"sig-b", 200, 150).unwrap();
        // After the window the same value is no longer a replay (and is stale anyway).
        c.check_and_insert(b"sig-a", 300, 201).unwrap();
        assert_eq!(c.check_and_insert(b"sig-a", 300, 250), Err(ReplayError::Replay));
    }

    #[test]
    fn fails_closed_when_full_and_prunes_expired() {
        let c = ReplayCache::new(16); // one slot per shard
        let mut live = Vec::new();
        let mut full = 0;
        for i in 0..200u32 {
            match c.check_and_insert(&i.to_be_bytes(), 1000, 10) {
                Ok(()) => live.push(i),
                Err(ReplayError::Full) => full += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(live.len(), 16, "every shard holds exactly one live entry");
        assert_eq!(full, 200 - 16);
        // Every live entry is still refused as a replay: nothing was evicted.
        for i in &live {
            assert_eq!(
                c.check_and_insert(&i.to_be_bytes(), 1000, 500),
                Err(ReplayError::Replay)
            );
        }
        // Once they expire, new signatures get in again.
        let mut admitted = 0;
        for i in 1000..1200u32 {
            if c.check_and_insert(&i.to_be_bytes(), 2000, 1001).is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 16);
    }

    #[test]
    fn concurrent_inserts_admit_each_signature_once() {
        let c = std::sync::Arc::new(ReplayCache::new(10_000));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    (0..1000u32)
                        .filter(|i| c.check_and_insert(&i.to_be_bytes(), 100, 1).is_ok())
                        .count()
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 1000);
    }
}
