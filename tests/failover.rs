//! Upstream failures with several real upstream servers: a server killed
//! under load, active health checks, every server down, and which requests
//! are retried.

mod common;

use common::backend::{
    backend, backend_on, config, get_with, named, reload, servers, split, text, until, Backend,
    Bind,
};
use common::{client, proxy, send, Body, Proxy};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Request;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

#[tokio::test]
async fn a_server_killed_under_load_fails_no_get() {
    let mut bs = [named("a").await, named("b").await, named("c").await];
    let list: Vec<(&Backend, u32)> = bs.iter().map(|b| (b, 1)).collect();
    let p = Arc::new(
        proxy(&config(&format!(
            "servers = {}\nretries = 1",
            servers(&list)
        )))
        .await,
    );
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (p, done, stop) = (p.clone(), done.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let c = client();
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let req = Request::get(p.url("/")).body(Body::default()).unwrap();
                match c.request(req).await {
                    Ok(r) => {
                        let status = r.status();
                        let body = r.into_body().collect().await.map(|b| b.to_bytes());
                        if status != 200 || body.is_err() {
                            failures.push(format!("{status} {body:?}"));
                        }
                    }
                    Err(e) => failures.push(e.to_string()),
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            failures
        }));
    }
    until("traffic on every server", || {
        bs.iter().all(|b| b.hits() >= 10)
    })
    .await;
    bs[1].kill().await;
    let at_kill = done.load(Ordering::SeqCst);
    until("300 more requests", || {
        done.load(Ordering::SeqCst) >= at_kill + 300
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.unwrap());
    }
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    let (a, c) = (bs[0].hits(), bs[2].hits());
    assert!(a + c >= 300, "the survivors took the load: a={a} c={c}");
}

#[tokio::test]
async fn failing_health_checks_take_a_server_out_and_passing_ones_put_it_back() {
    // Server a (on a Unix socket) holds each health probe until the test
    // releases it and answers with `status`; so the test knows exactly how
    // many probes have been judged: probes of one server run one after the
    // other, and probe k+1 arrives only once probe k's verdict is applied.
    let dir = tempfile::tempdir().unwrap();
    let status = Arc::new(AtomicU16::new(200));
    let release = Arc::new(Semaphore::new(0));
    let (probe_tx, mut probes) = mpsc::unbounded_channel();
    let (st, gate) = (status.clone(), release.clone());
    let a = backend_on(
        Bind::Unix(UnixListener::bind(dir.path().join("a.sock")).unwrap()),
        move |req| {
            let (st, gate, probe_tx) = (st.clone(), gate.clone(), probe_tx.clone());
            async move {
                if req.uri().path() != "/healthz" {
                    return text("a");
                }
                assert_eq!(req.headers()["host"], "localhost");
                let _ = probe_tx.send(());
                gate.acquire().await.unwrap().forget();
                let mut r = text("");
                *r.status_mut() = http::StatusCode::from_u16(st.load(Ordering::SeqCst)).unwrap();
                r
            }
        },
    )
    .await;
    let b = named("b").await;
    let cfg = |retries: u32| {
        config(&format!(
            "servers = {}\nretries = {retries}\n\
             [upstream.app.health]\npath = \"/healthz\"\ninterval = \"20ms\"\ntimeout = \"60s\"\n\
             unhealthy = 2\nhealthy = 2",
            servers(&[(&a, 1), (&b, 1)])
        ))
    };
    let p = proxy(&cfg(1)).await;
    async fn next_probe(probes: &mut mpsc::UnboundedReceiver<()>) {
        tokio::time::timeout(Duration::from_secs(10), probes.recv())
            .await
            .expect("a health probe arrives");
    }
    let both = HashMap::from([("a".to_string(), 2), ("b".to_string(), 2)]);
    let only_b = HashMap::from([("b".to_string(), 4)]);

    next_probe(&mut probes).await; // probe 1 waiting
    assert_eq!(split(&p, 4).await, both);
    status.store(503, Ordering::SeqCst);
    release.add_permits(1);
    next_probe(&mut probes).await; // probe 1 failed; probe 2 waiting
    assert_eq!(
        split(&p, 4).await,
        both,
        "out after one failed check of two"
    );
    release.add_permits(1);
    next_probe(&mut probes).await; // probe 2 failed: out; probe 3 waiting
    assert_eq!(split(&p, 4).await, only_b);

    // A reload that keeps the upstream keeps the verdict.
    reload(&p, &cfg(2)).await;
    assert_eq!(split(&p, 4).await, only_b);

    status.store(200, Ordering::SeqCst);
    release.add_permits(1);
    next_probe(&mut probes).await; // probe 3 passed; probe 4 waiting
    assert_eq!(
        split(&p, 4).await,
        only_b,
        "back after one passed check of two"
    );
    release.add_permits(1);
    next_probe(&mut probes).await; // probe 4 passed: back
    assert_eq!(split(&p, 4).await, both);
    release.add_permits(1000);
}

