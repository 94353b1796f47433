//! Unit tests of server choice and passive health: no sockets.

use super::balance::{nth_bit, smooth_sequence, Balance, Picker};
use super::{now_ms, Server};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[test]
fn smooth_weighted_sequence_matches_nginx() {
    // nginx's documented example: weights 5,1,1 -> a a b a c a a
    assert_eq!(smooth_sequence(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    assert_eq!(smooth_sequence(&[1, 1]), vec![0, 1]);
    let seq = smooth_sequence(&[1, 3]);
    assert_eq!(seq.iter().filter(|&&i| i == 1).count(), 3);
}

pub(super) fn settings() -> crate::upstream::UpstreamSettings {
    crate::upstream::UpstreamSettings {
        balance: Balance::RoundRobin,
        connect_timeout: std::time::Duration::from_secs(1),
        timeout: std::time::Duration::from_secs(1),
        retries: 1,
        max_fails: 1,
        fail_timeout: std::time::Duration::from_secs(10),
        fail_on_status: false,
        keepalive: 0,
        keepalive_requests: 1000,
        keepalive_timeout: std::time::Duration::from_secs(2),
        buffer_chunked: true,
        buffer_requests: true,
        buffer_responses: true,
        max_read_ahead: 1 << 30,
        health: None,
    }
}

fn servers(n: usize) -> Vec<Arc<Server>> {
    (0..n)
        .map(|i| {
            let addr = crate::upstream::ServerAddr::Tcp(format!("10.0.0.{i}:80"));
            Arc::new(Server::new(addr, &settings()))
        })
        .collect()
}

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn counts(p: &Picker, s: &[Arc<Server>], w: &[u32], rounds: usize) -> Vec<usize> {
    let mut c = vec![0; s.len()];
    for _ in 0..rounds {
        c[p.pick(s, w, LOCAL, 0, 1).unwrap()] += 1;
    }
    c
}

#[test]
fn round_robin_skips_servers_out_of_service_and_already_tried() {
    let s = servers(3);
    let w = [5, 1, 1];
    let p = Picker::new(Balance::RoundRobin, &w);
    assert_eq!(counts(&p, &s, &w, 70), vec![50, 10, 10]);
    s[0].health.set_probe_down(true);
    let c = counts(&p, &s, &w, 100);
    assert_eq!(c[0], 0);
    assert_eq!(c[1] + c[2], 100);
    assert!(c[1].abs_diff(c[2]) <= 1, "{c:?}");
    assert_eq!(p.pick(&s, &w, LOCAL, 0b010, 1), Some(2));
    assert_eq!(p.pick(&s, &w, LOCAL, 0b110, 1), None);
}

#[test]
fn least_conn_prefers_fewest_in_flight_relative_to_weight() {
    let s = servers(3);
    let w = [1, 1, 2];
    let p = Picker::new(Balance::LeastConn, &w);
    s[0].inflight.store(3, Ordering::Relaxed);
    s[1].inflight.store(1, Ordering::Relaxed);
    s[2].inflight.store(3, Ordering::Relaxed);
    // loads: 4/1, 2/1, 4/2
    assert_eq!(p.pick(&s, &w, LOCAL, 0, 1), Some(1));
    assert_eq!(p.pick(&s, &w, LOCAL, 0b010, 1), Some(2));
    // All equal: ties go round robin.
    for x in &s {
        x.inflight.store(0, Ordering::Relaxed);
    }
    let w = [1, 1, 1];
    assert_eq!(counts(&p, &s, &w, 30), vec![10, 10, 10]);
}

#[test]
fn random_two_picks_the_less_loaded_of_two_and_spreads() {
    let s = servers(2);
    let w = [1, 1];
    let p = Picker::new(Balance::RandomTwo, &w);
    s[0].inflight.store(5, Ordering::Relaxed);
    assert_eq!(counts(&p, &s, &w, 50), vec![0, 50]);
    let s = servers(4);
    let w = [1; 4];
    let c = counts(&p, &s, &w, 4000);
    assert!(c.iter().all(|&n| n > 500), "{c:?}");
    s[3].health.set_probe_down(true);
    assert_eq!(counts(&p, &s, &w, 200)[3], 0);
    assert_eq!(p.pick(&s, &w, LOCAL, 0b0011, 1), Some(2));
}

#[test]
fn nth_bit_counts_set_bits() {
    assert_eq!(nth_bit(0b1011_0100, 0), 2);
    assert_eq!(nth_bit(0b1011_0100, 1), 4);
    assert_eq!(nth_bit(0b1011_0100, 3), 7);
}

fn client(i: u32) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i))
}

