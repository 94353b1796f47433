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

fn usable(s: &Server, i: usize, tried: u64, now: u64) -> bool {
    (i >= 64 || tried & (1 << i) == 0) && s.health.available(now)
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
            let i = self.sequence[(start + k) % n];
            if usable(&servers[i], i, tried, now) {
                if k > 0 {
                    self.next.fetch_add(k, Ordering::Relaxed);
                }
                return Some(i);
            }
        }
        None
    }

    fn least_conn(
        &self,
        servers: &[Arc<Server>],
        weights: &[u32],
        tried: u64,
        now: u64,
    ) -> Option<usize> {
        let n = servers.len();
        // Rotate the scan's start so ties go round robin.
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(usize, u64)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            let s = &servers[i];
            if (i < 64 && tried & (1 << i) != 0) || s.health.is_down(now) {
                continue;
            }
            // Compare inflight/weight without division: scale by the other
            // servers' weights through a common factor.
            let load = (s.inflight.load(Ordering::Relaxed) as u64 + 1) * 1_000_000
                / weights[i].max(1) as u64;
            if best.is_none_or(|(_, b)| load < b) {
                best = Some((i, load));
            }
        }
        let (i, _) = best?;
        // Trial gate after fail_timeout: claim it, or fall back to any other.
        if servers[i].health.available(now) {
            Some(i)
        } else {
            self.round_robin(servers, tried | (1u64 << (i.min(63))), now)
        }
    }

    fn random_two(&self, servers: &[Arc<Server>], tried: u64, now: u64) -> Option<usize> {
        let n = servers.len();
        let candidates: Vec<usize> = (0..n)
            .filter(|&i| (i >= 64 || tried & (1 << i) == 0) && !servers[i].health.is_down(now))
            .collect();
        let pick = match candidates.len() {
            0 => return None,
            1 => candidates[0],
            m => {
                let a = fastrand::usize(..m);
                let mut b = fastrand::usize(..m - 1);
                if b >= a {
                    b += 1;
                }
                let (a, b) = (candidates[a], candidates[b]);
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
            Some(pick)
        } else {
            self.round_robin(servers, tried | (1u64 << pick.min(63)), now)
        }
    }
}

/// Rendezvous (highest random weight) hashing: each client ranks the servers
/// by a hash of (client, server); removing a server only moves the clients
/// that ranked it first, about 1/n of them.
fn ip_hash(
    servers: &[Arc<Server>],
    weights: &[u32],
    client: IpAddr,
    tried: u64,
    now: u64,
) -> Option<usize> {
    let key = match client {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    let mut ranked: Vec<(f64, usize)> = servers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i >= 64 || tried & (1 << i) == 0)
        .map(|(i, s)| {
            let h = mix(key, &s.label);
            // Weighted rendezvous: score = -w / ln(u), u in (0,1).
            let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            (-(weights[i].max(1) as f64) / u.ln(), i)
        })
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranked
        .into_iter()
        .map(|(_, i)| i)
        .find(|&i| servers[i].health.available(now))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_weighted_sequence_matches_nginx() {
        // nginx's documented example: weights 5,1,1 -> a a b a c a a
        assert_eq!(smooth_sequence(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_sequence(&[1, 1]), vec![0, 1]);
        let seq = smooth_sequence(&[1, 3]);
        assert_eq!(seq.iter().filter(|&&i| i == 1).count(), 3);
    }
}
