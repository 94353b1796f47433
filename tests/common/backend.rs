//! Killable test upstreams and helpers for tests with several of them:
//! a backend closes its listener and every open connection at once when
//! killed, as when its process dies.

use super::{send, Body, Proxy};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A test upstream that can be killed: its listener and every open
/// connection are closed at once, as when the process dies.
pub struct Backend {
    pub addr: String,
    pub hits: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
    accept: Option<JoinHandle<()>>,
}

impl Backend {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Close the listener and every connection; returns once the listener
    /// is gone, so connecting is refused from then on.
    pub async fn kill(&mut self) {
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

pub enum Bind {
    Tcp(TcpListener),
    Unix(UnixListener),
}

pub async fn backend_on<F, Fut>(bind: Bind, handler: F) -> Backend
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

pub async fn backend<F, Fut>(handler: F) -> Backend
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

pub fn text(s: impl Into<String>) -> Response<Body> {
    Response::new(Full::new(Bytes::from(s.into())))
}

/// A backend that answers every request with its name.
pub async fn named(name: &'static str) -> Backend {
    backend(move |_req| async move { text(name) }).await
}

pub fn servers(list: &[(&Backend, u32)]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|(b, w)| format!("{{ addr = {:?}, weight = {w} }}", b.addr))
        .collect();
    format!("[{}]", items.join(", "))
}

/// A config with one upstream `app` (the given body of its table) serving
/// `/`. The access log goes to `access.log` beside the config file.
pub fn config(upstream: &str) -> String {
    format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n\
         [log]\naccess = \"access.log\"\n\
         [[listen]]\naddr = \"127.0.0.1:0\"\n\
         [upstream.app]\n{upstream}\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n"
    )
}

pub async fn reload(p: &Proxy, toml: &str) {
    std::fs::write(&p.config_path, toml).unwrap();
    p.server.reload().await.expect("reload");
}

/// GET `path` through the proxy with headers; status and body.
pub async fn get_with(p: &Proxy, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = Request::get(p.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (status, _, body) = send(req.body(Body::default()).unwrap()).await;
    (status, body)
}

/// Which backend answered each of `n` sequential GETs of `/`, by name.
pub async fn split(p: &Proxy, n: usize) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for _ in 0..n {
        let (status, body) = get_with(p, "/", &[]).await;
        assert_eq!(status, 200, "{body}");
        *out.entry(body).or_insert(0) += 1;
    }
    out
}

/// Poll `cond` every few milliseconds until it holds; fail after 10 s.
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
