//! The verified-token cache: token bytes -> the verified claims, bounded by
//! count, one per policy.
//!
//! It is split into shards, each behind its own mutex, picked by the
//! token's keyed hash. The hash is computed before the lock is taken and
//! the map is keyed by it, so a critical section is one integer-keyed
//! lookup, a comparison of the token bytes and an `Arc` clone: two
//! requests contend only when their tokens land in the same shard, and
//! then for tens of nanoseconds. No signature work and no I/O happen under
//! a lock; the expiry is checked by the caller on every hit, outside it.

use super::Verified;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

const SHARDS: usize = 32;

/// The map's keys are already SipHash outputs: pass them through.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys are hashed")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// hash -> (token, verified). Two tokens with one 64-bit keyed hash are
/// told apart by the stored bytes: the later simply replaces the earlier.
type Shard = HashMap<u64, (Box<[u8]>, Arc<Verified>), BuildHasherDefault<Prehashed>>;

pub struct Cache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    /// Keyed per process, so that nobody can aim tokens at one shard.
    hasher: RandomState,
}

impl Cache {
    /// `None` for size 0 (the cache disabled).
    pub fn new(size: usize) -> Option<Cache> {
        if size == 0 {
            return None;
        }
        let per_shard = size.div_ceil(SHARDS);
        Some(Cache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard,
            hasher: RandomState::new(),
        })
    }

    fn shard(&self, h: u64) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard lock cannot leave the map in a
        // state worse than missing entries.
        // Middle bits: the map itself uses the low bits (bucket) and the
        // top 7 (tag) of the same hash.
        self.shards[(h >> 32) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, token: &[u8]) -> Option<Arc<Verified>> {
        let h = self.hasher.hash_one(token);
        let shard = self.shard(h);
        match shard.get(&h) {
            Some((t, v)) if **t == *token => Some(v.clone()),
            _ => None,
        }
    }

    pub fn insert(&self, token: &[u8], v: Arc<Verified>) {
        let h = self.hasher.hash_one(token);
        let entry = (Box::<[u8]>::from(token), v);
        let now = super::claims::now();
        let mut shard = self.shard(h);
        if shard.len() >= self.per_shard && !shard.contains_key(&h) {
            // Expired entries first; failing that, any one entry (the
            // map's order is as good as random).
            shard.retain(|_, (_, v)| v.valid_until >= now);
            if shard.len() >= self.per_shard {
                if let Some(k) = shard.keys().next().copied() {
                    shard.remove(&k);
                }
            }
        }
        shard.insert(h, entry);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}
