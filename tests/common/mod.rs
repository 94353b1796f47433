//! Shared test harness: real upstream servers on 127.0.0.1:0 or Unix
//! sockets, the real proxy started in-process, and a real HTTP client.
#![allow(dead_code)]

pub mod backend;
pub mod child;
pub mod jwt;
pub mod slow;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::config::{self, Source};
use portcullis::Server;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, UnixListener};

pub type Body = Full<Bytes>;
pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

/// A test upstream: counts the requests it served.
pub struct Upstream {
    pub addr: String,
    pub hits: Arc<AtomicUsize>,
    /// Connections accepted: shows whether the proxy reuses connections.
    pub conns: Arc<AtomicUsize>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    pub fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serve `handler` over HTTP/1.1 on a fresh 127.0.0.1 port.
pub async fn upstream<F, Fut>(handler: F) -> Upstream
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    spawn_upstream(Listener::Tcp(l), addr, handler)
}

/// Serve `handler` on a Unix socket at `path`; the upstream's addr is
/// `unix:PATH`.
pub async fn unix_upstream<F, Fut>(path: &Path, handler: F) -> Upstream
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let l = UnixListener::bind(path).unwrap();
    spawn_upstream(
        Listener::Unix(l),
        format!("unix:{}", path.display()),
        handler,
    )
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    async fn accept(&self) -> Option<Box<dyn Io>> {
        match self {
            Listener::Tcp(l) => l
                .accept()
                .await
                .ok()
                .map(|(s, _)| Box::new(s) as Box<dyn Io>),
            Listener::Unix(l) => l
                .accept()
                .await
                .ok()
                .map(|(s, _)| Box::new(s) as Box<dyn Io>),
        }
    }
}

fn spawn_upstream<F, Fut>(l: Listener, addr: String, handler: F) -> Upstream
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let hits = Arc::new(AtomicUsize::new(0));
    let conns = Arc::new(AtomicUsize::new(0));
    let (h, c) = (hits.clone(), conns.clone());
    let handler = Arc::new(handler);
    let task = tokio::spawn(async move {
        while let Some(s) = l.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            serve_one(TokioIo::new(s), handler.clone(), h.clone());
        }
    });
    Upstream {
        addr,
        hits,
        conns,
        task,
    }
}

fn serve_one<IO, F, Fut>(io: IO, handler: Arc<F>, hits: Arc<AtomicUsize>)
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    tokio::spawn(async move {
        let svc = hyper::service::service_fn(move |req| {
            hits.fetch_add(1, Ordering::SeqCst);
            let fut = handler(req);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, svc)
            .with_upgrades()
            .await;
    });
}

/// An upstream that answers every request with `body`.
pub async fn fixed(body: &'static str) -> Upstream {
    upstream(
        move |_req| async move { Response::new(Full::new(Bytes::from_static(body.as_bytes()))) },
    )
    .await
}

/// An upstream that answers with a JSON object of the request's method, path
/// and headers, so a test can see exactly what was forwarded.
pub async fn echo() -> Upstream {
    upstream(|req| async move { echo_response(req).await }).await
}

pub async fn echo_response(req: Request<Incoming>) -> Response<Body> {
    let mut headers = serde_json::Map::new();
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        match headers.get_mut(k.as_str()) {
            Some(serde_json::Value::String(s)) => {
                s.push_str(", ");
                s.push_str(&v);
            }
            _ => {
                headers.insert(k.as_str().to_string(), serde_json::Value::String(v));
            }
        }
    }
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let v = serde_json::json!({
        "method": method,
        "uri": uri,
        "headers": headers,
        "body_len": body.len(),
    });
    Response::new(Full::new(Bytes::from(v.to_string())))
}

/// A running proxy for one test. Listener addresses are in config order.
pub struct Proxy {
    pub server: Arc<Server>,
    pub addrs: Vec<SocketAddr>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl Proxy {
    /// `http://ADDR` of the first listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addrs[0], path)
    }
}

/// A config with one plain listener on a free port and the access log
/// off, `extra` (upstreams, routes) after them.
pub fn cfg(extra: &str) -> String {
    format!("[log]\naccess = \"off\"\n[[listen]]\naddr = \"127.0.0.1:0\"\n{extra}")
}

/// Start the proxy on a config text; the text is written to a file in a
/// temp dir (so relative paths and reloads work) and compiled as `run` does.
pub async fn proxy(toml: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    proxy_in(dir, toml).await
}