#[tokio::test]
async fn all_servers_down_fails_fast_with_502_then_503() {
    let mut a = named("a").await;
    let mut b = named("b").await;
    let mut lone = named("lone").await;
    // Long timeouts: a hang would show as a test timeout, not a quick 50x.
    let p = proxy(&format!(
        "{}\n[upstream.one]\nservers = [{:?}]\nmax_fails = 1\n\
         [[route]]\npath = \"/one\"\nupstream = \"one\"\n",
        config(&format!(
            "servers = {}\nmax_fails = 1\nconnect_timeout = \"60s\"\ntimeout = \"60s\"",
            servers(&[(&a, 1), (&b, 1)])
        )),
        lone.addr
    ))
    .await;
    a.kill().await;
    b.kill().await;
    lone.kill().await;
    async fn quick(p: &Proxy, path: &str) -> (u16, String) {
        tokio::time::timeout(Duration::from_secs(10), get_with(p, path, &[]))
            .await
            .expect("answered at once")
    }
    // Both refused: 502, and both are out of service...
    assert_eq!(quick(&p, "/").await.0, 502);
    // ...so the next requests are refused without trying: 503.
    for _ in 0..3 {
        assert_eq!(
            quick(&p, "/").await,
            (503, "service unavailable\n".to_string())
        );
    }
    // A lone server is never taken out: each request tries it, 502.
    for _ in 0..3 {
        assert_eq!(quick(&p, "/one").await.0, 502);
    }
}

/// A server that reads a whole request (head and Content-Length body) and
/// then closes the connection without answering.
async fn black_hole() -> (String, Arc<AtomicUsize>, JoinHandle<()>) {
    use tokio::io::AsyncReadExt;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let h = h.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 65536];
                // The whole request's size, once its head is in.
                let mut whole = None;
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if whole.is_none() {
                        let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text[..end]
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                            whole = Some(end + 4 + len);
                        }
                    }
                    if whole.is_some_and(|w| buf.len() >= w) {
                        h.fetch_add(1, Ordering::SeqCst);
                        return; // closed, no answer
                    }
                }
            });
        }
    });
    (addr, hits, task)
}

