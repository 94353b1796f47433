//! Upstream pools: the servers of one `[upstream.NAME]`, how a server is
//! picked for a request, their pooled connections and their health.

pub mod balance;
pub mod connect;
pub mod pool;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use balance::Balance;

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerAddr {
    /// `host:port`; an IP literal is parsed once, a name is resolved per connect.
    Tcp(String),
    Unix(PathBuf),
}

impl ServerAddr {
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("{s:?}: empty Unix socket path"));
            }
            return Ok(ServerAddr::Unix(PathBuf::from(path)));
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
    pub keepalive_timeout: Duration,
    pub health: Option<HealthSettings>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthSettings {
    pub path: String,
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
    pub label: String,
    pub pool: pool::Pool,
    pub health: Health,
    /// Requests in flight: what least_conn and random_two compare.
    pub inflight: AtomicUsize,
}

impl Server {
    pub fn new(addr: ServerAddr, keepalive: usize) -> Self {
        Server {
            label: addr.to_string(),
            pool: pool::Pool::new(keepalive),
            addr,
            health: Health::default(),
            inflight: AtomicUsize::new(0),
        }
    }
}

/// Health of one server. Passive: consecutive failures and a time until which
/// the server is out. Active: the probe's verdict.
#[derive(Default)]
pub struct Health {
    fails: AtomicU32,
    /// Milliseconds since `clock_base()` until which the server is out; 0 = in.
    down_until: AtomicU64,
    /// Set while one trial request is allowed after fail_timeout.
    trial: AtomicU32,
    /// 1 when active checks say the server is down.
    probe_down: AtomicU32,
}

fn clock_base() -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

pub fn now_ms() -> u64 {
    clock_base().elapsed().as_millis() as u64 + 1
}

impl Health {
    /// May this server take a request now? After `fail_timeout` one trial
    /// request goes through; its outcome decides.
    pub fn available(&self, now: u64) -> bool {
        if self.probe_down.load(Ordering::Relaxed) == 1 {
            return false;
        }
        let until = self.down_until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        if now < until {
            return false;
        }
        // Past the timeout: let exactly one request try.
        self.trial
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    pub fn is_down(&self, now: u64) -> bool {
        self.probe_down.load(Ordering::Relaxed) == 1 || {
            let until = self.down_until.load(Ordering::Relaxed);
            until != 0 && now < until
        }
    }

    pub fn record_success(&self, label: &str) {
        if self.fails.load(Ordering::Relaxed) != 0 {
            self.fails.store(0, Ordering::Relaxed);
        }
        if self.down_until.load(Ordering::Relaxed) != 0 {
            self.down_until.store(0, Ordering::Relaxed);
            self.trial.store(0, Ordering::Relaxed);
            tracing::warn!(server = label, "upstream server is back in service");
        }
    }

    pub fn record_failure(&self, label: &str, max_fails: u32, fail_timeout: Duration) {
        if max_fails == 0 {
            return;
        }
        let n = self.fails.fetch_add(1, Ordering::Relaxed) + 1;
        let was_down = self.down_until.load(Ordering::Relaxed) != 0;
        if n >= max_fails {
            self.down_until.store(
                now_ms() + fail_timeout.as_millis() as u64,
                Ordering::Relaxed,
            );
            self.trial.store(0, Ordering::Relaxed);
            if !was_down {
                tracing::warn!(
                    server = label,
                    fails = n,
                    "upstream server taken out of service"
                );
            }
        }
    }

    /// Active check verdict; returns true when the state changed.
    pub fn set_probe_down(&self, down: bool) -> bool {
        let v = down as u32;
        self.probe_down.swap(v, Ordering::Relaxed) != v
    }
}

pub struct Upstream {
    pub name: String,
    pub servers: Vec<Arc<Server>>,
    pub weights: Vec<u32>,
    pub settings: UpstreamSettings,
    pub picker: balance::Picker,
}

impl Upstream {
    pub fn new(
        name: String,
        servers: Vec<Arc<Server>>,
        weights: Vec<u32>,
        settings: UpstreamSettings,
    ) -> Self {
        let picker = balance::Picker::new(settings.balance, &weights);
        Upstream {
            name,
            servers,
            weights,
            settings,
            picker,
        }
    }

    /// Pick a server for a request, skipping those out of service and those in
    /// `tried` (a bit set of indexes already attempted for this request).
    pub fn pick(&self, client: IpAddr, tried: u64) -> Option<usize> {
        self.picker
            .pick(&self.servers, &self.weights, client, tried, now_ms())
    }
}
