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
    /// Signature digest to (expiry, owner).
    entries: HashMap<[u8; 16], (u64, u64)>,
    /// Entries held per owner (the hash of a key id; 0: none given).
    owners: HashMap<u64, usize>,
    /// The earliest expiry in `entries` (a lower bound): nothing to prune before it.
    earliest: u64,
}

impl Shard {
    /// Drops the entries whose window ended at `now` (when any may have).
    fn prune(&mut self, now: u64) {
        if self.earliest > now {
            return;
        }
        self.entries.retain(|_, (exp, _)| *exp > now);
        self.earliest = self.entries.values().map(|(exp, _)| *exp).min().unwrap_or(u64::MAX);
        self.owners.clear();
        for (_, owner) in self.entries.values() {
            *self.owners.entry(*owner).or_default() += 1;
        }
    }

    fn held_by(&self, owner: u64) -> usize {
        self.owners.get(&owner).copied().unwrap_or(0)
    }
}

/// Who records a signature, and how much of the cache it may hold.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    /// The key id that signed.
    pub key_id: &'a str,
    /// Most live signatures this key may hold (across the cache).
    pub share: usize,
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
                        owners: HashMap::new(),
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
        self.insert(signature, None, expires_at, now)
    }

    /// [`check_and_insert`](Self::check_and_insert) for a signature of `owner`, which may hold
    /// at most `owner.share` live entries: one key holder that fills its share is refused
    /// ([`ReplayError::Full`]) while every other key keeps its room.
    pub fn check_and_insert_for(
        &self,
        owner: Owner<'_>,
        signature: &[u8],
        expires_at: u64,
        now: u64,
    ) -> Result<(), ReplayError> {
        self.insert(signature, Some(owner), expires_at, now)
    }

    fn insert(&self, signature: &[u8], owner: Option<Owner<'_>>, expires_at: u64, now: u64) -> Result<(), ReplayError> {
        let d = digest::digest(&digest::SHA256, signature);
        let mut key = [0u8; 16];
        key.copy_from_slice(&d.as_ref()[..16]);
        let shard = &self.shards[key[0] as usize % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        if shard.entries.get(&key).is_some_and(|&(exp, _)| exp > now) {
            return Err(ReplayError::Replay);
        }
        if expires_at <= now {
            if let Some((_, held)) = shard.entries.remove(&key)
                && let Some(n) = shard.owners.get_mut(&held)
            {
                *n = n.saturating_sub(1);
            }
            return Ok(());
        }
        // Signatures spread evenly over the shards: a share per shard is the share overall.
        let (owner, owner_room) = match owner {
            Some(o) => (owner_hash(o.key_id), o.share.div_ceil(SHARDS).max(1)),
            None => (0, usize::MAX),
        };
        if !shard.entries.contains_key(&key) {
            if shard.entries.len() >= self.per_shard || shard.held_by(owner) >= owner_room {
                shard.prune(now);
            }
            if shard.entries.len() >= self.per_shard || shard.held_by(owner) >= owner_room {
                return Err(ReplayError::Full);
            }
        }
        if let Some((_, previous)) = shard.entries.insert(key, (expires_at, owner))
            && let Some(n) = shard.owners.get_mut(&previous)
        {
            *n = n.saturating_sub(1);
        }
        *shard.owners.entry(owner).or_default() += 1;
        shard.earliest = shard.earliest.min(expires_at);
        Ok(())
    }
}

/// A key id's slot in the owner counts (0 is kept for signatures without an owner).
fn owner_hash(key_id: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
        .hash_one(key_id)
        .max(1)
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

    #[test]
    fn one_key_cannot_take_the_room_of_the_others() {
        let c = ReplayCache::new(16 * 64);
        let greedy = Owner {
            key_id: "greedy",
            share: 16 * 8,
        };
        let honest = Owner {
            key_id: "honest",
            share: 16 * 8,
        };
        let mut admitted = 0;
        for i in 0..10_000u32 {
            if c.check_and_insert_for(greedy, &i.to_be_bytes(), 1000, 10).is_ok() {
                admitted += 1;
            }
        }
        assert!(admitted <= 16 * 8, "{admitted} held by one key");
        assert!(admitted >= 16 * 4, "the key gets most of its share: {admitted}");
        for i in 0..50u32 {
            let sig = format!("honest-{i}");
            c.check_and_insert_for(honest, sig.as_bytes(), 1000, 10)
                .unwrap_or_else(|e| panic!("honest signature {i}: {e}"));
        }
        // Replays of the greedy key are still refused as replays, and its room comes back
        // once its signatures expire.
        assert_eq!(
            c.check_and_insert_for(greedy, &0u32.to_be_bytes(), 1000, 20),
            Err(ReplayError::Replay)
        );
        c.check_and_insert_for(greedy, b"later", 2000, 1001).unwrap();
    }
}
