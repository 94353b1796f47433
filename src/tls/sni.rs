//! Choosing a certificate by the name the client asked for (SNI).

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

/// Exact names first, then a wildcard for the parent name; no SNI or an
/// unknown name gets the first certificate (the default).
#[derive(Debug)]
pub struct SniResolver {
    certs: Vec<Arc<CertifiedKey>>,
    exact: HashMap<String, usize>,
    /// `*.example.com` stored as `example.com`.
    wildcard: HashMap<String, usize>,
}

impl SniResolver {
    /// `names[i]` are the names of `certs[i]`, already checked and lowercased
    /// by the compiler (no duplicates across certificates).
    pub fn new(certs: Vec<Arc<CertifiedKey>>, names: &[Vec<String>]) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, list) in names.iter().enumerate() {
            for n in list {
                match n.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()).or_insert(i),
                    None => exact.entry(n.clone()).or_insert(i),
                };
            }
        }
        SniResolver {
            certs,
            exact,
            wildcard,
        }
    }

    /// Index of the certificate for `server_name`; 0 (the default) when none
    /// is configured for it.
    pub fn pick(&self, server_name: Option<&str>) -> usize {
        let Some(name) = server_name else { return 0 };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(&i) = self.exact.get(&name) {
            return i;
        }
        // A wildcard covers exactly one label (RFC 6125 6.4.3).
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .copied()
            .unwrap_or(0)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.certs.get(self.pick(hello.server_name())).cloned()
    }
}

/// A name usable for SNI matching: a DNS name, or `*.` and a DNS name with at
/// least two labels. Returns it lowercased.
pub fn check_name(name: &str) -> Result<String, String> {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    if lower.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "{name:?} is an IP address: clients never send one as SNI; \
             an IP client gets the first (default) certificate"
        ));
    }
    let (wild, rest) = match lower.strip_prefix("*.") {
        Some(r) => (true, r),
        None => (false, lower.as_str()),
    };
    let labels_ok = !rest.is_empty()
        && rest.len() <= 253
        && rest.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !labels_ok {
        return Err(format!(
            "{name:?} is not a DNS name like \"example.com\" or \"*.example.com\""
        ));
    }
    if wild && !rest.contains('.') {
        return Err(format!(
            "{name:?}: a wildcard needs at least two labels after \"*.\""
        ));
    }
    Ok(lower)
}

/// Whether a certificate name (possibly a wildcard) covers `name`.
pub fn covers(cert_name: &str, name: &str) -> bool {
    if cert_name.eq_ignore_ascii_case(name) {
        return true;
    }
    match (cert_name.strip_prefix("*."), name.split_once('.')) {
        (Some(parent), Some((_, name_parent))) => {
            // `*.example.com` in the certificate covers `*.example.com` and
            // `a.example.com` in `names`.
            parent.eq_ignore_ascii_case(name_parent)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(names: &[&[&str]]) -> SniResolver {
        let names: Vec<Vec<String>> = names
            .iter()
            .map(|l| l.iter().map(|s| s.to_string()).collect())
            .collect();
        // `pick` needs no keys: the certificate list is only indexed.
        SniResolver::new(Vec::new(), &names)
    }

    #[test]
    fn exact_beats_wildcard_and_unknown_gets_default() {
        let r = resolver(&[&["default.test"], &["*.example.com"], &["api.example.com"]]);
        assert_eq!(r.pick(Some("api.example.com")), 2);
        assert_eq!(r.pick(Some("API.Example.COM.")), 2);
        assert_eq!(r.pick(Some("www.example.com")), 1);
        assert_eq!(
            r.pick(Some("example.com")),
            0,
            "wildcard does not cover its parent"
        );
        assert_eq!(
            r.pick(Some("a.b.example.com")),
            0,
            "wildcard covers one label"
        );
        assert_eq!(r.pick(Some("other.test")), 0);
        assert_eq!(r.pick(None), 0);
    }

    #[test]
    fn deeper_wildcard_wins_for_its_names() {
        let r = resolver(&[&["*.example.com"], &["*.eu.example.com"]]);
        assert_eq!(r.pick(Some("x.eu.example.com")), 1);
        assert_eq!(r.pick(Some("eu.example.com")), 0);
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name("Example.COM").unwrap(), "example.com");
        assert_eq!(check_name("*.example.com").unwrap(), "*.example.com");
        assert!(check_name("127.0.0.1").unwrap_err().contains("IP address"));
        assert!(check_name("*.com").is_err());
        assert!(check_name("a..b").is_err());
        assert!(check_name("exa mple.com").is_err());
        assert!(check_name("foo.*.com").is_err());
        assert!(check_name("").is_err());
    }

    #[test]
    fn coverage() {
        assert!(covers("*.example.com", "www.example.com"));
        assert!(covers("*.example.com", "*.example.com"));
        assert!(covers("Example.com", "example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("www.example.com", "api.example.com"));
    }
}
