//! Thread-per-core serving as `portcullis run` does it: with worker threads
//! started, connections are handed to the workers, keep-alive connections
//! and pooled upstream connections work across them, and a shutdown drains
//! them. Its own test binary, because the workers are process-wide.

mod common;

use common::*;
use http_body_util::BodyExt;
use std::time::{Duration, Instant};

/// Nice value of the process (this thread's, the test harness's) and of
/// the workers: above the process's own, which even an unprivileged run may
/// set, so that the workers' own is seen to be theirs.
fn nices() -> (i32, i32) {
    // SAFETY: a plain system call on the calling thread.
    let own = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    (own, (own + 2).min(19))
}

/// Start the process's workers (the first call does; both tests call it
/// alike) and check that they took the policy and nice value asked for, as
/// `ps -L -o cls,ni` would show them.
fn start_workers() {
    let (own, theirs) = nices();
    portcullis::workers::start(
        2,
        &portcullis::state::Affinity::Off,
        portcullis::state::SchedPolicy::Batch,
        portcullis::state::Nice {
            value: theirs,
            explicit: true,
        },
    )
    .unwrap();
    // Each worker's nice value and policy, and two workers, no more.
    let workers = each_thread(std::process::id(), "portcullis-work", |dir| {
        (stat_field(dir, 19), stat_field(dir, 41))
    });
    assert_eq!(workers, vec![(theirs, libc::SCHED_BATCH); 2]);
    assert_eq!(nices().0, own, "the caller's nice value moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_on_worker_threads_are_proxied_pooled_and_drained() {
    start_workers();
    assert_eq!(portcullis::workers::count(), 2);
    let up = fixed("hello from the app").await;
    let p = proxy(&format!(
        r#"
[log]
access = "off"

[upstream.app]
servers = ["{}"]
keepalive = 8

[[listen]]
addr = "127.0.0.1:0"

[[route]]
path = "/"
upstream = "app"
"#,
        up.addr
    ))
    .await;

    // 16 keep-alive client connections, 10 requests each, all at once.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let url: http::Uri = p.url("/x").parse().unwrap();
        tasks.push(tokio::spawn(async move {
            let c = client();
            for _ in 0..10 {
                let r = c.get(url.clone()).await.unwrap();
                assert_eq!(r.status(), 200);
                let body = r.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(&body[..], b"hello from the app");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(up.hits(), 160);

    // Upstream connections went back to the workers' pools, and no more than
    // `keepalive` of them are kept in all.
    let snap = p.server.state().load();
    let pool = &snap.upstreams["app"].servers[0].pool;
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.idle_count() == 0 {
        assert!(
            Instant::now() < deadline,
            "no upstream connection was pooled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        pool.idle_count() <= 8,
        "{} idle connections kept",
        pool.idle_count()
    );

    // A request still works, then shutdown drains every connection.
    let (status, _, body) = get(&p.url("/again")).await;
    assert_eq!((status, body.as_str()), (200, "hello from the app"));
    assert!(p.server.shutdown().await, "connections were not drained");
}

/// Idle connections on worker threads are parked by their worker and, when
/// their clients speak again, served there again, pooled upstream
/// connections included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_on_workers_are_parked_and_resumed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    start_workers();
    let up = fixed("hello from the app").await;
    let p = proxy(&format!(
        "[log]\naccess = \"off\"\n[upstream.app]\nservers = [\"{}\"]\n\
         [[listen]]\naddr = \"127.0.0.1:0\"\n[[route]]\npath = \"/\"\nupstream = \"app\"\n",
        up.addr
    ))
    .await;
    async fn ask(s: &mut tokio::net::TcpStream) -> String {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"hello from the app") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(k) => got.extend_from_slice(&buf[..k]),
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }
    let mut conns = Vec::new();
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(p.addrs[0]).await.unwrap();
        assert!(ask(&mut s).await.starts_with("HTTP/1.1 200"));
        conns.push(s);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.server.state().parked.count() < 4 {
        assert!(Instant::now() < deadline, "idle connections not parked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for s in &mut conns {
        let answer = ask(s).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("hello from the app"), "{answer}");
    }
    assert_eq!(up.hits(), 8);
    assert!(p.server.shutdown().await, "connections were not drained");
}
