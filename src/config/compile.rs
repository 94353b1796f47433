//! Raw config -> runtime `Snapshot`. Loads what the file names, resolves
//! names, compiles routes; collects every error with its place.

use super::raw::*;
use super::units::{parse_duration, parse_size};
use super::{Broken, Errors, Source};
use crate::router::{Action, HostMatch, Route, Router};
use crate::state::*;
use crate::upstream::{Balance, HealthSettings, Server, ServerAddr, Upstream, UpstreamSettings};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use std::collections::BTreeMap;
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
    };
    let server = c.server(&raw.server);
    let log = c.log(&raw.log);
    let listeners = c.listeners(&raw.listen, &broken.listen, raw.tls.is_some() || broken.tls);
    let tls = raw.tls.as_ref().and_then(|t| {
        let prev = prev.and_then(|p| p.tls.as_deref());
        crate::tls::compile::compile(t, src, prev, &mut c.files, &mut c.errs).map(Arc::new)
    });
    let upstreams = c.upstreams(raw.upstream, prev);
    let policies = crate::gate::compile::policies(raw.jwt, &mut c.errs, src, &mut c.files, prev);
    let routes = c.routes(raw.route, broken, &upstreams, &policies);
    if c.errs.is_empty() {
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
        })
    } else {
        Err(c.errs)
    }
}

struct Compiler<'a> {
    errs: Errors,
    #[allow(dead_code)]
    src: &'a Source,
    files: Vec<std::path::PathBuf>,
}

