//! The verified-token cache: token bytes -> the verified claims, bounded by
//! count, one per policy.
//!
//! It is split into shards, each behind its own mutex, picked by the
//! token's hash: two requests contend only when their tokens land in the
//! same shard, and then only for one hash-map lookup and an `Arc` clone.
//! No signature work and no I/O happen under a lock (the key is allocated
//! before taking it); the
//! expiry is checked by the caller on every hit, outside the lock.

use super::Verified;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

const SHARDS: usize = 32;

type Shard = HashMap<Box<[u8]>, Arc<Verified>>;

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
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard,
            hasher: RandomState::new(),
        })
    }

    fn shard(&self, token: &[u8]) -> std::sync::MutexGuard<'_, Shard> {
        let i = self.hasher.hash_one(token) as usize % SHARDS;
        // A panic while holding a shard lock cannot leave the map in a
        // state worse than missing entries.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, token: &[u8]) -> Option<Arc<Verified>> {
        self.shard(token).get(token).cloned()
    }

    pub fn insert(&self, token: &[u8], v: Arc<Verified>) {
        let key: Box<[u8]> = token.into();
        let now = super::claims::now();
        let mut shard = self.shard(token);
        if shard.len() >= self.per_shard {
            // Expired entries first; failing that, any one entry (the
            // map's order is as good as random).
            shard.retain(|_, v| v.valid_until >= now);
            if shard.len() >= self.per_shard {
                if let Some(k) = shard.keys().next().cloned() {
                    shard.remove(&k);
                }
            }
        }
        shard.insert(key, v);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}
