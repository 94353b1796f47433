//! What a `metrics = true` route shows, in Prometheus's text format
//! (nginx's `stub_status`, haproxy's Prometheus exporter, Caddy's
//! `metrics`): requests and answers by status class, connections,
//! each upstream server's state, reloads, certificates' expiry, and
//! latency histograms (Caddy's and haproxy's exporters have them; nginx's
//! `stub_status` has none).
//!
//! A request adds to counters of its worker's own (a shard on cache lines
//! no other worker writes), so counting costs two uncontended atomic
//! additions; a scrape sums the shards. The rest is read from the running
//! config when asked.

use crate::state::{Snapshot, State};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod histogram;
pub use histogram::Histogram;

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
    /// From a request's head to its answer's, by status class; kept only
    /// while the config has a `metrics` route (`Snapshot::timed`).
    times: [Histogram; 5],
    started: SystemTime,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// Seconds since the epoch of the last config that was loaded: at the
    /// start, then each successful reload.
    loaded_at: AtomicU64,
    /// `max_connections`' permits, taken by the open connections; set
    /// once the server has made them.
    connections: OnceLock<Arc<crate::listener::limit::ConnLimit>>,
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
            times: Default::default(),
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

    /// An answer's head went out with this status, `took` after its
    /// request's head was read (when timed).
    pub fn answer(&self, status: u16, took: Option<Duration>) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.shards[shard_index()].answers[class].fetch_add(1, Ordering::Relaxed);
        if let Some(d) = took {
            self.times[class].observe(d);
        }
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

    pub fn set_connection_limit(&self, limit: Arc<crate::listener::limit::ConnLimit>) {
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
    const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
    for (i, class) in CLASSES.iter().enumerate() {
        let n = m.sum(|s| &s.answers[i]);
        let _ = writeln!(out, "portcullis_responses_total{{code=\"{class}\"}} {n}");
    }
    family(
        &mut out,
        "portcullis_response_time_seconds",
        "histogram",
        "From a request's head read to its answer's head handed to the connection (the time to the first byte, the body not included), by status class; counted while the config has a metrics route.",
    );
    for (h, class) in m.times.iter().zip(CLASSES) {
        if h.count() > 0 {
            let labels = format!("code=\"{class}\"");
            h.render(&mut out, "portcullis_response_time_seconds", &labels);
        }
    }

    let max = snap.server.max_connections;
    if let Some(limit) = m.connections.get() {
        family(
            &mut out,
            "portcullis_connections_open",
            "gauge",
            "Client connections open now, idle and parked ones included.",
        );
        let open = limit
            .taken(max)
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

    family(
        &mut out,
        "portcullis_bodies_held_bytes",
        "gauge",
        "Request bodies read whole before the app is asked and answers read ahead of slow clients, held now in the whole process: in memory (within max_buffered), in temporary files (within max_spilled each).",
    );
    let (request_files, answer_files) = crate::handler::upstream::on_disk();
    for (place, n) in [
        ("memory", crate::handler::upstream::in_memory()),
        ("request_files", request_files),
        ("answer_files", answer_files),
    ] {
        let _ = writeln!(out, "portcullis_bodies_held_bytes{{place=\"{place}\"}} {n}");
    }
    family(
        &mut out,
        "portcullis_answers_read_ahead_total",
        "counter",
        "Answers read from the app ahead of a client slower than it (buffer_responses), in the whole process.",
    );
    let _ = writeln!(
        out,
        "portcullis_answers_read_ahead_total {}",
        crate::upstream::ahead::started()
    );

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
        "portcullis_upstream_server_header_time_seconds",
        "histogram",
        "From an attempt's start (a pooled connection taken or a new one opened) to the server's answer head read: the app's own time, as nginx's $upstream_header_time; counted while the config has a metrics route.",
    );
    for up in snap.upstreams.values() {
        for s in up.servers.iter().filter(|s| s.header_time.count() > 0) {
            let labels = format!(
                "upstream=\"{}\",server=\"{}\"",
                label(&up.name),
                label(&s.label)
            );
            s.header_time.render(
                &mut out,
                "portcullis_upstream_server_header_time_seconds",
                &labels,
            );
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
mod tests;