pub async fn proxy_in(dir: tempfile::TempDir, toml: &str) -> Proxy {
    let config_path = dir.path().join("portcullis.toml");
    std::fs::write(&config_path, toml).unwrap();
    let snap = match config::load_file(&config_path, None) {
        Ok(s) => s,
        Err(e) => panic!("config does not compile:\n{e}"),
    };
    let server = Server::start(snap, Some(config_path.clone()))
        .await
        .unwrap();
    let addrs = server.local_addrs();
    Proxy {
        server,
        addrs,
        dir,
        config_path,
    }
}

/// Compile a config text without starting anything.
pub fn compile(toml: &str) -> Result<portcullis::state::Snapshot, config::Errors> {
    let src = Source {
        path: None,
        base_dir: PathBuf::from("."),
    };
    config::load_str(toml, &src, None)
}

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn get(url: &str) -> (u16, http::HeaderMap, String) {
    send(Request::get(url).body(Body::default()).unwrap()).await
}

pub async fn send(req: Request<Body>) -> (u16, http::HeaderMap, String) {
    let resp = client().request(req).await.expect("request failed");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// Send raw bytes on a fresh TCP connection and read until the server
/// closes or `max` bytes arrive.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Run the real `portcullis check` on `toml`, written into `dir`: the exit
/// code, stdout and stderr.
pub fn check_cli(dir: &Path, toml: &str) -> (i32, String, String) {
    let path = dir.join("portcullis.toml");
    std::fs::write(&path, toml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Read from `s` until the server closes it; false if it had not within
/// 20 s (the guard only stops a hang).
pub async fn closed_by_server(s: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let wait = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), wait)
        .await
        .is_ok()
}

/// The access log's line for the response that carried `headers`. It is
/// written off the request path: poll for it.
pub async fn log_line(log: &std::path::Path, headers: &http::HeaderMap) -> String {
    let id = headers["x-request-id"].to_str().unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains(id)) {
            return l.to_string();
        }
        assert!(tokio::time::Instant::now() < deadline, "no access log line");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Field `n` (counted from 1, as proc(5) does) of the `stat` of the task
/// whose /proc directory is `dir`: 19 is its nice value (`ps -o ni`), 41
/// its scheduling policy (SCHED_OTHER 0, SCHED_BATCH 3; `chrt -p`).
pub fn stat_field(dir: &Path, n: usize) -> i32 {
    let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
    // The name (2nd) may hold spaces: the 3rd field is the first after its
    // closing parenthesis.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(n - 3).unwrap().parse().unwrap()
}

/// One value per thread of process `pid` whose name starts with `name`
/// (the kernel cuts names to 15 bytes), read from its /proc directory,
/// sorted.
pub fn each_thread<T: Ord>(pid: u32, name: &str, read: impl Fn(&Path) -> T) -> Vec<T> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = t.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.starts_with(name) {
            out.push(read(&dir));
        }
    }
    out.sort();
    out
}

/// HTTP/2 with prior knowledge: the preface and an empty SETTINGS frame.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// The next HTTP/2 frame: type, flags, stream, payload.
pub async fn h2_frame(s: &mut tokio::net::TcpStream) -> (u8, u8, u32, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut h = [0u8; 9];
    s.read_exact(&mut h).await.expect("a frame header");
    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
    let mut payload = vec![0; len];
    s.read_exact(&mut payload).await.expect("a frame payload");
    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
    (h[3], h[4], stream, payload)
}

/// A HEADERS frame on `stream` for GET http://x/ (static-table fields and
/// one literal), ending the stream and the header block.
pub fn h2_get_frame(stream: u32) -> Vec<u8> {
    let block = [0x82, 0x86, 0x84, 0x01, 0x01, b'x'];
    let mut req = vec![0, 0, block.len() as u8, 0x01, 0x05];
    req.extend_from_slice(&stream.to_be_bytes());
    req.extend_from_slice(&block);
    req
}

/// Read until `pat` has been seen `n` times; what was read.
pub async fn read_until(s: &mut tokio::net::TcpStream, pat: &str, n: usize) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while String::from_utf8_lossy(&got).matches(pat).count() < n {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(k) => got.extend_from_slice(&buf[..k]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// An HTTP/2 client connection to `addr` (prior knowledge, as on a plain
/// listener); its task is spawned, its handle returned with the sender.
pub async fn h2_connect<B>(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<B>,
    tokio::task::JoinHandle<hyper::Result<()>>,
)
where
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    (send, tokio::spawn(conn))
}
