//! Load balancing and upstream health, with several real upstream servers:
//! the split of each algorithm, failover when a server dies, active health
//! checks, all servers down, and which requests are retried.

mod common;

use bytes::Bytes;
use common::{client, proxy, send, Body, Proxy};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

/// A test upstream that can be killed: its listener and every open
/// connection are closed at once, as when the process dies.
struct Backend {
    addr: String,
    hits: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
    accept: Option<JoinHandle<()>>,
}

impl Backend {
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Close the listener and every connection; returns once the listener
    /// is gone, so connecting is refused from then on.
    async fn kill(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.accept.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

enum Bind {
    Tcp(TcpListener),
    Unix(UnixListener),
}

async fn backend_on<F, Fut>(bind: Bind, handler: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let addr = match &bind {
        Bind::Tcp(l) => l.local_addr().unwrap().to_string(),
        Bind::Unix(l) => {
            let p = l.local_addr().unwrap();
            format!("unix:{}", p.as_pathname().unwrap().display())
        }
    };
    let hits = Arc::new(AtomicUsize::new(0));
    let (stop, mut stopped) = watch::channel(false);
    let handler = Arc::new(handler);
    let (h, rx) = (hits.clone(), stop.subscribe());
    let accept = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stopped.wait_for(|&s| s) => return,
                conn = accept(&bind) => match conn {
                    Some(Conn::Tcp(s)) => serve(TokioIo::new(s), handler.clone(), h.clone(), rx.clone()),
                    Some(Conn::Unix(s)) => serve(TokioIo::new(s), handler.clone(), h.clone(), rx.clone()),
                    None => return,
                },
            }
        }
    });
    Backend {
        addr,
        hits,
        stop,
        accept: Some(accept),
    }
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(bind: &Bind) -> Option<Conn> {
    match bind {
        Bind::Tcp(l) => l.accept().await.ok().map(|(s, _)| Conn::Tcp(s)),
        Bind::Unix(l) => l.accept().await.ok().map(|(s, _)| Conn::Unix(s)),
    }
}

fn serve<IO, F, Fut>(
    io: IO,
    handler: Arc<F>,
    hits: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    tokio::spawn(async move {
        let svc = hyper::service::service_fn(move |req| {
            hits.fetch_add(1, Ordering::SeqCst);
            let fut = handler(req);
            async move { Ok::<_, std::convert::Infallible>(fut.await) }
        });
        let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, svc);
        // Dropping the connection closes the socket mid-exchange.
        tokio::select! {
            _ = conn => {}
            _ = stop.wait_for(|&s| s) => {}
        }
    });
}

async fn backend<F, Fut>(handler: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    backend_on(
        Bind::Tcp(TcpListener::bind("127.0.0.1:0").await.unwrap()),
        handler,
    )
    .await
}

fn text(s: impl Into<String>) -> Response<Body> {
    Response::new(Full::new(Bytes::from(s.into())))
}

/// A backend that answers every request with its name.
async fn named(name: &'static str) -> Backend {
    backend(move |_req| async move { text(name) }).await
}

fn servers(list: &[(&Backend, u32)]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|(b, w)| format!("{{ addr = {:?}, weight = {w} }}", b.addr))
        .collect();
    format!("[{}]", items.join(", "))
}

/// A config with one upstream `app` (the given body of its table) serving
/// `/`. The access log goes to `access.log` beside the config file.
fn config(upstream: &str) -> String {
    format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n\
         [log]\naccess = \"access.log\"\n\
         [[listen]]\naddr = \"127.0.0.1:0\"\n\
         [upstream.app]\n{upstream}\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n"
    )
}

async fn reload(p: &Proxy, toml: &str) {
    std::fs::write(&p.config_path, toml).unwrap();
    p.server.reload().await.expect("reload");
}

/// GET `path` through the proxy with headers; status and body.
async fn get_with(p: &Proxy, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = Request::get(p.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (status, _, body) = send(req.body(Body::default()).unwrap()).await;
    (status, body)
}

/// Which backend answered each of `n` sequential GETs of `/`, by name.
async fn split(p: &Proxy, n: usize) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for _ in 0..n {
        let (status, body) = get_with(p, "/", &[]).await;
        assert_eq!(status, 200, "{body}");
        *out.entry(body).or_insert(0) += 1;
    }
    out
}

/// Poll `cond` every few milliseconds until it holds; fail after 10 s.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

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
    for name in ["a", "b", "c"] {
        assert!(
            on(name) >= 25,
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
    assert_eq!(moved, on("b"));
    assert!(
        moved <= clients.len() / 2,
        "{moved} of {} moved",
        clients.len()
    );
}

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
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                        if buf.len() >= end + 4 + len {
                            h.fetch_add(1, Ordering::SeqCst);
                            return; // closed, no answer
                        }
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

#[test]
fn bad_health_settings_are_reported_with_their_place() {
    let errs = common::compile(
        "[[listen]]\naddr = \"127.0.0.1:0\"\n\
         [upstream.app]\nservers = [\"127.0.0.1:9\"]\n\
         [upstream.app.health]\npath = \"healthz\"\nhost = \"\"\nexpect = [200, \"2xy\", 700]\n\
         unhealthy = 0\ninterval = \"soon\"\n",
    )
    .err()
    .expect("the config must be refused")
    .to_string();
    for want in [
        "upstream.app.health.path: must start with /",
        "upstream.app.health.host: not a valid Host header value",
        "upstream.app.health.expect[1]:",
        "upstream.app.health.expect[2]:",
        "upstream.app.health: healthy and unhealthy must be at least 1",
        "upstream.app.health.interval:",
    ] {
        assert!(errs.contains(want), "missing {want:?} in:\n{errs}");
    }
    assert!(!errs.contains("expect[0]"), "{errs}");
}
