//! Choosing a server. Every algorithm skips servers that are out of service
//! and servers already tried for this request; none takes a lock.

use super::Server;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastConn,
    RandomTwo,
    IpHash,
}

impl Balance {
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "round_robin" => Balance::RoundRobin,
            "least_conn" => Balance::LeastConn,
            "random_two" => Balance::RandomTwo,
            "ip_hash" => Balance::IpHash,
            _ => {
                return Err(format!(
                    "{s:?} is not one of round_robin, least_conn, random_two, ip_hash"
                ))
            }
        })
    }
}

pub struct Picker {
    balance: Balance,
    /// Smooth weighted round robin, precomputed: nginx's algorithm run once
    /// over a whole cycle, so a request only needs an atomic increment.
    sequence: Vec<usize>,
    next: AtomicUsize,
}

/// The order in which nginx's smooth weighted round robin visits servers over
/// one full cycle (sum of weights picks).
pub fn smooth_sequence(weights: &[u32]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| w as i64).sum();
    let mut current = vec![0i64; weights.len()];
    let mut seq = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        seq.push(best);
    }
    seq
}

fn is_tried(i: usize, tried: u64) -> bool {
    // At most 64 servers per upstream (the compiler refuses more).
    i < 64 && tried & (1 << i) != 0
}

fn usable(s: &Server, i: usize, tried: u64, now: u64) -> bool {
    !is_tried(i, tried) && s.health.available(now)
}

impl Picker {
    pub fn new(balance: Balance, weights: &[u32]) -> Self {
        Picker {
            balance,
            sequence: smooth_sequence(weights),
            next: AtomicUsize::new(0),
        }
    }

    pub fn pick(
        &self,
        servers: &[Arc<Server>],
        weights: &[u32],
        client: IpAddr,
        tried: u64,
        now: u64,
    ) -> Option<usize> {
        if servers.is_empty() {
            return None;
        }
        match self.balance {
            Balance::RoundRobin => self.round_robin(servers, tried, now),
            Balance::LeastConn => self.least_conn(servers, weights, tried, now),
            Balance::RandomTwo => self.random_two(servers, tried, now),
            Balance::IpHash => ip_hash(servers, weights, client, tried, now),
        }
    }

    fn round_robin(&self, servers: &[Arc<Server>], tried: u64, now: u64) -> Option<usize> {
        let n = self.sequence.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // Cheap path first: the scheduled server. Otherwise walk on through the
        // cycle so weights still hold among the remaining servers.
        for k in 0..n {
            let i = self.sequence[start.wrapping_add(k) % n];
            if usable(&servers[i], i, tried, now) {
                if k > 0 {
                    self.next.fetch_add(k, Ordering::Relaxed);
                }
                return Some(i);
            }
        }
        None
    }

    /// Fewest requests in flight relative to weight; ties go round robin.
    fn least_conn(
        &self,
        servers: &[Arc<Server>],
        weights: &[u32],
        mut tried: u64,
        now: u64,
    ) -> Option<usize> {
        let n = servers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // Each turn either returns or marks one more server as tried.
        for _ in 0..n {
            let mut best: Option<(usize, u64)> = None;
            for k in 0..n {
                let i = start.wrapping_add(k) % n;
                if is_tried(i, tried) || servers[i].health.is_down(now) {
                    continue;
                }
                // (inflight + 1) / weight, scaled to stay in integers.
                let load = (servers[i].inflight.load(Ordering::Relaxed) as u64 + 1) * 1_000_000
                    / u64::from(weights[i].max(1));
                if best.is_none_or(|(_, b)| load < b) {
                    best = Some((i, load));
                }
            }
            let (i, _) = best?;
            // Claims the trial after fail_timeout; another caller may have it.
            if servers[i].health.available(now) {
                return Some(i);
            }
            tried |= 1 << i;
        }
        None
    }

    /// Power of two choices: two distinct random servers in service, the one
    /// with fewer requests in flight wins.
    fn random_two(&self, servers: &[Arc<Server>], mut tried: u64, now: u64) -> Option<usize> {
        for _ in 0..servers.len() {
            let mut candidates: u64 = 0;
            for (i, s) in servers.iter().enumerate() {
                if !is_tried(i, tried) && !s.health.is_down(now) {
                    candidates |= 1 << i;
                }
            }
            let m = candidates.count_ones();
            let pick = match m {
                0 => return None,
                1 => candidates.trailing_zeros() as usize,
                _ => {
                    let a = fastrand::u32(..m);
                    let mut b = fastrand::u32(..m - 1);
                    if b >= a {
                        b += 1;
                    }
                    let (a, b) = (nth_bit(candidates, a), nth_bit(candidates, b));
                    let la = servers[a].inflight.load(Ordering::Relaxed);
                    let lb = servers[b].inflight.load(Ordering::Relaxed);
                    if lb < la {
                        b
                    } else {
                        a
                    }
                }
            };
            if servers[pick].health.available(now) {
                return Some(pick);
            }
            tried |= 1 << pick;
        }
        None
    }
}

/// Index of the `n`th set bit of `mask` (from 0); `n` < popcount.
pub(super) fn nth_bit(mut mask: u64, n: u32) -> usize {
    for _ in 0..n {
        mask &= mask - 1;
    }
    mask.trailing_zeros() as usize
}

/// Rendezvous (highest random weight) hashing: each client ranks the servers
/// by a hash of (client, server address); removing a server only moves the
/// clients that ranked it first, about 1/n of them, and adding one takes
/// about 1/(n+1) from the others. A server out of service sends its clients
/// to their second choice, and they come back when it does.
fn ip_hash(
    servers: &[Arc<Server>],
    weights: &[u32],
    client: IpAddr,
    mut tried: u64,
    now: u64,
) -> Option<usize> {
    let key = match client {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    for _ in 0..servers.len() {
        let mut best: Option<(f64, usize)> = None;
        for (i, s) in servers.iter().enumerate() {
            if is_tried(i, tried) || s.health.is_down(now) {
                continue;
            }
            let score = rendezvous_score(key, &s.label, weights[i]);
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, i));
            }
        }
        let (_, i) = best?;
        if servers[i].health.available(now) {
            return Some(i);
        }
        tried |= 1 << i;
    }
    None
}

/// Weighted rendezvous score: -w / ln(u) with u uniform in (0, 1), so a
/// server of weight 2 wins twice as many clients as one of weight 1.
fn rendezvous_score(key: u128, label: &str, weight: u32) -> f64 {
    let h = mix(key, label);
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -f64::from(weight.max(1)) / u.ln()
}

fn mix(key: u128, label: &str) -> u64 {
    // FNV-1a over the label, then a splitmix finaliser with the client key:
    // stable across restarts and machines, unlike std's RandomState.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in label.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    let mut z = h ^ (key as u64) ^ ((key >> 64) as u64).rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}
