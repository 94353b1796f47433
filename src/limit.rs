//! A route's `rate_limit`: requests a client address may make, as nginx's
//! `limit_req` with `nodelay` (a request over the limit is refused at once,
//! never held). The algorithm is GCRA, which is nginx's leaky bucket kept
//! as one number per client: the time at which the client's bucket is
//! empty again. A client is an IPv4 address or an IPv6 /64, the block a
//! single host is given: per IPv6 address, one machine could be 2^64
//! clients.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Separate locks, so that the two workers seldom meet on one; a lock is
/// held for one hash-table lookup.
const SHARDS: usize = 16;
/// Clients tracked per shard (65,536 in all, about 3 MiB at most): nginx's
/// `zone=...:1m` holds some 16,000.
const PER_SHARD: usize = 4096;

pub struct RateLimit {
    /// Microseconds between two requests at the steady rate.
    interval: u64,
    /// How far ahead of now a client's bucket may run: `burst` intervals.
    tolerance: u64,
    /// As written, for `portcullis check` and for carrying the state over
    /// a reload that keeps the same limit.
    pub rate: String,
    pub burst: u32,
    /// The `zone` the routes that share this limit name; `None`: one route's.
    pub zone: Option<String>,
    shards: [Mutex<HashMap<u128, u64>>; SHARDS],
}

impl RateLimit {
    /// `per_secs` requests a second may be fractional (`"30/m"`); a zero
    /// rate is refused by the config compiler before this.
    pub fn new(rate: String, per_second: f64, burst: u32) -> Self {
        let interval = ((1_000_000.0 / per_second).round() as u64).max(1);
        RateLimit {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst)),
            rate,
            burst,
            zone: None,
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }

    /// `Err(seconds)`: refused, and how long until the next request would
    /// be admitted, for `Retry-After`.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        self.check_at(ip, crate::upstream::now_ms() * 1000)
    }

    fn check_at(&self, ip: IpAddr, now: u64) -> Result<(), u64> {
        let key = client_key(ip);
        let shard = &self.shards[shard_of(key)];
        // A panic while the lock was held cannot leave a half-made entry
        // (one insert): the table is still good.
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        let known = map.get(&key).copied();
        let tat = known.unwrap_or(now).max(now);
        if tat - now > self.tolerance {
            let wait_us = tat - now - self.tolerance;
            return Err(wait_us.div_ceil(1_000_000).max(1));
        }
        if known.is_none() && map.len() >= PER_SHARD {
            make_room(&mut map, now);
        }
        map.insert(key, tat + self.interval);
        Ok(())
    }

    /// Clients tracked now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// IPv4 (and IPv4-mapped IPv6) addresses whole, IPv6 by their /64.
fn client_key(ip: IpAddr) -> u128 {
    match crate::state::canonical_ip(ip) {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => (u128::from(v6) & !u128::from(u64::MAX)) | 1,
    }
}

fn shard_of(key: u128) -> usize {
    let folded = (key as u64) ^ ((key >> 64) as u64);
    (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % SHARDS
}

/// A full shard first forgets the clients whose buckets are empty (they
/// are as good as new). If that frees less than an eighth, it also forgets
/// the half nearest to empty, so that a flood of fresh addresses costs one
/// pass over the table per PER_SHARD / 2 of them, not one per request; the
/// clients it forgets are the ones that had sent least lately.
fn make_room(map: &mut HashMap<u128, u64>, now: u64) {
    map.retain(|_, tat| *tat > now);
    if map.len() < PER_SHARD - PER_SHARD / 8 {
        return;
    }
    let mut tats: Vec<u64> = map.values().copied().collect();
    let mid = tats.len() / 2;
    let (_, median, _) = tats.select_nth_unstable(mid);
    let median = *median;
    map.retain(|_, tat| *tat > median);
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_then_the_steady_rate() {
        // 2 a second, 3 more at once.
        let l = RateLimit::new("2/s".into(), 2.0, 3);
        let a = ip("192.0.2.1");
        let t0 = 100 * SEC;
        for i in 0..4 {
            assert_eq!(l.check_at(a, t0), Ok(()), "request {i} of the burst");
        }
        assert_eq!(l.check_at(a, t0), Err(1));
        // Another client has its own bucket.
        assert_eq!(l.check_at(ip("192.0.2.2"), t0), Ok(()));
        // Half a second frees one request, not two.
        assert_eq!(l.check_at(a, t0 + SEC / 2), Ok(()));
        assert_eq!(l.check_at(a, t0 + SEC / 2), Err(1));
        // After the bucket has drained (4 requests' worth, 2 s), a whole
        // burst again.
        let later = t0 + SEC / 2 + 2 * SEC;
        for _ in 0..4 {
            assert_eq!(l.check_at(a, later), Ok(()));
        }
        assert!(l.check_at(a, later).is_err());
    }

    #[test]
    fn retry_after_says_when_the_next_request_fits() {
        // One a minute, no burst.
        let l = RateLimit::new("1/m".into(), 1.0 / 60.0, 0);
        let a = ip("198.51.100.7");
        assert_eq!(l.check_at(a, SEC), Ok(()));
        assert_eq!(l.check_at(a, SEC), Err(60));
        assert_eq!(l.check_at(a, 31 * SEC), Err(30));
        assert_eq!(l.check_at(a, 61 * SEC - 1), Err(1));
        assert_eq!(l.check_at(a, 61 * SEC), Ok(()));
    }

    #[test]
    fn an_ipv6_host_is_its_64_and_mapped_ipv4_is_ipv4() {
        let l = RateLimit::new("1/h".into(), 1.0 / 3600.0, 0);
        assert_eq!(l.check_at(ip("2001:db8:1:2::1"), SEC), Ok(()));
        // The same /64, another address: the same client.
        assert!(l.check_at(ip("2001:db8:1:2:ffff::9"), SEC).is_err());
        assert_eq!(l.check_at(ip("2001:db8:1:3::1"), SEC), Ok(()));
        assert_eq!(l.check_at(ip("10.0.0.1"), SEC), Ok(()));
        assert!(l.check_at(ip("::ffff:10.0.0.1"), SEC).is_err());
    }

    #[test]
    fn a_flood_of_addresses_is_bounded_and_a_busy_client_is_kept() {
        let l = RateLimit::new("1/s".into(), 1.0, 0);
        let busy = ip("203.0.113.1");
        let t = 10 * SEC;
        assert_eq!(l.check_at(busy, t), Ok(()));
        // The busy client is in debt for longer than any new one below
        // (its bucket empties last), so making room keeps it.
        assert_eq!(l.check_at(busy, t + SEC), Ok(()));
        for i in 0..(SHARDS * PER_SHARD * 3) as u32 {
            let v6 = std::net::Ipv6Addr::from((0x2001_0db8_u128 << 96) | (u128::from(i) << 64));
            assert_eq!(l.check_at(IpAddr::V6(v6), t), Ok(()));
        }
        assert!(l.tracked() <= SHARDS * PER_SHARD, "{}", l.tracked());
        assert!(
            l.check_at(busy, t + SEC).is_err(),
            "the busy client was forgotten"
        );
    }
}
