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
//! - The fetch itself, and the URL's check at compile time, are in
//!   `fetch`.

use super::fetch::{fetch, shown};
use super::keys::{parse_jwks, KeySet};
use arc_swap::ArcSwap;
use http::Uri;
use jsonwebtoken::Algorithm;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::OwnedMutexGuard;

/// Least time between two fetches caused by unknown kids.
pub const KID_COOLDOWN: Duration = Duration::from_secs(30);
/// Retry interval after a failed fetch (when shorter than jwks_refresh).
const RETRY: Duration = Duration::from_secs(30);

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::fetch::tests::one_answer;

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