#[test]
fn ip_hash_is_stable_and_moves_few_clients_when_a_server_goes() {
    let s = servers(4);
    let w = [1; 4];
    let p = Picker::new(Balance::IpHash, &w);
    let before: Vec<usize> = (0..4000)
        .map(|c| p.pick(&s, &w, client(c), 0, 1).unwrap())
        .collect();
    let mut per = [0; 4];
    before.iter().for_each(|&i| per[i] += 1);
    assert!(per.iter().all(|&n| (800..1200).contains(&n)), "{per:?}");
    // Server 2 out of service: only its clients move, and they come back.
    s[2].health.set_probe_down(true);
    for (c, &b) in before.iter().enumerate() {
        let now = p.pick(&s, &w, client(c as u32), 0, 1).unwrap();
        assert!(b == 2 && now != 2 || b != 2 && now == b);
    }
    s[2].health.set_probe_down(false);
    // Removed from the config: the same holds, indexes shift past it.
    let fewer: Vec<Arc<Server>> = [0, 1, 3].iter().map(|&i| s[i].clone()).collect();
    let moved = (0..4000)
        .filter(|&c| {
            let now = fewer[p.pick(&fewer, &w[..3], client(c), 0, 1).unwrap()]
                .label
                .clone();
            now != s[before[c as usize]].label
        })
        .count();
    assert_eq!(moved, per[2]);
}

#[test]
fn ip_hash_honours_weights() {
    let s = servers(2);
    let w = [3, 1];
    let p = Picker::new(Balance::IpHash, &w);
    let first = (0..4000)
        .filter(|&c| p.pick(&s, &w, client(c), 0, 1) == Some(0))
        .count();
    assert!((2800..3200).contains(&first), "{first}");
}

#[test]
fn passive_health_lets_one_trial_through_and_another_if_it_is_abandoned() {
    let h = crate::upstream::Health::default();
    let t = std::time::Duration::from_secs(10);
    assert_eq!(h.record_failure(2, t), None);
    let n = h.record_failure(2, t);
    assert_eq!(n, Some(2));
    let now = now_ms();
    assert!(!h.available(now));
    assert!(h.is_down(now));
    // After fail_timeout: one trial, not two.
    let later = now + 10_001;
    assert!(h.available(later));
    assert!(!h.available(later));
    // The trial never reported back: another one a fail_timeout later.
    assert!(h.available(later + 10_001));
    // It fails: out again at once (the count is still past max_fails).
    assert!(h.record_failure(2, t).is_none());
    assert!(h.is_down(now_ms()));
    // A success puts it back and resets the count.
    assert!(h.record_success());
    assert!(h.available(now_ms()));
    assert_eq!(h.record_failure(2, t), None);
}

#[test]
fn backups_take_requests_only_while_no_primary_can() {
    for balance in [
        Balance::RoundRobin,
        Balance::LeastConn,
        Balance::RandomTwo,
        Balance::IpHash,
    ] {
        let mut st = settings();
        st.balance = balance;
        // Two primaries, then two backups weighted 3 to 1.
        let up = super::Upstream::new("app".into(), servers(4), vec![1, 1, 3, 1], 2, st);
        let picks = |tried: u64| {
            let mut c = [0; 4];
            for n in 0..400u32 {
                let client = IpAddr::V4(std::net::Ipv4Addr::from(n));
                if let Some(i) = up.pick(client, tried) {
                    c[i] += 1;
                }
            }
            c
        };
        let c = picks(0);
        assert_eq!(c[2] + c[3], 0, "{balance:?}: primaries well, {c:?}");
        assert!(c[0] > 0 && c[1] > 0, "{balance:?}: {c:?}");
        // One primary out: the other takes all.
        up.servers[0].health.set_probe_down(true);
        assert_eq!(picks(0), [0, 400, 0, 0], "{balance:?}");
        // The last primary already tried for this request: a backup.
        let c = picks(0b0010);
        assert_eq!(c[0] + c[1], 0, "{balance:?}: {c:?}");
        assert_eq!(c[2] + c[3], 400, "{balance:?}: {c:?}");
        // Both primaries out: the backups, by their weights, and a backup
        // already tried is skipped as any server is.
        up.servers[1].health.set_probe_down(true);
        let c = picks(0);
        assert_eq!(c[0] + c[1], 0, "{balance:?}: {c:?}");
        if balance == Balance::RoundRobin {
            assert_eq!(c, [0, 0, 300, 100]);
        }
        assert_eq!(picks(0b0100), [0, 0, 0, 400], "{balance:?}");
        assert_eq!(picks(0b1100), [0; 4], "{balance:?}: none left");
        // A primary back in service takes the requests back.
        up.servers[0].health.set_probe_down(false);
        assert_eq!(picks(0), [400, 0, 0, 0], "{balance:?}");
    }
}
