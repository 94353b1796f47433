//! Raw config -> runtime `Snapshot`. Loads what the file names, resolves
//! names, compiles routes; collects every error with its place.

use super::raw::*;
use super::units::{parse_duration, parse_size};
use super::{Broken, Errors, Source};
use crate::router::Router;
use crate::state::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub fn compile(
    raw: RawConfig,
    broken: &Broken,
    src: &Source,
    prev: Option<&Snapshot>,
    hash: u64,
) -> Result<Snapshot, Errors> {
    let mut c = Compiler {
        errs: Errors::default(),
        src,
        files: Vec::new(),
        zones: Default::default(),
    };
    let mut server = c.server(&raw.server);
    let log = c.log(&raw.log);
    let listeners = c.listeners(&raw.listen, &broken.listen, raw.tls.is_some() || broken.tls);
    let tls = raw.tls.as_ref().and_then(|t| {
        let prev = prev.and_then(|p| p.tls.as_deref());
        crate::tls::compile::compile(t, src, prev, &mut c.files, &mut c.errs).map(Arc::new)
    });
    let error_pages = c.error_pages(raw.server.error_pages.as_ref(), "server", None);
    let upstreams = c.upstreams(raw.upstream, prev);
    let policies = crate::gate::compile::policies(raw.jwt, &mut c.errs, src, &mut c.files, prev);
    let known = route::Known {
        broken,
        upstreams: &upstreams,
        policies: &policies,
        prev: prev.map(|p| &p.router),
        max_body: server.max_body,
        error_pages: error_pages.as_ref(),
    };
    let routes = c.routes(raw.route, known);
    c.spill_room(&mut server, &routes, raw.server.max_spilled.is_none());
    let mut hidden: Vec<String> = policies
        .values()
        .flat_map(|p| p.query_names())
        .map(str::to_string)
        .collect();
    hidden.sort();
    hidden.dedup();
    let mut claim_headers: Vec<http::HeaderName> = policies
        .values()
        .flat_map(|p| p.claim_headers().cloned())
        .collect();
    // A field a route sets to the name basic_auth let through is trusted by
    // the app as a claim is: no client may send its own, on any route.
    claim_headers.extend(
        routes
            .iter()
            .flat_map(|r| &r.request_headers)
            .filter(|s| s.uses_user())
            .map(|s| s.name().clone()),
    );
    claim_headers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    claim_headers.dedup();
    if c.errs.is_empty() {
        let timed = routes
            .iter()
            .any(|r| matches!(r.action, crate::router::Action::Metrics));
        Ok(Snapshot {
            server,
            log,
            listeners,
            router: Router::new(routes),
            upstreams,
            policies,
            tls,
            files: c.files,
            hash,
            access_log: None,
            log_hidden: (!hidden.is_empty()).then(|| hidden.into()),
            claim_headers,
            error_pages,
            timed,
        })
    } else {
        Err(c.errs)
    }
}

mod client;
mod pages;
mod route;
mod upstream;

pub(crate) struct Compiler<'a> {
    pub(crate) errs: Errors,
    pub(crate) src: &'a Source,
    pub(crate) files: Vec<std::path::PathBuf>,
    /// `rate_limit` zones made so far, with the place that first gave each.
    pub(crate) zones: std::collections::BTreeMap<String, (Arc<crate::limit::RateLimit>, String)>,
}

