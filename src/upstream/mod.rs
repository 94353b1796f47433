//! Upstream pools: the servers of one `[upstream.NAME]`, how a server is
//! picked for a request, their pooled connections and their health.

pub mod ahead;
pub mod balance;
pub mod body;
pub mod connect;
pub mod h1;
pub mod health;
pub mod pool;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use balance::Balance;

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerAddr {
    /// `host:port`; an IP literal is parsed once, a name is resolved per connect.
    Tcp(String),
    Unix(PathBuf),
}

impl ServerAddr {
    /// `host:port` or `unix:/path`. The address is what `check` prints and
    /// what logs name the server by, so it must not be able to carry a
    /// credential.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("{s:?}: empty Unix socket path"));
            }
            // A path may hold '@' (systemd instances: /run/app@1.sock);
            // nothing in it is sent anywhere.
            return Ok(ServerAddr::Unix(PathBuf::from(path)));
        }
        if s.contains('@') {
            // `http://user:pass@host:8000`: the message must not repeat it.
            return Err(
                "a user name or password in a server address is not supported; write host:port \
                 (the address given is not shown)"
                    .into(),
            );
        }
        if let Some((scheme, rest)) = s.split_once("://") {
            // Rejected rather than stripped: upstreams are spoken to in
            // plain HTTP/1.1, and taking "https://" as plain would be a
            // silent downgrade.
            let bare = rest.split(['/', '?', '#']).next().unwrap_or(rest);
            return Err(format!(
                "write {bare:?}, without {scheme}:// (servers are spoken to in plain HTTP)"
            ));
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!("{s:?} is not host:port or unix:/path"));
        };
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("{s:?} is not host:port or unix:/path"));
        }
        Ok(ServerAddr::Tcp(s.to_string()))
    }
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerAddr::Tcp(a) => f.write_str(a),
            ServerAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub fail_on_status: bool,
    pub keepalive: usize,
    pub keepalive_requests: u32,
    pub keepalive_timeout: Duration,
    pub buffer_chunked: bool,
    /// Read request bodies with a Content-Length whole before the upstream
    /// is asked (nginx's `proxy_request_buffering`); `buffer_chunked` says
    /// the same of bodies without one.
    pub buffer_requests: bool,
    /// Read answers ahead of slow clients (`ahead.rs`); an answer with
    /// `X-Accel-Buffering: no` is streamed at its client's pace anyway.
    pub buffer_responses: bool,
    /// Bytes an answer read ahead may hold in its file at once.
    pub max_read_ahead: u64,
    pub health: Option<HealthSettings>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthSettings {
    pub path: String,
    /// Host header of a probe; default: the server's address (`localhost`
    /// for a Unix socket).
    pub host: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy: u32,
    pub healthy: u32,
    /// Inclusive status ranges that count as healthy.
    pub expect: Vec<(u16, u16)>,
    pub start_unhealthy: bool,
}

/// One server of an upstream. Lives in an `Arc` that a reload hands over to
/// the new snapshot when the server is still configured, so its idle
/// connections and health carry over.
pub struct Server {
    pub addr: ServerAddr,
    pub label: Arc<str>,
    pub pool: pool::Pool,
    pub health: Health,
    /// Requests in flight: what least_conn and random_two compare.
    pub inflight: AtomicUsize,
    /// Attempts sent to this server, and those that failed (`failed`),
    /// for the metrics route. Beside `inflight`, which each attempt
    /// writes anyway: the same cache line.
    pub attempts: AtomicU64,
    pub failures: AtomicU64,
    /// Each answered attempt's time to the answer's head (while timed).
    pub header_time: crate::metrics::Histogram,
}

impl Server {
    /// A server new to the running config. With active checks and
    /// `start_unhealthy`, it takes no traffic until its checks pass.
    pub fn new(addr: ServerAddr, settings: &UpstreamSettings) -> Self {
        let health = Health::default();
        if settings.health.as_ref().is_some_and(|h| h.start_unhealthy) {
            health.set_probe_down(true);
        }
        Server {
            label: addr.to_string().into(),
            pool: pool::Pool::new(settings.keepalive, settings.keepalive_requests),
            addr,
            health,
            inflight: AtomicUsize::new(0),
            attempts: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            header_time: Default::default(),
        }
    }
}

/// Health of one server. Passive: consecutive failures and a time until which
/// the server is out. Active: the probe's verdict. Pure state: the callers
/// log the transitions these methods report.
#[derive(Default)]
pub struct Health {
    fails: AtomicU32,
    /// Milliseconds on the `now_ms()` clock until which the server is out;
    /// 0 = in service.
    down_until: AtomicU64,
    /// The last `fail_timeout`, in ms: how long one trial request may take
    /// before another is let through.
    penalty: AtomicU64,
    /// True while active checks say the server is down.
    probe_down: AtomicBool,
}

/// Milliseconds since the first call, never 0 (0 means "in service").
///
/// Read on every read and write of a client connection, so from the
/// kernel's coarse monotonic clock: it costs no TSC read, and its tick
/// (1 to 4 ms) is plenty for idle, keep-alive and failure timeouts.
pub fn now_ms() -> u64 {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let now = coarse_ms();
    // Saturating: another thread may set the base a tick after `now`.
    now.saturating_sub(*BASE.get_or_init(|| now)) + 1
}