impl Compiler<'_> {
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

    fn server(&mut self, r: &RawServer) -> ServerSettings {
        let threads = match r.threads {
            None | Some(0) => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Some(n) => n,
        };
        let max_header_size = self.size(&r.max_header_size, "server.max_header_size", 64 << 10);
        if max_header_size < 8192 {
            self.errs
                .add("server.max_header_size", "must be at least 8KiB");
        }
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
        ServerSettings {
            threads,
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
            max_body: self.size(&r.max_body, "server.max_body", 10 << 20),
            max_header_size: max_header_size.min(16 << 20) as usize,
            trusted_proxies: trusted,
            watch: r.watch.unwrap_or(true),
        }
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
            out.push(ListenSpec { addr, kind });
        }
        out
    }

    fn upstreams(
        &mut self,
        raw: BTreeMap<String, RawUpstream>,
        prev: Option<&Snapshot>,
    ) -> BTreeMap<String, Arc<Upstream>> {
        let mut out = BTreeMap::new();
        for (name, u) in raw {
            let place = format!("upstream.{name}");
            if let Some(up) = self.upstream(&name, u, &place, prev) {
                out.insert(name, Arc::new(up));
            }
        }
        out
    }

    fn upstream(
        &mut self,
        name: &str,
        u: RawUpstream,
        place: &str,
        prev: Option<&Snapshot>,
    ) -> Option<Upstream> {
        let n_errs = self.errs.0.len();
        if u.servers.is_empty() {
            self.errs.add(
                format!("{place}.servers"),
                "no servers: list at least one \"host:port\" or \"unix:/path\"",
            );
        }
        if u.servers.len() > 64 {
            self.errs.add(
                format!("{place}.servers"),
                "at most 64 servers per upstream",
            );
        }
        let balance = match u.balance.as_deref() {
            None => Balance::RoundRobin,
            Some(b) => Balance::parse(b).unwrap_or_else(|e| {
                self.errs.add(format!("{place}.balance"), e);
                Balance::RoundRobin
            }),
        };
        let health = u
            .health
            .as_ref()
            .map(|h| self.health(h, &format!("{place}.health")));
        let settings = UpstreamSettings {
            balance,
            connect_timeout: self.duration(
                &u.connect_timeout,
                &format!("{place}.connect_timeout"),
                Duration::from_secs(3),
            ),
            timeout: self.duration(
                &u.timeout,
                &format!("{place}.timeout"),
                Duration::from_secs(60),
            ),
            retries: u.retries.unwrap_or(1),
            max_fails: u.max_fails.unwrap_or(3),
            fail_timeout: self.duration(
                &u.fail_timeout,
                &format!("{place}.fail_timeout"),
                Duration::from_secs(10),
            ),
            fail_on_status: u.fail_on_status.unwrap_or(false),
            keepalive: u.keepalive.unwrap_or(32),
            keepalive_timeout: self.duration(
                &u.keepalive_timeout,
                &format!("{place}.keepalive_timeout"),
                // Under gunicorn's own 2 s, so we stop reusing first.
                Duration::from_secs(1),
            ),
            health,
        };
        let prev_up = prev.and_then(|p| p.upstreams.get(name));
        let mut servers: Vec<Arc<Server>> = Vec::new();
        let mut weights = Vec::new();
        for (i, s) in u.servers.iter().enumerate() {
            let (addr, weight) = match s {
                RawServerEntry::Addr(a) => (a.as_str(), 1),
                RawServerEntry::Detailed(d) => (d.addr.as_str(), d.weight.unwrap_or(1)),
            };
            let sp = format!("{place}.servers[{i}]");
            if weight == 0 || weight > 1000 {
                self.errs
                    .add(format!("{sp}.weight"), "must be between 1 and 1000");
            }
            let addr = match ServerAddr::parse(addr) {
                // Like every path in the file: relative to the file's directory.
                Ok(ServerAddr::Unix(p)) => ServerAddr::Unix(self.src.resolve(&p.to_string_lossy())),
                Ok(a) => a,
                Err(e) => {
                    self.errs.add(sp, e);
                    continue;
                }
            };
            if servers.iter().any(|s| s.addr == addr) {
                self.errs
                    .add(sp, format!("{addr} is listed twice; use weight instead"));
                continue;
            }
            // Same server in the running config: keep its pool and health.
            let server = prev_up
                .and_then(|p| p.servers.iter().find(|s| s.addr == addr))
                .cloned()
                .unwrap_or_else(|| Arc::new(Server::new(addr, &settings)));
            server.pool.set_max_idle(settings.keepalive);
            servers.push(server);
            weights.push(weight.clamp(1, 1000));
        }
        if self.errs.0.len() > n_errs {
            return None;
        }
        Some(Upstream::new(name.to_string(), servers, weights, settings))
    }

    fn health(&mut self, h: &RawHealth, place: &str) -> HealthSettings {
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        if !path.starts_with('/') {
            self.errs.add(format!("{place}.path"), "must start with /");
        } else if http::uri::PathAndQuery::try_from(path.as_str()).is_err() {
            self.errs
                .add(format!("{place}.path"), "not a valid request path");
        }
        if let Some(host) = &h.host {
            if host.is_empty() || HeaderValue::from_str(host).is_err() {
                self.errs
                    .add(format!("{place}.host"), "not a valid Host header value");
            }
        }
        let mut expect = Vec::new();
        for (i, v) in h.expect.iter().flatten().enumerate() {
            let r = match v {
                toml::Value::Integer(n) if (100..=599).contains(n) => Some((*n as u16, *n as u16)),
                toml::Value::String(s) if s.len() == 3 && s.ends_with("xx") => s[..1]
                    .parse::<u16>()
                    .ok()
                    .filter(|d| (1..=5).contains(d))
                    .map(|d| (d * 100, d * 100 + 99)),
                _ => None,
            };
            match r {
                Some(r) => expect.push(r),
                None => self.errs.add(
                    format!("{place}.expect[{i}]"),
                    "a status code like 200 or a class like \"2xx\"",
                ),
            }
        }
        if expect.is_empty() {
            expect = vec![(200, 399)];
        }
        let unhealthy = h.unhealthy.unwrap_or(3);
        let healthy = h.healthy.unwrap_or(2);
        if unhealthy == 0 || healthy == 0 {
            self.errs
                .add(place, "healthy and unhealthy must be at least 1");
        }
        HealthSettings {
            path,
            host: h.host.clone(),
            interval: self.duration(
                &h.interval,
                &format!("{place}.interval"),
                Duration::from_secs(5),
            ),
            timeout: self.duration(
                &h.timeout,
                &format!("{place}.timeout"),
                Duration::from_secs(2),
            ),
            unhealthy,
            healthy,
            expect,
            start_unhealthy: h.start_unhealthy.unwrap_or(false),
        }
    }

    fn routes(
        &mut self,
        raw: Vec<RawRoute>,
        broken: &Broken,
        upstreams: &BTreeMap<String, Arc<Upstream>>,
        policies: &BTreeMap<String, Arc<crate::gate::Policy>>,
    ) -> Vec<Route> {
        let mut out = Vec::new();
        for (i, r) in raw.into_iter().enumerate() {
            if broken.route.contains(&i) {
                continue;
            }
            let place = format!("route[{i}]");
            if let Some(route) = self.route(i, r, &place, broken, upstreams, policies) {
                out.push(route);
            }
        }
        out
    }

    fn route(
        &mut self,
        index: usize,
        r: RawRoute,
        place: &str,
        broken: &Broken,
        upstreams: &BTreeMap<String, Arc<Upstream>>,
        policies: &BTreeMap<String, Arc<crate::gate::Policy>>,
    ) -> Option<Route> {
        let n_errs = self.errs.0.len();
        let host = match r.host.as_deref() {
            None => HostMatch::Any,
            Some(h) => HostMatch::parse(h).unwrap_or_else(|e| {
                self.errs.add(format!("{place}.host"), e);
                HostMatch::Any
            }),
        };
        let prefix = r.path.clone().unwrap_or_else(|| "/".into());
        if !prefix.starts_with('/') {
            self.errs.add(
                format!("{place}.path"),
                format!("{prefix:?} must start with /"),
            );
        }
        let actions = [
            r.upstream.is_some(),
            r.static_files.is_some(),
            r.redirect.is_some(),
            r.respond.is_some(),
        ];
        let n_actions = actions.iter().filter(|&&a| a).count();
        if n_actions != 1 {
            self.errs.add(
                place,
                if n_actions == 0 {
                    "no action: set one of upstream, static, redirect, respond"
                } else {
                    "more than one action: set only one of upstream, static, redirect, respond"
                },
            );
            return None;
        }
        if r.status.is_some() && r.redirect.is_none() {
            self.errs.add(
                format!("{place}.status"),
                "status goes with redirect; for respond use respond.status",
            );
        }
        let action = if let Some(name) = &r.upstream {
            match upstreams.get(name) {
                Some(u) => Some(Action::Upstream(u.clone())),
                None => {
                    if !broken.upstream.contains(name) {
                        let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
                        self.errs.add(
                            format!("{place}.upstream"),
                            format!(
                                "no upstream named {name:?} (defined: {})",
                                list_or_none(&known)
                            ),
                        );
                    }
                    None
                }
            }
        } else if let Some(s) = &r.static_files {
            crate::handler::static_files::compile(
                s,
                &format!("{place}.static"),
                self.src,
                &mut self.errs,
            )
            .map(|site| Action::Static(Arc::new(site)))
        } else if let Some(to) = &r.redirect {
            let status = r.status.unwrap_or(302);
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                self.errs.add(
                    format!("{place}.status"),
                    "a redirect status is one of 301, 302, 303, 307, 308",
                );
            }
            if HeaderValue::from_str(to).is_err() || to.is_empty() {
                self.errs
                    .add(format!("{place}.redirect"), "not a valid URL");
            }
            Some(Action::Redirect {
                to: to.clone(),
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND),
            })
        } else if let Some(resp) = &r.respond {
            let status = resp.status.unwrap_or(200);
            let st = StatusCode::from_u16(status)
                .ok()
                .filter(|_| (200..=599).contains(&status));
            if st.is_none() {
                self.errs.add(
                    format!("{place}.respond.status"),
                    format!("{status} is not a status between 200 and 599"),
                );
            }
            let ct = resp
                .content_type
                .as_deref()
                .unwrap_or("text/plain; charset=utf-8");
            let content_type = HeaderValue::from_str(ct).unwrap_or_else(|_| {
                self.errs.add(
                    format!("{place}.respond.content_type"),
                    "not a valid header value",
                );
                HeaderValue::from_static("text/plain")
            });
            Some(Action::Respond {
                status: st.unwrap_or(StatusCode::OK),
                body: Bytes::from(resp.body.clone().unwrap_or_default()),
                content_type,
            })
        } else {
            None
        };
        let jwt = r.jwt.as_ref().and_then(|j| policies.get(j).cloned());
        if let Some(j) = r.jwt.as_ref().filter(|_| jwt.is_none()) {
            // A policy that failed to compile has its own error already.
            if !broken.jwt.contains(j)
                && !self
                    .errs
                    .0
                    .iter()
                    .any(|e| e.place.starts_with(&format!("jwt.{j}")))
            {
                let known: Vec<&str> = policies.keys().map(String::as_str).collect();
                self.errs.add(
                    format!("{place}.jwt"),
                    format!(
                        "no jwt policy named {j:?} (defined: {})",
                        list_or_none(&known)
                    ),
                );
            }
        }
        let mut headers = Vec::new();
        for (k, v) in r.headers.iter().flatten() {
            match (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                (Ok(n), Ok(v)) => headers.push((n, v)),
                (Err(_), _) => self.errs.add(
                    format!("{place}.headers"),
                    format!("{k:?} is not a valid header name"),
                ),
                (_, Err(_)) => self
                    .errs
                    .add(format!("{place}.headers.{k}"), "not a valid header value"),
            }
        }
        if self.errs.0.len() > n_errs {
            return None;
        }
        Some(Route {
            index,
            host,
            prefix,
            action: action?,
            jwt,
            headers,
        })
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
