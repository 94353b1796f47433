//! A route's rules on the client: `allow`/`deny` on its address, its
//! `rate_limit`, and `basic_auth`.

use super::Compiler;
use crate::basic_auth::BasicAuth;
use crate::client::AddrRules;
use crate::config::raw::{RawBasicAuth, RawRateLimit};
use crate::limit::RateLimit;
use crate::router::{HostMatch, Router};
use std::sync::Arc;

/// Fastest rate accepted: the limiter counts in microseconds.
const MAX_PER_SECOND: f64 = 1_000_000.0;
const MAX_BURST: u32 = 1_000_000;

impl Compiler<'_> {
    /// `basic_auth`: the users file read now (and watched), so that a
    /// request never waits on the disk.
    pub(super) fn basic_auth(
        &mut self,
        place: &str,
        raw: Option<&RawBasicAuth>,
    ) -> Option<Arc<BasicAuth>> {
        let raw = raw?;
        let path = self.src.resolve(&raw.users);
        if !self.files.contains(&path) {
            self.files.push(path.clone());
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                self.errs.add(
                    format!("{place}.basic_auth.users"),
                    format!("cannot read {}: {e}", path.display()),
                );
                return None;
            }
        };
        let realm = raw.realm.as_deref().unwrap_or("restricted");
        match BasicAuth::new(realm, &text) {
            Ok(a) => {
                let (lowest, highest) = a.costs();
                if lowest != highest {
                    // Accepted: a file grows over years, and refusing it
                    // would lock everyone out on the next reload.
                    tracing::warn!(
                        file = %path.display(),
                        lowest,
                        highest,
                        "basic_auth users mix bcrypt costs: a wrong password's time tells a cheap hash's name; rehash them with one cost"
                    );
                }
                Some(Arc::new(a))
            }
            Err(e) => {
                let key = if e.starts_with("realm") {
                    "realm"
                } else {
                    "users"
                };
                let msg = if key == "users" {
                    format!("{}: {e}", path.display())
                } else {
                    e
                };
                self.errs.add(format!("{place}.basic_auth.{key}"), msg);
                None
            }
        }
    }

    /// `allow` and `deny`: addresses, CIDRs, or `"all"` (nginx's word).
    pub(super) fn addr_rules(
        &mut self,
        place: &str,
        allow: Option<&[String]>,
        deny: Option<&[String]>,
    ) -> Option<AddrRules> {
        if allow.is_none() && deny.is_none() {
            return None;
        }
        if allow.is_some_and(<[String]>::is_empty) {
            // From a script whose list came out empty, this could mean
            // "no one" or "no restriction": neither is guessed.
            self.errs.add(
                format!("{place}.allow"),
                "an empty list would admit no client: to refuse everyone write deny = [\"all\"]; to admit everyone leave allow out",
            );
        }
        let allow = allow.map(|l| self.addr_list(&format!("{place}.allow"), l));
        let deny = deny
            .map(|l| self.addr_list(&format!("{place}.deny"), l))
            .unwrap_or_default();
        Some(AddrRules { allow, deny })
    }

    fn addr_list(&mut self, place: &str, list: &[String]) -> Vec<ipnet::IpNet> {
        let mut out = Vec::new();
        for (i, s) in list.iter().enumerate() {
            if s.trim().eq_ignore_ascii_case("all") {
                out.push(ipnet::IpNet::V4(Default::default()));
                out.push(ipnet::IpNet::V6(Default::default()));
                continue;
            }
            match super::parse_cidr(s.trim()) {
                Ok(n) => out.push(n),
                Err(e) => self.errs.add(format!("{place}[{i}]"), e),
            }
        }
        out
    }

    /// `rate_limit = { rate = "10/s", burst = 20 }`. A reload that keeps a
    /// route (same host and path) and its limit keeps what the limit knows
    /// of each client, as nginx keeps a `limit_req_zone`: a reload is no
    /// fresh burst for anyone.
    pub(super) fn rate_limit(
        &mut self,
        place: &str,
        raw: Option<&RawRateLimit>,
        host: &HostMatch,
        prefix: &str,
        prev: Option<&Router>,
    ) -> Option<Arc<RateLimit>> {
        let raw = raw?;
        let place = format!("{place}.rate_limit");
        let burst = raw.burst.unwrap_or(0);
        if burst > MAX_BURST {
            self.errs.add(
                format!("{place}.burst"),
                format!("must be at most {MAX_BURST}"),
            );
        }
        let per_second = match parse_rate(&raw.rate) {
            Ok(r) => r,
            Err(e) => {
                self.errs.add(format!("{place}.rate"), e);
                return None;
            }
        };
        if let Some(zone) = &raw.zone {
            return self.zone(&place, zone, raw, per_second, burst, prev);
        }
        let same = |r: &&crate::router::Route| {
            r.host == *host
                && r.prefix == prefix
                && r.rate_limit
                    .as_ref()
                    .is_some_and(|l| l.zone.is_none() && l.rate == raw.rate && l.burst == burst)
        };
        if let Some(kept) = prev
            .and_then(|p| p.routes().iter().find(same))
            .and_then(|r| r.rate_limit.clone())
        {
            return Some(kept);
        }
        Some(Arc::new(RateLimit::new(
            raw.rate.clone(),
            per_second,
            burst,
        )))
    }
}