impl Compiler<'_> {
    /// Whether an error was reported at `place` or inside it (`place.key`,
    /// `place[0]`), but not at a sibling whose name it begins.
    fn has_errors_under(&self, place: &str) -> bool {
        self.errs.0.iter().any(|e| {
            e.place
                .strip_prefix(place)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        })
    }

    fn duration(&mut self, v: &Option<String>, place: &str, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => parse_duration(s).unwrap_or_else(|e| {
                self.errs.add(place, e);
                default
            }),
        }
    }

    fn size(&mut self, v: &Option<String>, place: &str, default: u64) -> u64 {
        match v {
            None => default,
            Some(s) => parse_size(s).unwrap_or_else(|e| {
                self.errs.add(place, e);
                default
            }),
        }
    }

    /// A route's `max_body` may pass the server's (an upload route), and a
    /// body that size is spilled like any other: `max_spilled` unset grows
    /// to the largest, and one set smaller is an error at that route.
    fn spill_room(
        &mut self,
        server: &mut ServerSettings,
        routes: &[crate::router::Route],
        unset: bool,
    ) {
        if unset {
            let largest = routes.iter().map(|r| r.max_body).max().unwrap_or(0);
            server.max_spilled = server.max_spilled.max(largest);
            return;
        }
        // A route without its own has the server's, whose error is its own.
        for r in routes
            .iter()
            .filter(|r| r.max_body > server.max_spilled && r.max_body != server.max_body)
        {
            self.errs.add(
                format!("route[{}].max_body", r.index),
                "must be at most server.max_spilled: a body that size could never be kept",
            );
        }
    }

    fn server(&mut self, r: &RawServer) -> ServerSettings {
        let max_body = self.size(&r.max_body, "server.max_body", 10 << 20);
        let max_buffered = self.size(&r.max_buffered, "server.max_buffered", 256 << 20);
        // Unset, it follows a smaller max_buffered down rather than make an
        // older config that sets only max_buffered wrong.
        let max_body_in_memory = self.size(
            &r.max_body_in_memory,
            "server.max_body_in_memory",
            max_buffered.min(1 << 20),
        );
        if max_body_in_memory > max_buffered {
            self.errs.add(
                "server.max_body_in_memory",
                "must be at most max_buffered: a body that size could never be held in memory",
            );
        }
        let body_temp_dir = self.body_temp_dir(r.body_temp_dir.as_deref());
        // Unset, it grows with a larger max_body, so that raising max_body
        // alone still lets a body that size be kept.
        let max_spilled = self.size(&r.max_spilled, "server.max_spilled", max_body.max(1 << 30));
        if max_spilled < max_body {
            self.errs.add(
                "server.max_spilled",
                "must be at least max_body: a body of max_body could never be kept",
            );
        }
        let threads = match r.threads {
            None | Some(0) => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Some(n) => n,
        };
        let max_header_size = self.size(&r.max_header_size, "server.max_header_size", 64 << 10);
        if max_header_size < 8192 {
            self.errs
                .add("server.max_header_size", "must be at least 8KiB");
        }
        // nginx's default is 128, haproxy's 100; a browser opens fewer. Each
        // stream may hold a body of up to max_body, so this multiplies it.
        let max_concurrent_streams = match r.max_concurrent_streams {
            None => 256,
            Some(n @ 1..=65_536) => n,
            Some(_) => {
                self.errs
                    .add("server.max_concurrent_streams", "must be from 1 to 65536");
                256
            }
        };
        let mut trusted = Vec::new();
        for (i, cidr) in r.trusted_proxies.iter().flatten().enumerate() {
            match parse_cidr(cidr) {
                Ok(n) => trusted.push(n),
                Err(e) => self.errs.add(format!("server.trusted_proxies[{i}]"), e),
            }
        }
        let max_connections = r.max_connections.unwrap_or(10_000);
        if max_connections == 0 {
            self.errs
                .add("server.max_connections", "must be at least 1");
        }
        let scheduling_policy = match r.scheduling_policy.as_deref() {
            None | Some("batch") => SchedPolicy::Batch,
            Some("other") => SchedPolicy::Other,
            Some(_) => {
                self.errs
                    .add("server.scheduling_policy", "must be \"batch\" or \"other\"");
                SchedPolicy::Batch
            }
        };
        let nice = match r.nice {
            None => Nice::default_for(scheduling_policy),
            Some(v @ -20..=19) => Nice {
                value: v as i32,
                explicit: true,
            },
            Some(_) => {
                self.errs
                    .add("server.nice", "must be an integer from -20 to 19");
                Nice::default_for(scheduling_policy)
            }
        };
        ServerSettings {
            threads,
            cpu_affinity: self.affinity(r.cpu_affinity.as_ref()),
            scheduling_policy,
            nice,
            shutdown_timeout: self.duration(
                &r.shutdown_timeout,
                "server.shutdown_timeout",
                Duration::from_secs(30),
            ),
            max_connections,
            header_timeout: self.duration(
                &r.header_timeout,
                "server.header_timeout",
                Duration::from_secs(10),
            ),
            idle_timeout: self.duration(
                &r.idle_timeout,
                "server.idle_timeout",
                Duration::from_secs(60),
            ),
            max_body,
            max_buffered,
            max_body_in_memory,
            body_temp_dir,
            max_spilled,
            max_header_size: max_header_size.min(16 << 20) as usize,
            max_concurrent_streams,
            trusted_proxies: trusted,
            watch: r.watch.unwrap_or(true),
        }
    }

    /// The directory for request bodies too large for memory: made a file
    /// in now, so that a directory the service may not write to is a
    /// config error, not a 503 at the first large upload.
    fn body_temp_dir(&mut self, v: Option<&str>) -> std::path::PathBuf {
        const PLACE: &str = "server.body_temp_dir";
        let dir = match v {
            Some(p) => self.src.resolve(p),
            None => std::env::temp_dir(),
        };
        if let Err(e) = tempfile::tempfile_in(&dir) {
            let how = if v.is_none() {
                " (the default, from TMPDIR)"
            } else {
                ""
            };
            self.errs.add(
                PLACE,
                format!("cannot make a file in {}{how}: {e}", dir.display()),
            );
        }
        dir
    }

    fn affinity(&mut self, v: Option<&toml::Value>) -> Affinity {
        const PLACE: &str = "server.cpu_affinity";
        let list = match v {
            None => return Affinity::Auto,
            Some(toml::Value::String(s)) if s == "auto" => return Affinity::Auto,
            Some(toml::Value::String(s)) if s == "off" => return Affinity::Off,
            Some(toml::Value::Array(list)) if !list.is_empty() => list,
            Some(_) => {
                self.errs.add(
                    PLACE,
                    "must be \"auto\", \"off\" or a list of CPU numbers, as [0, 1]",
                );
                return Affinity::Auto;
            }
        };
        let allowed = crate::workers::allowed_cpus();
        let mut cpus = Vec::new();
        for (i, v) in list.iter().enumerate() {
            let place = format!("{PLACE}[{i}]");
            match v.as_integer().and_then(|n| usize::try_from(n).ok()) {
                None => self.errs.add(place, "must be a CPU number (0, 1, ...)"),
                Some(cpu) => match &allowed {
                    Some(a) if !a.contains(&cpu) => self.errs.add(
                        place,
                        format!("CPU {cpu} is not one this process may run on {a:?}"),
                    ),
                    _ => cpus.push(cpu),
                },
            }
        }
        if cpus.is_empty() {
            return Affinity::Auto;
        }
        Affinity::Cpus(cpus)
    }

    fn log(&mut self, r: &RawLog) -> LogSettings {
        let level = r.level.clone().unwrap_or_else(|| "info".into());
        if !matches!(
            level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            self.errs.add(
                "log.level",
                format!("{level:?} is not one of error, warn, info, debug, trace"),
            );
        }
        let access = match r.access.as_deref() {
            None | Some("stdout") => AccessTarget::Stdout,
            Some("off") => AccessTarget::Off,
            Some("") => {
                self.errs.add(
                    "log.access",
                    "empty; use \"off\", \"stdout\" or a file path",
                );
                AccessTarget::Off
            }
            Some(p) => AccessTarget::File(self.src.resolve(p)),
        };
        let format = match r.format.as_deref() {
            None | Some("combined") => AccessFormat::Combined,
            Some("json") => AccessFormat::Json,
            Some(f) => {
                self.errs
                    .add("log.format", format!("{f:?} is not one of combined, json"));
                AccessFormat::Combined
            }
        };
        LogSettings {
            level,
            access,
            format,
        }
    }

    fn listeners(&mut self, raw: &[RawListen], broken: &[usize], has_tls: bool) -> Vec<ListenSpec> {
        if raw.is_empty() {
            self.errs.add(
                "listen",
                "no [[listen]] entry: add one, e.g. addr = \"0.0.0.0:8080\"",
            );
        }
        let mut out: Vec<ListenSpec> = Vec::new();
        for (i, l) in raw.iter().enumerate() {
            if broken.contains(&i) {
                continue;
            }
            let place = format!("listen[{i}]");
            let addr: SocketAddr = match l.addr.parse() {
                Ok(a) => a,
                Err(_) => {
                    self.errs.add(
                        format!("{place}.addr"),
                        format!(
                            "{:?} is not an IP:port address, e.g. \"0.0.0.0:443\" or \"[::]:443\"",
                            l.addr
                        ),
                    );
                    continue;
                }
            };
            let tls = l.tls.unwrap_or(false);
            let redirect = l.redirect_https.unwrap_or(false);
            let kind = match (tls, redirect) {
                (true, true) => {
                    self.errs
                        .add(&place, "tls and redirect_https exclude each other");
                    continue;
                }
                (true, false) => {
                    if !has_tls {
                        self.errs.add(
                            format!("{place}.tls"),
                            "tls = true needs a [tls] section with at least one [[tls.cert]]",
                        );
                    }
                    ListenKind::Tls
                }
                (false, true) => ListenKind::RedirectHttps,
                (false, false) => ListenKind::Plain,
            };
            if addr.port() != 0 && out.iter().any(|o| o.addr == addr) {
                self.errs
                    .add(format!("{place}.addr"), format!("{addr} is listed twice"));
                continue;
            }
            out.push(ListenSpec {
                addr,
                kind,
                defer_accept: l.defer_accept.unwrap_or(true),
            });
        }
        out
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// "10.0.0.0/8", "192.168.1.7" (a single address), "::1/128".
pub fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(n) = s.parse::<ipnet::IpNet>() {
        return Ok(n.trunc());
    }
    s.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| format!("{s:?} is not an IP address or CIDR like \"10.0.0.0/8\""))
}
