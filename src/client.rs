//! Who the client is: its address, read through `server.trusted_proxies`
//! (nginx's `set_real_ip_from`), and a route's `allow`/`deny` rules on it.
//! The balancer's `ip_hash`, the access log and the rules all see the same
//! address.

use crate::service::ConnInfo;
use crate::state::{canonical_ip, Snapshot};
use http::header::{HeaderMap, HeaderName};
use ipnet::IpNet;
use std::net::IpAddr;

pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The real client: the peer, or, behind trusted proxies, the right-most
/// X-Forwarded-For address that is not itself a trusted proxy. A client
/// that is not a trusted proxy cannot choose what this returns.
pub fn client_ip(h: &HeaderMap, snap: &Snapshot, conn: &ConnInfo) -> IpAddr {
    let peer = canonical_ip(conn.peer.ip());
    if snap.server.trusted_proxies.is_empty() || !snap.server.is_trusted(peer) {
        return peer;
    }
    // Read from the right, field by field, without joining them: this runs
    // for the log, the rules and the balancer of one request.
    let mut best = peer;
    let values = h.get_all(&X_FORWARDED_FOR).iter().rev();
    for part in values
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.rsplit(','))
    {
        match part.trim().parse::<IpAddr>() {
            Ok(ip) => {
                best = canonical_ip(ip);
                if !snap.server.is_trusted(best) {
                    break;
                }
            }
            // What a trusted proxy wrote after this is all that can be
            // believed: the last address read stands.
            Err(_) => break,
        }
    }
    best
}

/// All the values of a repeatable field, as one comma-separated list.
pub(crate) fn join_values(h: &HeaderMap, name: &HeaderName) -> String {
    let mut s = String::new();
    for v in h.get_all(name) {
        if let Ok(v) = v.to_str() {
            if !s.is_empty() {
                s.push_str(", ");
            }
            s.push_str(v);
        }
    }
    s
}

/// A route's `allow` and `deny` lists. A client is refused when its address
/// is in `deny`, or when `allow` is given and the address is in none of it:
/// `deny` wins, so `allow = ["10.0.0.0/8"]` with `deny = ["10.0.0.5"]`
/// admits the network but that one host.
#[derive(Debug, Default)]
pub struct AddrRules {
    /// `None`: any address not denied.
    pub allow: Option<Vec<IpNet>>,
    pub deny: Vec<IpNet>,
}

impl AddrRules {
    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow
            .as_ref()
            .is_none_or(|allow| allow.iter().any(|n| n.contains(&ip)))
    }
}

/// For `portcullis check`: ` allow=A,B deny=C`, each list only when set.
impl std::fmt::Display for AddrRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let join = |l: &[IpNet]| l.iter().map(IpNet::to_string).collect::<Vec<_>>().join(",");
        if let Some(a) = &self.allow {
            write!(f, " allow={}", join(a))?;
        }
        if !self.deny.is_empty() {
            write!(f, " deny={}", join(&self.deny))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|s| crate::config::compile::parse_cidr(s).unwrap())
            .collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn allow_admits_only_its_networks_and_deny_wins_over_it() {
        let r = AddrRules {
            allow: Some(nets(&["10.0.0.0/8", "2001:db8::/32"])),
            deny: nets(&["10.0.0.5"]),
        };
        assert!(r.admits(ip("10.1.2.3")));
        assert!(r.admits(ip("2001:db8::1")));
        assert!(
            !r.admits(ip("10.0.0.5")),
            "denied inside an allowed network"
        );
        assert!(!r.admits(ip("192.168.1.1")));
        assert!(!r.admits(ip("2001:db9::1")));
        // A dual-stack socket's IPv4-mapped peer is read as the IPv4 address.
        assert!(r.admits(ip("::ffff:10.9.9.9")));
        assert!(!r.admits(ip("::ffff:10.0.0.5")));
    }

    #[test]
    fn deny_alone_admits_everyone_else() {
        let r = AddrRules {
            allow: None,
            deny: nets(&["203.0.113.0/24"]),
        };
        assert!(!r.admits(ip("203.0.113.9")));
        assert!(r.admits(ip("203.0.114.9")));
        assert!(r.admits(ip("::1")));
    }
}
