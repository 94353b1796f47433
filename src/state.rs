//! The live configuration: one immutable `Snapshot` behind an `ArcSwap`.
//! Each request loads it once and keeps it to the end, so a reload never
//! changes the rules under a request in flight.

use crate::gate::Policy;
use crate::router::Router;
use crate::tls::TlsSettings;
use crate::upstream::Upstream;
use arc_swap::ArcSwap;
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    pub threads: usize,
    pub cpu_affinity: Affinity,
    pub scheduling_policy: SchedPolicy,
    pub nice: Nice,
    pub shutdown_timeout: Duration,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_body: u64,
    /// All request bodies read whole into memory (`buffer_requests`,
    /// `buffer_chunked`) and answers read ahead (`buffer_responses`) at
    /// once, together; past it a body goes to a temporary file rather than
    /// the process taking all the memory `max_concurrent_streams` HTTP/2
    /// streams of `max_body` each would.
    pub max_buffered: u64,
    /// A body read whole and larger than this goes to a temporary file; an
    /// answer read ahead keeps this much in memory, the rest in a file.
    pub max_body_in_memory: u64,
    /// Where those files are made (unnamed: nothing to clean up).
    pub body_temp_dir: std::path::PathBuf,
    /// Their bytes, all together; past it a request gets 503. Answers read
    /// ahead have a budget of this size of their own, past which they go
    /// at their clients' pace.
    pub max_spilled: u64,
    pub max_header_size: usize,
    /// Advertised in each new HTTP/2 connection's SETTINGS.
    pub max_concurrent_streams: u32,
    pub trusted_proxies: Vec<IpNet>,
    pub watch: bool,
}

/// Where the worker threads run (`server.cpu_affinity`); applied once, at
/// start (workers.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Affinity {
    /// One worker per CPU the process may use: each bound to its own.
    Auto,
    Off,
    /// Worker i on `cpus[i % len]`.
    Cpus(Vec<usize>),
}

/// The kernel's scheduling policy for the worker threads
/// (`server.scheduling_policy`); applied once, at start (workers.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedPolicy {
    /// SCHED_BATCH: a woken worker does not preempt the thread running on
    /// its CPU; it runs at that thread's next turn, with more work waiting.
    Batch,
    /// SCHED_OTHER, the kernel's default.
    Other,
}

impl SchedPolicy {
    pub fn name(self) -> &'static str {
        match self {
            SchedPolicy::Batch => "batch",
            SchedPolicy::Other => "other",
        }
    }
}

/// The worker threads' nice value (`server.nice`); applied once, at start
/// (workers.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nice {
    /// -20 (first) to 19 (last).
    pub value: i32,
    /// Written in the config rather than the default: a kernel that refuses
    /// it is then worth a warning, where the default's refusal (an
    /// unprivileged run) is only worth a note.
    pub explicit: bool,
}

impl Nice {
    /// Without `server.nice`: ahead of the app under SCHED_BATCH, where a
    /// worker's precedence never preempts anyone on a wake-up and only lets
    /// it finish its turn; none under SCHED_OTHER, where the same
    /// precedence has each wake-up preempt the app or the clients
    /// (bench/HISTORY.md, "a worker's nice value").
    /// -3 is the least that stopped the preemptions; -5 did no better and
    /// held new connections' p99 back more, and takes more of a shared
    /// CPU from the app (3 times a nice 0 thread's share, against 2).
    pub fn default_for(policy: SchedPolicy) -> Nice {
        let value = match policy {
            SchedPolicy::Batch => -3,
            SchedPolicy::Other => 0,
        };
        Nice {
            value,
            explicit: false,
        }
    }
}

impl ServerSettings {
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }
}

/// IPv4-mapped IPv6 addresses (from dual-stack sockets) compared as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessFormat {
    Combined,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessTarget {
    Off,
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub level: String,
    pub access: AccessTarget,
    pub format: AccessFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenKind {
    Plain,
    Tls,
    RedirectHttps,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    pub addr: SocketAddr,
    pub kind: ListenKind,
    /// `TCP_DEFER_ACCEPT`: the kernel hands over a connection once its
    /// client has sent something (or after about a second), so a silent
    /// client holds no slot and the first read finds the request.
    pub defer_accept: bool,
}

impl ListenSpec {
    /// Whether a running listener for `self` can serve `other` as it is:
    /// the socket options (`defer_accept`) can change on a live socket.
    pub fn same_socket(&self, other: &ListenSpec) -> bool {
        self.addr == other.addr && self.kind == other.kind
    }
}

pub struct Snapshot {
    pub server: ServerSettings,
    pub log: LogSettings,
    pub listeners: Vec<ListenSpec>,
    pub router: Router,
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    pub policies: BTreeMap<String, Arc<Policy>>,
    pub tls: Option<Arc<TlsSettings>>,
    /// Every file the config names (keys, certificates, JWKS): a change to
    /// one of them is a reason to reload.
    pub files: Vec<PathBuf>,
    /// Hash of the config text, for the reload log line.
    pub hash: u64,
    /// The access log writer; set by the server when it takes the snapshot
    /// into service (compiling alone, as `check` does, starts no thread).
    pub access_log: Option<Arc<crate::access_log::Logger>>,
    /// The query parameters any JWT policy reads tokens from: the access
    /// log shows their values as `REDACTED` (`access_log::Entry::hidden`).
    pub log_hidden: Option<Arc<[String]>>,
    /// Every policy's `forward_claims` headers: taken out of every request,
    /// whatever its route, since an app behind an open route trusts them
    /// as much as one behind a gated route.
    pub claim_headers: Vec<http::HeaderName>,
    /// `server.error_pages`, for the answers no route was found for (each
    /// route holds its own merged over these).
    pub error_pages: Option<Arc<crate::handler::error_page::ErrorPages>>,
    /// A route shows the metrics: requests and upstream attempts are timed
    /// for its histograms. Without one the clock is never read for them.
    pub timed: bool,
}

pub struct State {
    current: ArcSwap<Snapshot>,
    /// The port the first TLS listener is really bound to (a configured
    /// port 0 resolved), for the redirect listener; 0: no TLS listener. Set
    /// by the server each time it binds, before anything is served.
    bound_https_port: AtomicU16,
    /// The HTTP/1 connections' idle deadlines (`http::idle`).
    pub idle: Arc<crate::http::IdleSet>,
    /// The HTTP/1 connections parked while idle (`http::park`).
    pub parked: Arc<crate::http::park::Lot>,
    /// Counters for a `metrics` route.
    pub metrics: crate::metrics::Metrics,
}

impl State {
    pub fn new(s: Snapshot) -> Self {
        State {
            current: ArcSwap::from_pointee(s),
            bound_https_port: AtomicU16::new(0),
            idle: Arc::default(),
            parked: Arc::default(),
            metrics: Default::default(),
        }
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn swap(&self, s: Snapshot) -> Arc<Snapshot> {
        self.current.swap(Arc::new(s))
    }

    /// The port HTTPS is served on, for redirects.
    pub fn https_port(&self) -> Option<u16> {
        match self.bound_https_port.load(Ordering::Relaxed) {
            0 => None,
            p => Some(p),
        }
    }

    pub fn set_bound_https_port(&self, port: Option<u16>) {
        self.bound_https_port
            .store(port.unwrap_or(0), Ordering::Relaxed);
    }
}
