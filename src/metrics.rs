//! What a `metrics = true` route shows, in Prometheus's text format
//! (nginx's `stub_status`, haproxy's Prometheus exporter, Caddy's
//! `metrics`): requests and answers by status class, connections,
//! each upstream server's state, reloads, certificates' expiry.
//!
//! A request adds to counters of its worker's own (a shard on cache lines
//! no other worker writes), so counting costs two uncontended atomic
//! additions; a scrape sums the shards. The rest is read from the running
//! config when asked.

use crate::state::{Snapshot, State};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

const SHARDS: usize = 8;

#[repr(align(128))]
#[derive(Default)]
struct Shard {
    requests: AtomicU64,
    /// Answers by status class, 1xx to 5xx.
    answers: [AtomicU64; 5],
}

/// One server's counters; it lives in its `State`, so that servers in one
/// process (tests) count apart.
pub struct Metrics {
    shards: [Shard; SHARDS],
    started: SystemTime,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// Seconds since the epoch of the last config that was loaded: at the
    /// start, then each successful reload.
    loaded_at: AtomicU64,
    /// `max_connections`' semaphore, whose taken permits are the open
    /// connections; set once the server has made it.
    connections: OnceLock<Arc<tokio::sync::Semaphore>>,
    /// Accept loops holding a permit for the connection they wait for: not
    /// a connection yet.
    accepting: AtomicUsize,
}

/// An accept loop's permit, taken before its connection comes (so that
/// past `max_connections` the kernel's backlog holds new ones).
pub struct Accepting<'a>(&'a Metrics);

