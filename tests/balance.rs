//! Load balancing with several real upstream servers: the split of each
//! algorithm over many requests.

mod common;

use common::backend::{backend, config, get_with, named, reload, servers, split, text, Backend};
use common::proxy;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

#[tokio::test]
async fn weighted_round_robin_splits_exactly_by_weight() {
    let (a, b, c) = (named("a").await, named("b").await, named("c").await);
    let p = proxy(&config(&format!(
        "servers = {}\nbalance = \"round_robin\"",
        servers(&[(&a, 3), (&b, 2), (&c, 1)])
    )))
    .await;
    let n = split(&p, 60).await;
    assert_eq!((n["a"], n["b"], n["c"]), (30, 20, 10), "{n:?}");
    // Smooth: within any one cycle of 6 the heavy server never gets three
    // in a row (plain weighted round robin would send a a a b b c).
    let mut order = String::new();
    for _ in 0..6 {
        order.push_str(&get_with(&p, "/", &[]).await.1);
    }
    assert!(!order.contains("aaa"), "{order}");
    assert_eq!(order.matches('a').count(), 3, "{order}");
}

#[tokio::test]
async fn least_conn_sends_new_requests_past_a_busy_slow_server() {
    // The slow server holds every request until the test lets it go.
    let release = Arc::new(Semaphore::new(0));
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let gate = release.clone();
    let slow = backend(move |_req| {
        let (gate, arrived_tx) = (gate.clone(), arrived_tx.clone());
        async move {
            let _ = arrived_tx.send(());
            gate.acquire().await.unwrap().forget();
            text("slow")
        }
    })
    .await;
    let fast = named("fast").await;
    let p = Arc::new(
        proxy(&config(&format!(
            "servers = {}\nbalance = \"least_conn\"",
            servers(&[(&slow, 1), (&fast, 1)])
        )))
        .await,
    );
    // The first request goes to the slow server (a tie, broken in list
    // order) and stays there.
    let first = {
        let p = p.clone();
        tokio::spawn(async move { get_with(&p, "/", &[]).await })
    };
    tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await
        .expect("first request reaches the slow server");
    // While it is busy, every other request goes to the fast one.
    let n = split(&p, 20).await;
    assert_eq!(n.get("fast"), Some(&20), "{n:?}");
    assert_eq!(slow.hits(), 1);
    release.add_permits(1);
    assert_eq!(first.await.unwrap(), (200, "slow".to_string()));
    // Both idle again: they share the load.
    release.add_permits(100);
    let n = split(&p, 10).await;
    assert_eq!((n["slow"], n["fast"]), (5, 5), "{n:?}");
}

#[tokio::test]
async fn random_two_spreads_requests_over_every_server() {
    let bs = [
        named("a").await,
        named("b").await,
        named("c").await,
        named("d").await,
    ];
    let list: Vec<(&Backend, u32)> = bs.iter().map(|b| (b, 1)).collect();
    let p = proxy(&config(&format!(
        "servers = {}\nbalance = \"random_two\"",
        servers(&list)
    )))
    .await;
    let n = split(&p, 400).await;
    // 100 expected each; below 40 has a chance far under one in a billion.
    for name in ["a", "b", "c", "d"] {
        assert!(n.get(name).copied().unwrap_or(0) >= 40, "{n:?}");
    }
}

#[tokio::test]
async fn ip_hash_keeps_clients_in_place_and_moves_few_when_a_server_goes() {
    let (a, b, c) = (named("a").await, named("b").await, named("c").await);
    let cfg = |list: &[(&Backend, u32)]| {
        config(&format!(
            "servers = {}\nbalance = \"ip_hash\"",
            servers(list)
        ))
    };
    let p = proxy(&cfg(&[(&a, 1), (&b, 1), (&c, 1)])).await;
    // The proxy trusts 127.0.0.1, so each X-Forwarded-For is a client.
    let clients: Vec<String> = (0..150)
        .map(|i| format!("10.1.{}.{}", i / 100, i % 100 + 1))
        .collect();
    let mut placed = HashMap::new();
    for ip in &clients {
        let (s, first) = get_with(&p, "/", &[("x-forwarded-for", ip)]).await;
        assert_eq!(s, 200);
        let (_, again) = get_with(&p, "/", &[("x-forwarded-for", ip)]).await;
        assert_eq!(first, again, "client {ip} moved between two requests");
        placed.insert(ip.clone(), first);
    }
    let on = |name: &str| placed.values().filter(|v| *v == name).count();
    // 50 each expected; the servers' ports (so the hashes) change from run
    // to run, and 15 is six standard deviations below.
    for name in ["a", "b", "c"] {
        assert!(
            on(name) >= 15,
            "uneven: a={} b={} c={}",
            on("a"),
            on("b"),
            on("c")
        );
    }
    // Without the forwarded address every request is one client: one server.
    let mut alone = std::collections::HashSet::new();
    for _ in 0..10 {
        alone.insert(get_with(&p, "/", &[]).await.1);
    }
    assert_eq!(alone.len(), 1);

    // Server b removed by a reload: only b's clients move.
    reload(&p, &cfg(&[(&a, 1), (&c, 1)])).await;
    let mut moved = 0;
    for ip in &clients {
        let (_, now) = get_with(&p, "/", &[("x-forwarded-for", ip)]).await;
        if placed[ip] == "b" {
            assert_ne!(now, "b");
            moved += 1;
        } else {
            assert_eq!(
                now, placed[ip],
                "client {ip} moved though its server stayed"
            );
        }
    }
    // About a third of the clients moved (six standard deviations of room).
    assert_eq!(moved, on("b"));
    assert!(moved <= 90, "{moved} of {} moved", clients.len());
}

#[tokio::test]
async fn backup_servers_answer_only_while_every_primary_is_out() {
    let (mut a, mut c, b) = (named("a").await, named("c").await, named("b").await);
    let p = proxy(&config(&format!(
        "servers = [{:?}, {{ addr = {:?}, backup = true }}, {:?}]\n\
         max_fails = 1\nfail_timeout = \"60s\"\nretries = 2",
        a.addr, b.addr, c.addr
    )))
    .await;
    let n = split(&p, 40).await;
    assert_eq!(
        (n.get("a"), n.get("c"), n.get("b")),
        (Some(&20), Some(&20), None)
    );
    // Both primaries die: the first request tries each, then the backup,
    // and no request fails.
    a.kill().await;
    c.kill().await;
    let n = split(&p, 20).await;
    assert_eq!(n.get("b"), Some(&20), "{n:?}");
    // The primaries are out of service now: the backup is asked first,
    // with no attempt on a dead primary before it.
    let (status, headers, body) = common::send(
        hyper::Request::get(p.url("/"))
            .body(common::Body::default())
            .unwrap(),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "b"));
    let line = common::log_line(&p.dir.path().join("access.log"), &headers).await;
    assert!(
        line.contains(&format!(" upstream={} attempts=1 ", b.addr)),
        "{line}"
    );
}
