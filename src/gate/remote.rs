//! `jwks_url`: a key set fetched over HTTPS, cached, refreshed in the
//! background and when a token names a `kid` not in the set.
//!
//! - The first fetch starts when the snapshot goes live; until it is done,
//!   a token waits for it rather than being refused.
//! - Every `jwks_refresh` the set is fetched again; after a failed fetch,
//!   sooner (at most every 30s). A failed fetch keeps the last good set.
//! - An unknown `kid` fetches again at once, but at most once every
//!   `KID_COOLDOWN`, and at most one fetch is ever in flight: a flood of
//!   made-up kids costs one fetch per cooldown, not one per request.
//! - Only a token that passed every cheap check (shape, `alg`, `exp`,
//!   `nbf`, `iss`, `aud`) gets here, so a token of a foreign issuer never
//!   causes a fetch.
//! - Plain `http://` is accepted for loopback addresses only; redirects are
//!   not followed; a body above 1 MiB is refused.

use super::keys::{parse_jwks, KeySet};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{ACCEPT, HOST, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::Algorithm;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::OwnedMutexGuard;

/// Least time between two fetches caused by unknown kids.
pub const KID_COOLDOWN: Duration = Duration::from_secs(30);
/// Retry interval after a failed fetch (when shorter than jwks_refresh).
const RETRY: Duration = Duration::from_secs(30);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BODY: usize = 1 << 20;

pub struct Remote {
    policy: String,
    url: Uri,
    /// `url` as log lines show it (see `shown`).
    shown: String,
    algorithms: Vec<Algorithm>,
    refresh: Duration,
    keys: ArcSwap<KeySet>,
    /// Held for the whole of a fetch: at most one in flight.
    fetch_lock: Arc<tokio::sync::Mutex<()>>,
    /// Last fetch caused by an unknown kid; only touched on that path.
    last_kid_fetch: Mutex<Option<Instant>>,
    started: AtomicBool,
    fetches: AtomicU64,
    generation: AtomicU64,
    /// The body of the last good fetch: an unchanged document keeps the
    /// set (and the cache entries verified under it).
    last_body: Mutex<Vec<u8>>,
}

impl Remote {
    pub fn new(policy: &str, url: Uri, algorithms: Vec<Algorithm>, refresh: Duration) -> Arc<Self> {
        Arc::new(Remote {
            policy: policy.to_string(),
            shown: shown(&url),
            url,
            algorithms,
            refresh,
            keys: ArcSwap::from_pointee(KeySet::default()),
            fetch_lock: Arc::new(tokio::sync::Mutex::new(())),
            last_kid_fetch: Mutex::new(None),
            started: AtomicBool::new(false),
            fetches: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            last_body: Mutex::new(Vec::new()),
        })
    }

    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Start the background refresher once, on the current runtime. The
    /// task holds only a weak reference: it ends when the policy is dropped
    /// (a reload that changed it).
    pub fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                // Take the fetch lock before returning, so that a token
                // arriving before the first fetch finishes waits for it.
                let guard = self.fetch_lock.clone().try_lock_owned().ok();
                rt.spawn(refresher(Arc::downgrade(self), guard));
            }
            Err(_) => self.started.store(false, Ordering::Release),
        }
    }

    /// A token named a kid not in the set. Returns the set to look in again:
    /// a fresh one when a fetch was allowed, otherwise the current one.
    pub async fn refetch_for(self: &Arc<Self>, kid: &str) -> Arc<KeySet> {
        self.start();
        let in_cooldown = {
            // Poisoning cannot leave an Option<Instant> half-written.
            let last = self
                .last_kid_fetch
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            last.is_some_and(|t| t.elapsed() < KID_COOLDOWN)
        };
        if in_cooldown {
            // A fetch in flight (the first one, or a scheduled one) may
            // bring the kid: wait for it; otherwise answer at once.
            if self.fetch_lock.try_lock().is_err() {
                let _g = self.fetch_lock.lock().await;
            }
            return self.keys();
        }
        let _g = self.fetch_lock.lock().await;
        if self.keys().has_kid(kid) {
            return self.keys();
        }
        {
            let mut last = self
                .last_kid_fetch
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < KID_COOLDOWN) {
                return self.keys();
            }
            *last = Some(Instant::now());
        }
        tracing::info!(policy = %self.policy, "unknown kid: fetching jwks_url again");
        self.fetch_now().await;
        self.keys()
    }

    /// Fetch and swap in the set; the caller holds the fetch lock.
    async fn fetch_now(&self) -> bool {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let body = match fetch(&self.url).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(policy = %self.policy, url = %self.shown, error = %e,
                    "jwks_url fetch failed; keeping the last good key set");
                return false;
            }
        };
        if *self.last_body.lock().unwrap_or_else(|e| e.into_inner()) == body {
            return true;
        }
        match parse_jwks(&body, &self.algorithms) {
            Ok((set, notes)) => {
                *self.last_body.lock().unwrap_or_else(|e| e.into_inner()) = body;
                for n in notes {
                    tracing::debug!(policy = %self.policy, "jwks_url: {n}");
                }
                tracing::debug!(policy = %self.policy, keys = set.keys.len(), "jwks_url fetched");
                self.keys.store(Arc::new(set));
                self.generation.fetch_add(1, Ordering::AcqRel);
                true
            }
            Err(e) => {
                tracing::warn!(policy = %self.policy, url = %self.shown, error = %e,
                    "jwks_url fetch failed; keeping the last good key set");
                false
            }
        }
    }
}