impl Compiler<'_> {
    /// A limit shared by every route that names `zone`: one bucket per
    /// client across them all (nginx's `limit_req_zone` used by several
    /// locations). A reload that keeps the zone's rate and burst keeps its
    /// state, whichever routes name it now.
    fn zone(
        &mut self,
        place: &str,
        zone: &str,
        raw: &RawRateLimit,
        per_second: f64,
        burst: u32,
        prev: Option<&Router>,
    ) -> Option<Arc<RateLimit>> {
        if zone.trim().is_empty() {
            self.errs.add(format!("{place}.zone"), "an empty name");
            return None;
        }
        if let Some((l, first)) = self.zones.get(zone) {
            if l.rate == raw.rate && l.burst == burst {
                return Some(l.clone());
            }
            let msg = format!(
                "zone {zone:?} is rate {:?}, burst {} at {first}: the routes that share a zone share its rate and burst",
                l.rate, l.burst
            );
            self.errs.add(format!("{place}.zone"), msg);
            return None;
        }
        let kept = prev.and_then(|p| {
            p.routes()
                .iter()
                .filter_map(|r| r.rate_limit.as_ref())
                .find(|l| l.zone.as_deref() == Some(zone) && l.rate == raw.rate && l.burst == burst)
                .cloned()
        });
        let limit = kept.unwrap_or_else(|| {
            let mut l = RateLimit::new(raw.rate.clone(), per_second, burst);
            l.zone = Some(zone.to_string());
            Arc::new(l)
        });
        self.zones
            .insert(zone.to_string(), (limit.clone(), place.to_string()));
        Some(limit)
    }
}

/// `"10/s"`, `"30/m"`, `"100/h"`; nginx's `"10r/s"` too. Requests a second.
fn parse_rate(s: &str) -> Result<f64, String> {
    let bad = || format!("{s:?} is not a rate like \"10/s\", \"30/m\" or \"100/h\"");
    let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
    let n = n.trim();
    let n: u32 = n
        .strip_suffix('r')
        .unwrap_or(n)
        .parse()
        .map_err(|_| bad())?;
    let secs = match unit.trim() {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let per_second = f64::from(n) / secs;
    if n == 0 {
        return Err(format!(
            "{s:?}: a rate of 0 would refuse every request; for that use deny = [\"all\"]"
        ));
    }
    if per_second > MAX_PER_SECOND {
        return Err(format!("{s:?}: at most 1000000/s"));
    }
    Ok(per_second)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates_in_each_unit_and_nginx_form() {
        assert_eq!(super::parse_rate("10/s"), Ok(10.0));
        assert_eq!(super::parse_rate("10r/s"), Ok(10.0));
        assert_eq!(super::parse_rate(" 30 / m "), Ok(0.5));
        assert_eq!(super::parse_rate("3600/h"), Ok(1.0));
        for bad in ["10", "10/d", "-1/s", "ten/s", "1.5/s", "10/ s/"] {
            assert!(super::parse_rate(bad).is_err(), "{bad}");
        }
        assert!(super::parse_rate("0/s").unwrap_err().contains("deny"));
        assert!(super::parse_rate("2000000/s").is_err());
    }
}