fn coarse_ms() -> u64 {
    let ts = coarse(libc::CLOCK_MONOTONIC_COARSE);
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Whole seconds since the Unix epoch from the kernel's coarse wall clock
/// (its last tick, 1 to 4 ms old): enough for a Date field, as nginx's
/// cached time is.
pub fn coarse_unix_secs() -> u64 {
    coarse(libc::CLOCK_REALTIME_COARSE).tv_sec.max(0) as u64
}

/// A coarse clock: the kernel's last tick, read without a TSC read.
fn coarse(clock: libc::clockid_t) -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec we own. It cannot
    // fail on Linux; were it to, ts stays zero and time stands still, which
    // only delays timeouts or dates.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts
}

impl Health {
    /// May this server take a request now? Once `fail_timeout` has passed,
    /// exactly one caller wins the trial: the deadline moves on by another
    /// `fail_timeout`, so a trial that is abandoned (client gone) lets the
    /// next one through later rather than keeping the server out for good.
    pub fn available(&self, now: u64) -> bool {
        if self.probe_down.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.down_until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        if now < until {
            return false;
        }
        let next = now + self.penalty.load(Ordering::Relaxed).max(1);
        self.down_until
            .compare_exchange(until, next, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Out of service now (no trial is claimed by asking).
    pub fn is_down(&self, now: u64) -> bool {
        self.probe_down.load(Ordering::Relaxed) || {
            let until = self.down_until.load(Ordering::Relaxed);
            until != 0 && now < until
        }
    }

    /// A request succeeded. Returns true when this put the server back.
    pub fn record_success(&self) -> bool {
        if self.fails.load(Ordering::Relaxed) != 0 {
            self.fails.store(0, Ordering::Relaxed);
        }
        self.down_until.load(Ordering::Relaxed) != 0
            && self.down_until.swap(0, Ordering::AcqRel) != 0
    }

    /// A request failed. Returns the failure count when this took the server
    /// out of service.
    pub fn record_failure(&self, max_fails: u32, fail_timeout: Duration) -> Option<u32> {
        if max_fails == 0 {
            return None;
        }
        let n = self.fails.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if n < max_fails {
            return None;
        }
        let ms = fail_timeout.as_millis() as u64;
        self.penalty.store(ms, Ordering::Relaxed);
        let was = self.down_until.swap(now_ms() + ms, Ordering::AcqRel);
        (was == 0).then_some(n)
    }

    /// The active checks' verdict. Returns true when it changed.
    pub fn set_probe_down(&self, down: bool) -> bool {
        self.probe_down.swap(down, Ordering::Relaxed) != down
    }

    pub fn probe_down(&self) -> bool {
        self.probe_down.load(Ordering::Relaxed)
    }
}

pub struct Upstream {
    pub name: String,
    /// The primary servers first, then the backups (`backup = true`).
    pub servers: Vec<Arc<Server>>,
    pub weights: Vec<u32>,
    /// How many of `servers` are primaries: at least one.
    pub primaries: usize,
    pub settings: UpstreamSettings,
    picker: balance::Picker,
    /// Over the backups, when there are any.
    backup_picker: Option<balance::Picker>,
}

impl Upstream {
    /// `servers` and `weights` in the order above, `primaries` of them
    /// primaries.
    pub fn new(
        name: String,
        servers: Vec<Arc<Server>>,
        weights: Vec<u32>,
        primaries: usize,
        settings: UpstreamSettings,
    ) -> Self {
        let picker = balance::Picker::new(settings.balance, &weights[..primaries]);
        let backup_picker = (primaries < weights.len())
            .then(|| balance::Picker::new(settings.balance, &weights[primaries..]));
        Upstream {
            name,
            servers,
            weights,
            primaries,
            settings,
            picker,
            backup_picker,
        }
    }

    pub fn is_backup(&self, i: usize) -> bool {
        i >= self.primaries
    }

    /// Pick a server for a request, skipping those out of service and those in
    /// `tried` (a bit set of indexes already attempted for this request).
    /// A backup only when no primary is left, as nginx's `backup` servers.
    /// `None` when no server is left: the request fails at once with 503.
    pub fn pick(&self, client: IpAddr, tried: u64) -> Option<usize> {
        let now = now_ms();
        let p = self.primaries;
        let (main, spare) = self.servers.split_at(p);
        let (w_main, w_spare) = self.weights.split_at(p);
        if let Some(i) = self.picker.pick(main, w_main, client, tried, now) {
            return Some(i);
        }
        // With backups there are fewer than 64 primaries, so the shift holds.
        let b = self.backup_picker.as_ref()?;
        b.pick(spare, w_spare, client, tried.checked_shr(p as u32)?, now)
            .map(|i| i + p)
    }

    /// Passive health: a connect error, a timeout, a broken exchange or (with
    /// `fail_on_status`) a 502/503/504 from `server`. As in nginx, a lone
    /// server is never taken out: there is nothing to send its requests to
    /// instead, and after a restart of the app it would refuse traffic for
    /// `fail_timeout` although the app is already back.
    pub fn failed(&self, server: &Server, why: &dyn std::fmt::Display) {
        server.failures.fetch_add(1, Ordering::Relaxed);
        if self.servers.len() < 2 {
            return;
        }
        let s = &self.settings;
        if let Some(fails) = server.health.record_failure(s.max_fails, s.fail_timeout) {
            tracing::warn!(
                upstream = %self.name,
                server = %server.label,
                fails,
                fail_timeout = ?s.fail_timeout,
                last_error = %why,
                "upstream server taken out of service"
            );
        }
    }

    pub fn succeeded(&self, server: &Server) {
        if server.health.record_success() {
            tracing::warn!(
                upstream = %self.name,
                server = %server.label,
                "upstream server back in service (trial request succeeded)"
            );
        }
    }
}
