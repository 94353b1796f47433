//! Active health checks: one task per server of every upstream with a
//! `[upstream.NAME.health]` section, sending `GET path` every `interval`.
//!
//! - A probe is a new connection (TCP or Unix socket) and one request with
//!   `Connection: close`, bounded as a whole by `timeout`; its status must be
//!   in `expect`. Probes of one server run one after the other: the next
//!   waits for the last to finish, so slow servers never pile them up.
//! - `unhealthy` failed probes in a row take the server out of service,
//!   `healthy` passed probes in a row put it back; each change is logged.
//! - The tasks follow the config: `sync` after every swap stops the tasks of
//!   servers that are gone, starts tasks for new ones, and hands changed
//!   settings to running ones. A server a reload keeps is the same
//!   `Arc<Server>`, so its task, counters and verdict carry over.

use super::connect::connect;
use super::{HealthSettings, Server, ServerAddr};
use crate::state::Snapshot;
use bytes::Bytes;
use http::header::{CONNECTION, HOST, USER_AGENT};
use http::{HeaderValue, Request};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What one server's task needs to know; replaced on reload.
#[derive(Debug, Clone, PartialEq)]
struct Spec {
    upstream: String,
    settings: HealthSettings,
}

struct Task {
    server: Weak<Server>,
    spec: watch::Sender<Arc<Spec>>,
    handle: JoinHandle<()>,
}

/// The running health-check tasks, keyed by the server's `Arc` address. The
/// `Weak` each entry holds keeps that allocation (not the server) alive, so
/// an address cannot be reused by a new server while its entry exists.
#[derive(Default)]
pub struct Checker {
    tasks: Mutex<HashMap<usize, Task>>,
}

impl Checker {
    /// Make the running tasks match `snap`. Must run inside a tokio runtime.
    pub fn sync(&self, snap: &Snapshot) {
        let mut want: HashMap<usize, (&Arc<Server>, Spec)> = HashMap::new();
        for up in snap.upstreams.values() {
            let Some(h) = &up.settings.health else {
                continue;
            };
            for s in &up.servers {
                let spec = Spec {
                    upstream: up.name.clone(),
                    settings: h.clone(),
                };
                want.insert(Arc::as_ptr(s) as usize, (s, spec));
            }
        }
        let Ok(mut tasks) = self.tasks.lock() else {
            return;
        };
        tasks.retain(|key, task| {
            if want.contains_key(key) {
                return true;
            }
            task.handle.abort();
            // Still configured, only without checks: the checks' verdict
            // no longer holds.
            if let Some(s) = task.server.upgrade() {
                if s.health.set_probe_down(false) {
                    tracing::warn!(server = %s.label, "health checks removed; upstream server back in service");
                }
            }
            false
        });
        for (key, (server, spec)) in want {
            match tasks.get(&key) {
                Some(task) => {
                    task.spec.send_if_modified(|cur| {
                        let changed = **cur != spec;
                        if changed {
                            *cur = Arc::new(spec.clone());
                        }
                        changed
                    });
                }
                None => {
                    let (tx, rx) = watch::channel(Arc::new(spec));
                    let handle = tokio::spawn(run(Arc::downgrade(server), rx));
                    tasks.insert(
                        key,
                        Task {
                            server: Arc::downgrade(server),
                            spec: tx,
                            handle,
                        },
                    );
                }
            }
        }
    }

    /// Servers with a running check task.
    pub fn len(&self) -> usize {
        self.tasks.lock().map_or(0, |t| t.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Server label -> task id, to check which tasks a sync kept.
    #[cfg(test)]
    fn task_ids(&self) -> HashMap<String, tokio::task::Id> {
        let tasks = self.tasks.lock().unwrap();
        tasks
            .values()
            .filter_map(|t| Some((t.server.upgrade()?.label.to_string(), t.handle.id())))
            .collect()
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.get_mut() {
            tasks.values().for_each(|t| t.handle.abort());
        }
    }
}

/// A random share of `d` between `lo` and `hi`: probes of many servers (and
/// of several proxies) drift apart instead of arriving in step.
fn jitter(d: Duration, lo: f64, hi: f64) -> Duration {
    d.mul_f64(lo + (hi - lo) * fastrand::f64())
}

async fn run(server: Weak<Server>, mut spec: watch::Receiver<Arc<Spec>>) {
    let mut passes: u32 = 0;
    let mut fails: u32 = 0;
    // The first probe soon after start (a `start_unhealthy` server waits for
    // it), spread over up to a second.
    let first = spec.borrow().settings.interval.min(Duration::from_secs(1));
    let mut delay = jitter(first, 0.0, 1.0);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            changed = spec.changed() => {
                if changed.is_err() {
                    return;
                }
                // New settings: wait out the new interval from now.
                delay = jitter(spec.borrow().settings.interval, 0.9, 1.1);
                continue;
            }
        }
        let current = spec.borrow_and_update().clone();
        let h = &current.settings;
        // Not kept across the sleep: a removed server is freed at once.
        let Some(server) = server.upgrade() else {
            return;
        };
        let verdict = match probe(&server.addr, h).await {
            Ok(status) if h.expect.iter().any(|&(a, b)| (a..=b).contains(&status)) => Ok(()),
            Ok(status) => Err(format!("status {status}")),
            Err(e) => Err(e),
        };
        match verdict {
            Ok(()) => {
                fails = 0;
                passes = passes.saturating_add(1);
                if passes >= h.healthy && server.health.probe_down() {
                    server.health.set_probe_down(false);
                    tracing::warn!(
                        upstream = %current.upstream,
                        server = %server.label,
                        passed = passes,
                        "upstream server passed its health checks; in service"
                    );
                }
            }
            Err(why) => {
                passes = 0;
                fails = fails.saturating_add(1);
                tracing::debug!(upstream = %current.upstream, server = %server.label, error = %why, "health check failed");
                if fails >= h.unhealthy && !server.health.probe_down() {
                    server.health.set_probe_down(true);
                    tracing::warn!(
                        upstream = %current.upstream,
                        server = %server.label,
                        failed = fails,
                        last_error = %why,
                        "upstream server failed its health checks; taken out of service"
                    );
                }
            }
        }
        drop(server);
        delay = jitter(h.interval, 0.9, 1.1);
    }
}