async fn refresher(me: Weak<Remote>, mut first: Option<OwnedMutexGuard<()>>) {
    loop {
        let wait = {
            let Some(r) = me.upgrade() else { return };
            let ok = match first.take() {
                Some(_held) => r.fetch_now().await,
                None => {
                    let _g = r.fetch_lock.lock().await;
                    r.fetch_now().await
                }
            };
            if ok {
                r.refresh
            } else {
                r.refresh.min(RETRY)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Compile-time check of a `jwks_url`. A message never quotes the string
/// as written: it may carry a password (`user:pass@`) or an API key in
/// its query, and `check` prints these messages and a failed reload logs
/// them.
pub fn check_url(s: &str) -> Result<Uri, String> {
    let uri: Uri = s
        .parse()
        .map_err(|_| "not a valid URL (the value is not shown)".to_string())?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(
            "a user name or password in the URL is not supported (the URL is not shown)".into(),
        );
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("{:?} has no host", shown(&uri)))?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback(host) => Ok(uri),
        Some("http") => Err(format!(
            "{:?}: plain http is only allowed to loopback addresses; use https",
            shown(&uri)
        )),
        _ => Err(format!(
            "{:?}: the URL must start with https://",
            shown(&uri)
        )),
    }
}

/// `scheme://host[:port]/path`: a URL as messages and log lines show it.
/// Without userinfo and query, either of which may carry a credential.
pub fn shown(uri: &Uri) -> String {
    let mut s = String::new();
    if let Some(scheme) = uri.scheme_str() {
        s.push_str(scheme);
        s.push_str("://");
    }
    if let Some(host) = uri.host() {
        s.push_str(host);
    }
    if let Some(port) = uri.port() {
        s.push(':');
        s.push_str(port.as_str());
    }
    s.push_str(uri.path());
    s
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub async fn fetch(url: &Uri) -> Result<Vec<u8>, String> {
    tokio::time::timeout(FETCH_TIMEOUT, fetch_inner(url))
        .await
        .map_err(|_| "timed out".to_string())?
}

async fn fetch_inner(url: &Uri) -> Result<Vec<u8>, String> {
    let https = url.scheme_str() == Some("https");
    let host = url.host().ok_or("no host")?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((bare, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if !https {
        // A name like "localhost" could resolve anywhere: check the peer.
        let peer = tcp.peer_addr().map_err(|e| e.to_string())?;
        if !peer.ip().is_loopback() {
            return Err("plain http to a non-loopback address".into());
        }
    }
    // From host and port, not the authority as written, which may carry
    // userinfo (check_url refuses it; this does not depend on that).
    let authority = match url.port() {
        Some(p) => format!("{host}:{}", p.as_str()),
        None => host.to_string(),
    };
    let req = Request::get(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(HOST, authority)
        .header(ACCEPT, "application/json")
        .header(
            USER_AGENT,
            concat!("portcullis/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    if https {
        let name = rustls::pki_types::ServerName::try_from(bare.to_string())
            .map_err(|_| format!("{bare:?} is not a valid TLS server name"))?;
        let tls = tls_connector()
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        send(TokioIo::new(tls), req).await
    } else {
        send(TokioIo::new(tcp), req).await
    }
}

async fn send<IO>(io: IO, req: Request<Empty<Bytes>>) -> Result<Vec<u8>, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    // The connection task ends when `tx` is dropped at the end of this fetch.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    if resp.status() != StatusCode::OK {
        return Err(format!("status {}", resp.status().as_u16()));
    }
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok(body.to_bytes().to_vec())
}

/// One TLS client config for all fetches: Mozilla's roots (webpki-roots),
/// so the proxy verifies identity providers the same way on every machine,
/// whatever the host's CA store holds.
fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONNECTOR: OnceLock<tokio_rustls::TlsConnector> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            // The aws-lc-rs provider supports the safe default versions;
            // this cannot fail with it.
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("aws-lc-rs supports TLS 1.2 and 1.3")
                .with_root_certificates(roots)
                .with_no_client_auth();
            tokio_rustls::TlsConnector::from(Arc::new(config))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Log lines written on this thread while it is held.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    /// Answers one request with `body`; hands back the request head.
    async fn one_answer(body: &'static str) -> (u16, tokio::task::JoinHandle<String>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "request head cut short");
                head.extend_from_slice(&buf[..n]);
            }
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(resp.as_bytes()).await.unwrap();
            String::from_utf8(head).unwrap()
        });
        (port, task)
    }

    #[test]
    fn a_url_is_shown_without_userinfo_or_query() {
        let u: Uri = "https://user:pw@idp.example.com:8443/keys/jwks.json?api_key=k3y"
            .parse()
            .unwrap();
        assert_eq!(shown(&u), "https://idp.example.com:8443/keys/jwks.json");
        let u: Uri = "http://[::1]/jwks".parse().unwrap();
        assert_eq!(shown(&u), "http://[::1]/jwks");
    }

    #[tokio::test]
    async fn the_host_header_is_built_from_host_and_port_only() {
        let (port, head) = one_answer("{\"keys\": []}").await;
        let url: Uri = format!("http://user:pw@127.0.0.1:{port}/jwks?api_key=k3y")
            .parse()
            .unwrap();
        fetch(&url).await.unwrap();
        let head = head.await.unwrap().to_ascii_lowercase();
        assert!(
            head.starts_with("get /jwks?api_key=k3y http/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("\r\nhost: 127.0.0.1:{port}\r\n")),
            "{head}"
        );
        assert!(!head.contains("user:") && !head.contains("pw@"), "{head}");
    }

    #[tokio::test]
    async fn a_failed_fetch_logs_the_url_without_its_query() {
        let log = Captured::default();
        let _g = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer({
                    let log = log.clone();
                    move || log.clone()
                })
                .finish(),
        );
        // Nothing listens on a port that was just free; then a body that
        // is not a key set.
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (port, _head) = one_answer("not json").await;
        for port in [dead, port] {
            let url = format!("http://127.0.0.1:{port}/jwks?api_key=k3y");
            let r = Remote::new("p", url.parse().unwrap(), vec![Algorithm::RS256], RETRY);
            assert!(!r.fetch_now().await);
        }
        let text = log.text();
        assert_eq!(text.matches("jwks_url fetch failed").count(), 2, "{text}");
        assert!(
            text.contains(&format!("url=http://127.0.0.1:{dead}/jwks ")),
            "{text}"
        );
        assert!(
            text.contains(&format!("url=http://127.0.0.1:{port}/jwks ")),
            "{text}"
        );
        assert!(!text.contains("k3y"), "{text}");
    }
}
