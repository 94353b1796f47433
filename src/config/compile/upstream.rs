//! `[upstream.NAME]` -> `Upstream`: servers, balancing, timeouts, health
//! checks. Servers whose address is unchanged keep their pool and health
//! across a reload.

use super::Compiler;
use crate::config::raw::*;
use crate::state::Snapshot;
use crate::upstream::{Balance, HealthSettings, Server, ServerAddr, Upstream, UpstreamSettings};
use http::HeaderValue;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

impl Compiler<'_> {
    pub(super) fn upstreams(
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
            keepalive_requests: match u.keepalive_requests {
                Some(0) => {
                    self.errs.add(
                        format!("{place}.keepalive_requests"),
                        "must be at least 1 (1 closes every connection after its request)",
                    );
                    1
                }
                n => n.unwrap_or(1000),
            },
            keepalive_timeout: self.duration(
                &u.keepalive_timeout,
                &format!("{place}.keepalive_timeout"),
                // Under gunicorn's own 2 s, so we stop reusing first.
                Duration::from_secs(1),
            ),
            buffer_chunked: u.buffer_chunked.unwrap_or(true),
            buffer_requests: u.buffer_requests.unwrap_or(true),
            buffer_responses: u.buffer_responses.unwrap_or(true),
            max_read_ahead: self.size(
                &u.max_read_ahead,
                &format!("{place}.max_read_ahead"),
                1 << 30,
            ),
            health,
        };
        let prev_up = prev.and_then(|p| p.upstreams.get(name));
        let mut servers: Vec<Arc<Server>> = Vec::new();
        let mut weights = Vec::new();
        let mut backups = Vec::new();
        for (i, s) in u.servers.iter().enumerate() {
            let (addr, weight, backup) = match s {
                RawServerEntry::Addr(a) => (a.as_str(), 1, false),
                RawServerEntry::Detailed(d) => (
                    d.addr.as_str(),
                    d.weight.unwrap_or(1),
                    d.backup.unwrap_or(false),
                ),
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
                    .add(sp, format!("{addr} is listed twice; list it once (give it a weight for a larger share)"));
                continue;
            }
            // Same server in the running config: keep its pool and health.
            let server = prev_up
                .and_then(|p| p.servers.iter().find(|s| s.addr == addr))
                .cloned()
                .unwrap_or_else(|| Arc::new(Server::new(addr, &settings)));
            server.pool.set_max_idle(settings.keepalive);
            server.pool.set_max_requests(settings.keepalive_requests);
            servers.push(server);
            weights.push(weight.clamp(1, 1000));
            backups.push(backup);
        }
        let primaries = backups.iter().filter(|b| !**b).count();
        // From the file's list: an entry already refused is no reason to
        // say that every server is a backup.
        let listed_primary = u
            .servers
            .iter()
            .any(|s| !matches!(s, RawServerEntry::Detailed(d) if d.backup == Some(true)));
        if !listed_primary && !u.servers.is_empty() {
            self.errs.add(
                format!("{place}.servers"),
                "every server is a backup: at least one must take requests while all are well",
            );
        }
        if self.errs.0.len() > n_errs {
            return None;
        }
        // The primaries first, each group in the file's order (a stable sort).
        let mut order: Vec<usize> = (0..servers.len()).collect();
        order.sort_by_key(|&i| backups[i]);
        let servers = order.iter().map(|&i| servers[i].clone()).collect();
        let weights = order.iter().map(|&i| weights[i]).collect();
        Some(Upstream::new(
            name.to_string(),
            servers,
            weights,
            primaries,
            settings,
        ))
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
}