/// One probe: the response status, or why there was none. Bounded by the
/// check's `timeout` from connect to response head.
async fn probe(addr: &ServerAddr, h: &HealthSettings) -> Result<u16, String> {
    let host = match (&h.host, addr) {
        (Some(host), _) => host.clone(),
        (None, ServerAddr::Tcp(a)) => a.clone(),
        (None, ServerAddr::Unix(_)) => "localhost".to_string(),
    };
    let req = Request::get(h.path.as_str())
        .header(
            HOST,
            HeaderValue::from_str(&host).map_err(|_| "bad host".to_string())?,
        )
        .header(USER_AGENT, "portcullis-health-check")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let stream = connect(addr, h.timeout)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut tx, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        // Drive the connection here rather than in a task of its own, so
        // that nothing of the probe outlives it.
        let mut conn = std::pin::pin!(conn);
        let mut send = std::pin::pin!(tx.send_request(req));
        let resp = tokio::select! {
            biased;
            resp = &mut send => resp,
            // The connection may end (`Connection: close`) in the same poll
            // that hands over the response: the response still counts.
            _ = &mut conn => send.await,
        };
        resp.map(|r| r.status().as_u16()).map_err(|e| e.to_string())
    };
    tokio::time::timeout(h.timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no response within {:?}", h.timeout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_its_band() {
        let d = Duration::from_millis(1000);
        for _ in 0..100 {
            let j = jitter(d, 0.9, 1.1);
            assert!(j >= Duration::from_millis(900) && j <= Duration::from_millis(1100));
        }
    }

    fn snapshot(servers: &str, health: bool, prev: Option<&Snapshot>) -> Snapshot {
        let text = format!(
            "[[listen]]\naddr = \"127.0.0.1:0\"\n[upstream.app]\nservers = [{servers}]\n{}",
            if health {
                "[upstream.app.health]\npath = \"/healthz\"\ninterval = \"1h\"\nstart_unhealthy = true\n"
            } else {
                ""
            }
        );
        let src = crate::config::Source {
            path: None,
            base_dir: ".".into(),
        };
        crate::config::load_str(&text, &src, prev).unwrap()
    }

    #[tokio::test]
    async fn sync_keeps_the_tasks_of_kept_servers_and_stops_the_others() {
        let checker = Checker::default();
        let a = snapshot("\"127.0.0.1:1\", \"127.0.0.1:2\"", true, None);
        checker.sync(&a);
        let first = checker.task_ids();
        assert_eq!(first.len(), 2);
        // start_unhealthy: out until the checks pass.
        assert!(a.upstreams["app"].servers[0].health.probe_down());

        // Syncing the same snapshot again changes nothing.
        checker.sync(&a);
        assert_eq!(checker.task_ids(), first);

        // A reload that keeps 10.0.0.1 and replaces 10.0.0.2 by 10.0.0.3.
        let b = snapshot("\"127.0.0.1:1\", \"127.0.0.1:3\"", true, Some(&a));
        drop(a);
        checker.sync(&b);
        let second = checker.task_ids();
        assert_eq!(second.len(), 2);
        assert_eq!(second["127.0.0.1:1"], first["127.0.0.1:1"]);
        assert!(!second.contains_key("127.0.0.1:2"));
        assert!(second.contains_key("127.0.0.1:3"));
        // The kept server's verdict carried over with it.
        assert!(b.upstreams["app"].servers[0].health.probe_down());

        // Checks removed: no tasks, and their verdict no longer holds.
        let c = snapshot("\"127.0.0.1:1\"", false, Some(&b));
        checker.sync(&c);
        assert!(checker.is_empty());
        assert!(!c.upstreams["app"].servers[0].health.probe_down());
    }
}