#[tokio::test]
async fn a_post_is_not_retried_once_sent_but_a_get_is_and_a_refused_post_is() {
    let (hole, hole_hits, _task) = black_hole().await;
    let good = backend(|req: Request<Incoming>| async move {
        let n = req.into_body().collect().await.unwrap().to_bytes().len();
        text(format!("good {n}"))
    })
    .await;
    let mut dead = named("dead").await;
    dead.kill().await;
    let up = |name: &str, first: &str| {
        format!(
            "[upstream.{name}]\nservers = [{first:?}, {:?}]\nretries = 1\n\
             [[route]]\npath = \"/{name}\"\nupstream = \"{name}\"\n",
            good.addr
        )
    };
    let p = proxy(&format!(
        "{}{}{}{}",
        config(&format!("servers = [{:?}]", good.addr)),
        up("sent", &hole),
        up("get", &hole),
        up("refused", &dead.addr),
    ))
    .await;
    let id = |what: &str| format!("{what}-{}-{}", std::process::id(), fastrand::u64(..));
    let post = |path: &str, id: &str| {
        Request::post(p.url(path))
            .header("x-request-id", id)
            .body(Body::from("hello"))
            .unwrap()
    };

    // Each upstream's first pick is its first server.
    let post_id = id("post-sent");
    let (status, _, _) = send(post("/sent", &post_id)).await;
    assert_eq!(status, 502);
    assert_eq!(
        hole_hits.load(Ordering::SeqCst),
        1,
        "the POST reached the first server whole"
    );
    assert_eq!(
        good.hits(),
        0,
        "a POST whose body was sent must not be sent again"
    );

    let get_id = id("get-retried");
    let (status, body) = get_with(&p, "/get", &[("x-request-id", &get_id)]).await;
    assert_eq!((status, body.as_str()), (200, "good 0"));
    assert_eq!(hole_hits.load(Ordering::SeqCst), 2);

    let (status, _, body) = send(post("/refused", &id("post-refused"))).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "good 5"),
        "a refused connect is retried for any method"
    );

    // The access log counts the attempts and names the server that answered.
    let log = p.dir.path().join("access.log");
    let post_line = log_line(&log, &post_id).await;
    assert!(
        post_line.contains(" 502 ") && post_line.contains(" attempts=1 "),
        "{post_line}"
    );
    assert!(
        post_line.contains(&format!("upstream={hole} ")),
        "{post_line}"
    );
    let get_line = log_line(&log, &get_id).await;
    assert!(
        get_line.contains(" 200 ") && get_line.contains(" attempts=2 "),
        "{get_line}"
    );
    assert!(
        get_line.contains(&format!("upstream={} ", good.addr)),
        "{get_line}"
    );
}

/// The access log line of the request with this id, once it is written.
async fn log_line(log: &Path, id: &str) -> String {
    let needle = format!(" id={id}");
    let mut found = None;
    until("the access log line", || {
        found = std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .find(|l| l.contains(&needle))
            .map(str::to_string);
        found.is_some()
    })
    .await;
    found.unwrap()
}

#[tokio::test]
async fn a_body_kept_in_a_temp_file_is_sent_whole_again_to_the_next_server() {
    // 3 MiB: past max_body_in_memory (1 MiB), so read into a file first.
    let blob: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    let (hole, hole_hits, _task) = black_hole().await;
    let want = blob.clone();
    let good = backend(move |req: Request<Incoming>| {
        let want = want.clone();
        async move {
            let length = req.headers()["content-length"]
                .to_str()
                .unwrap()
                .to_string();
            let got = req.into_body().collect().await.unwrap().to_bytes();
            text(format!(
                "length {length}, same bytes: {}",
                got[..] == want[..]
            ))
        }
    })
    .await;
    let p = proxy(&format!(
        "{}[upstream.big]\nservers = [{hole:?}, {:?}]\nretries = 1\n\
         [[route]]\npath = \"/big\"\nupstream = \"big\"\n",
        config(&format!("servers = [{:?}]", good.addr)),
        good.addr
    ))
    .await;
    let req = Request::put(p.url("/big")).body(Body::from(blob)).unwrap();
    let (status, _, answer) = send(req).await;
    assert_eq!(
        hole_hits.load(Ordering::SeqCst),
        1,
        "the first server got the whole body and closed without answering"
    );
    assert_eq!(
        (status, answer.as_str()),
        (200, "length 3145728, same bytes: true"),
        "a PUT read whole may go again, from its file, with its length"
    );
}