impl Drop for Accepting<'_> {
    fn drop(&mut self) {
        self.0.accepting.fetch_sub(1, Ordering::Relaxed);
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The calling thread's shard: a worker's own (other threads share the
/// first worker's, which only they and it write).
fn shard_index() -> usize {
    crate::workers::index() % SHARDS
}

impl Default for Metrics {
    fn default() -> Self {
        let now = SystemTime::now();
        Metrics {
            shards: Default::default(),
            started: now,
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            loaded_at: AtomicU64::new(unix_secs(now)),
            connections: OnceLock::new(),
            accepting: AtomicUsize::new(0),
        }
    }
}

impl Metrics {
    /// A request's head was read and handed to the service.
    pub fn request(&self) {
        self.shards[shard_index()]
            .requests
            .fetch_add(1, Ordering::Relaxed);
    }

    /// An answer's head went out with this status.
    pub fn answer(&self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.shards[shard_index()].answers[class].fetch_add(1, Ordering::Relaxed);
    }

    pub fn reloaded(&self, ok: bool) {
        if ok {
            self.reloads_ok.fetch_add(1, Ordering::Relaxed);
            self.loaded_at
                .store(unix_secs(SystemTime::now()), Ordering::Relaxed);
        } else {
            self.reloads_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An accept loop took a permit; until the guard is dropped (its
    /// connection accepted, or the loop ended) it is not counted as open.
    pub fn accepting(&self) -> Accepting<'_> {
        self.accepting.fetch_add(1, Ordering::Relaxed);
        Accepting(self)
    }

    pub fn set_connection_limit(&self, limit: Arc<tokio::sync::Semaphore>) {
        let _ = self.connections.set(limit);
    }

    fn sum(&self, f: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|s| f(s).load(Ordering::Relaxed))
            .sum()
    }
}

/// A label value as the format wants it: `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One value of an upstream server, at the given `now_ms`.
type ServerValue = fn(&crate::upstream::Server, u64) -> u64;

/// The page, from the counters and the running config.
pub fn render(state: &State, snap: &Snapshot) -> String {
    let m = &state.metrics;
    let mut out = String::with_capacity(2048);
    family(
        &mut out,
        "portcullis_build_info",
        "gauge",
        "The running version.",
    );
    let _ = writeln!(
        out,
        "portcullis_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    family(
        &mut out,
        "portcullis_start_time_seconds",
        "gauge",
        "When the process started, in seconds since the epoch.",
    );
    let _ = writeln!(
        out,
        "portcullis_start_time_seconds {}",
        unix_secs(m.started)
    );

    family(
        &mut out,
        "portcullis_requests_total",
        "counter",
        "Requests read whole (their head) and served or refused by a route. Those minus the answers are in flight or were given up by their client (499 in the access log).",
    );
    let _ = writeln!(out, "portcullis_requests_total {}", m.sum(|s| &s.requests));
    family(
        &mut out,
        "portcullis_responses_total",
        "counter",
        "Answers sent, by status class: the app's and portcullis's own (401, 404, 429, 502, ...).",
    );
    for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
        let n = m.sum(|s| &s.answers[i]);
        let _ = writeln!(out, "portcullis_responses_total{{code=\"{class}\"}} {n}");
    }

    let max = snap.server.max_connections;
    if let Some(limit) = m.connections.get() {
        family(
            &mut out,
            "portcullis_connections_open",
            "gauge",
            "Client connections open now, idle and parked ones included.",
        );
        let open = max
            .saturating_sub(limit.available_permits())
            .saturating_sub(m.accepting.load(Ordering::Relaxed));
        let _ = writeln!(out, "portcullis_connections_open {open}");
    }
    family(
        &mut out,
        "portcullis_connections_parked",
        "gauge",
        "Idle HTTP/1 connections parked (no task, no buffers) until their client sends.",
    );
    let _ = writeln!(
        out,
        "portcullis_connections_parked {}",
        state.parked.count()
    );
    family(
        &mut out,
        "portcullis_connections_max",
        "gauge",
        "server.max_connections.",
    );
    let _ = writeln!(out, "portcullis_connections_max {max}");

    let now = crate::upstream::now_ms();
    let per_server: [(&str, &str, &str, ServerValue); 4] = [
        (
            "portcullis_upstream_server_up",
            "gauge",
            "1 while the server takes requests, 0 while it is out (failed requests or active checks).",
            |s, now| u64::from(!s.health.is_down(now)),
        ),
        (
            "portcullis_upstream_server_in_flight",
            "gauge",
            "Requests being sent to or answered by the server now.",
            |s, _| s.inflight.load(Ordering::Relaxed) as u64,
        ),
        (
            "portcullis_upstream_server_requests_total",
            "counter",
            "Requests sent to the server, a retry counted on the server it went to.",
            |s, _| s.attempts.load(Ordering::Relaxed),
        ),
        (
            "portcullis_upstream_server_failures_total",
            "counter",
            "Requests to the server that failed: connection refused or reset, timeout, broken answer (and 502-504 with fail_on_status).",
            |s, _| s.failures.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, value) in per_server {
        family(&mut out, name, kind, help);
        for up in snap.upstreams.values() {
            for s in &up.servers {
                let _ = writeln!(
                    out,
                    "{name}{{upstream=\"{}\",server=\"{}\"}} {}",
                    label(&up.name),
                    label(&s.label),
                    value(s, now)
                );
            }
        }
    }

    family(
        &mut out,
        "portcullis_config_reloads_total",
        "counter",
        "Reloads (SIGHUP or the file changed), by result; a failed one left the running config in place.",
    );
    for (result, n) in [("success", &m.reloads_ok), ("failure", &m.reloads_failed)] {
        let _ = writeln!(
            out,
            "portcullis_config_reloads_total{{result=\"{result}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    family(
        &mut out,
        "portcullis_config_loaded_timestamp_seconds",
        "gauge",
        "When the running config was loaded, in seconds since the epoch.",
    );
    let _ = writeln!(
        out,
        "portcullis_config_loaded_timestamp_seconds {}",
        m.loaded_at.load(Ordering::Relaxed)
    );

    if let Some(tls) = &snap.tls {
        family(
            &mut out,
            "portcullis_tls_certificate_expiry_timestamp_seconds",
            "gauge",
            "When each [[tls.cert]] stops being valid (its notAfter), in seconds since the epoch.",
        );
        for (i, c) in tls.certs.iter().enumerate() {
            if let Some(t) = c.not_after {
                let _ = writeln!(
                    out,
                    "portcullis_tls_certificate_expiry_timestamp_seconds{{cert=\"{i}\",names=\"{}\"}} {}",
                    label(&c.names.join(",")),
                    unix_secs(t)
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_count_by_class_across_threads() {
        let m = Arc::new(Metrics::default());
        std::thread::scope(|s| {
            for _ in 0..12 {
                let m = m.clone();
                s.spawn(move || {
                    for status in [101, 200, 204, 304, 404, 499, 502, 200] {
                        m.request();
                        m.answer(status);
                    }
                });
            }
        });
        assert_eq!(m.sum(|s| &s.requests), 96);
        let by_class: Vec<u64> = (0..5).map(|i| m.sum(|s| &s.answers[i])).collect();
        assert_eq!(by_class, [12, 36, 12, 24, 12]);
    }

    /// The page from a compiled config alone: servers, certificates and
    /// reloads before any request.
    #[test]
    fn the_page_shows_servers_and_certificates_of_the_config() {
        // A certificate from files: one made in memory has no end to watch
        // (a new one each start).
        let dir = tempfile::tempdir().unwrap();
        let dev = crate::tls::certs::self_signed(&["localhost".into()]).unwrap();
        std::fs::write(dir.path().join("c.pem"), &dev.cert_pem).unwrap();
        std::fs::write(dir.path().join("k.pem"), &dev.key_pem).unwrap();
        let toml = "[[listen]]\naddr = \"127.0.0.1:0\"\ntls = true\n\
                    [[tls.cert]]\ncert = \"c.pem\"\nkey = \"k.pem\"\n\
                    [upstream.app]\nservers = [\"127.0.0.1:8001\", { addr = \"unix:/run/a.sock\", backup = true }]\n\
                    [[route]]\npath = \"/metrics\"\nmetrics = true\nallow = [\"127.0.0.1\"]\n\
                    [[route]]\nupstream = \"app\"\n";
        let src = crate::config::Source {
            path: None,
            base_dir: dir.path().into(),
        };
        let snap = crate::config::load_str(toml, &src, None).unwrap_or_else(|e| panic!("{e}"));
        let state = State::new(snap);
        state.metrics.reloaded(false);
        let page = render(&state, &state.load());
        for line in [
            "portcullis_upstream_server_up{upstream=\"app\",server=\"127.0.0.1:8001\"} 1",
            "portcullis_upstream_server_up{upstream=\"app\",server=\"unix:/run/a.sock\"} 1",
            "portcullis_upstream_server_in_flight{upstream=\"app\",server=\"127.0.0.1:8001\"} 0",
            "portcullis_config_reloads_total{result=\"success\"} 0",
            "portcullis_config_reloads_total{result=\"failure\"} 1",
            "portcullis_requests_total 0",
            "portcullis_connections_parked 0",
        ] {
            assert!(page.lines().any(|l| l == line), "{line} in:\n{page}");
        }
        let expiry = page
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    "portcullis_tls_certificate_expiry_timestamp_seconds{cert=\"0\",names=\"localhost\"} ",
                )
            })
            .unwrap_or_else(|| panic!("no expiry in:\n{page}"));
        let expiry: u64 = expiry.parse().unwrap();
        // The dev certificate runs a year from today.
        let now = unix_secs(SystemTime::now());
        assert!(
            (now + 360 * 86400..now + 370 * 86400).contains(&expiry),
            "{expiry}"
        );
        // No server started: no connection limit to read.
        assert!(!page.contains("portcullis_connections_open"), "{page}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label(r#"unix:/run/a"b\c"#), r#"unix:/run/a\"b\\c"#);
        assert_eq!(label("a\nb"), r"a\nb");
    }
}
