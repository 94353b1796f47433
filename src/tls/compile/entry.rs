//! One `[[tls.cert]]` -> the key rustls serves and its summary: the files
//! read and checked against each other, or a dev certificate made (or kept
//! from the running config); names, validity and duplicates become errors or
//! warnings with their places.

use super::Ctx;
use crate::config::raw::RawCert;
use crate::tls::certs::{self, PairError};
use crate::tls::sni;
use crate::tls::CertSummary;
use rustls::sign::CertifiedKey;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One certificate as compiled: where it came from and what it serves.
pub(super) struct Entry {
    pub(super) key: Arc<CertifiedKey>,
    pub(super) summary: CertSummary,
}

pub(super) fn cert(cx: &mut Ctx<'_>, i: usize, c: &RawCert) -> Option<Entry> {
    let place = format!("tls.cert[{i}]");
    let (key, dns_names, source, self_signed, not_after) = if let Some(list) = &c.self_signed {
        if c.cert.is_some() || c.key.is_some() {
            cx.errs.add(
                &place,
                "self_signed makes its own certificate: remove cert and key, or self_signed",
            );
            return None;
        }
        let key = dev_cert(cx, &format!("{place}.self_signed"), list)?;
        let dns: Vec<String> = list
            .iter()
            .filter(|n| n.parse::<std::net::IpAddr>().is_err())
            .map(|n| n.to_ascii_lowercase())
            .collect();
        cx.warn(
            &place,
            format!(
                "self-signed certificate for {} made in memory: browsers will warn, NOT FOR PRODUCTION",
                list.join(", ")
            ),
        );
        (
            key,
            dns,
            "self-signed, in memory".to_string(),
            Some(list.clone()),
            None,
        )
    } else {
        let (Some(cert_file), Some(key_file)) = (&c.cert, &c.key) else {
            cx.errs.add(
                &place,
                "set cert and key (PEM files), or self_signed = [\"localhost\"] for development",
            );
            return None;
        };
        // The PEM itself pasted where its path goes: "cannot read <path>"
        // would print it, private key and all.
        let mut pasted = false;
        for (key, value) in [("cert", cert_file), ("key", key_file)] {
            if value.contains("-----BEGIN") || value.contains('\n') {
                cx.errs.add(
                    format!("{place}.{key}"),
                    "the path of a PEM file goes here, not its content (the value given is not shown)",
                );
                pasted = true;
            }
        }
        if pasted {
            return None;
        }
        let cert_path = cx.src.resolve(cert_file);
        let key_path = cx.src.resolve(key_file);
        cx.watch(&cert_path);
        cx.watch(&key_path);
        let (ck, facts) = match certs::load_pair(&cert_path, &key_path, cx.provider) {
            Ok(p) => p,
            Err(PairError::Cert(e)) => {
                cx.errs.add(format!("{place}.cert"), e);
                return None;
            }
            Err(PairError::Key(e)) => {
                cx.errs.add(format!("{place}.key"), e);
                return None;
            }
        };
        validity(cx, &format!("{place}.cert"), &cert_path, &facts);
        (
            Arc::new(ck),
            facts.dns_names,
            cert_path.display().to_string(),
            None,
            Some(facts.not_after),
        )
    };

    let names = match &c.names {
        None => {
            let mut out = Vec::new();
            for n in &dns_names {
                match sni::check_name(n) {
                    Ok(n) if !out.contains(&n) => out.push(n),
                    Ok(_) => {}
                    // A certificate may carry names SNI never uses.
                    Err(e) => cx.warn(&place, format!("certificate name ignored: {e}")),
                }
            }
            out
        }
        Some(list) => {
            let mut out = Vec::new();
            for (j, n) in list.iter().enumerate() {
                match sni::check_name(n) {
                    Ok(n) => {
                        if !dns_names.iter().any(|d| sni::covers(d, &n)) {
                            cx.warn(
                                format!("{place}.names[{j}]"),
                                format!("{n:?} is not among the certificate's names ({}): clients will refuse it", list_or_none(&dns_names)),
                            );
                        }
                        if !out.contains(&n) {
                            out.push(n);
                        }
                    }
                    Err(e) => cx.errs.add(format!("{place}.names[{j}]"), e),
                }
            }
            out
        }
    };
    if names.is_empty() && i > 0 {
        cx.errs.add(
            &place,
            "no DNS name to choose this certificate by (none in the certificate, no names set): only the first certificate serves clients without a known name",
        );
        return None;
    }
    Some(Entry {
        key,
        summary: CertSummary {
            place,
            names,
            source,
            not_after,
            self_signed,
        },
    })
}

fn validity(cx: &mut Ctx<'_>, place: &str, path: &std::path::Path, f: &certs::Facts) {
    let now = SystemTime::now();
    if f.not_after < now {
        cx.warn(
            place,
            format!(
                "{} expired on {}: clients will refuse it; renew it",
                path.display(),
                certs::day(f.not_after)
            ),
        );
    } else if f.not_before > now {
        cx.warn(
            place,
            format!(
                "{} is not valid before {}: clients will refuse it until then",
                path.display(),
                certs::day(f.not_before)
            ),
        );
    } else if f.not_after < now + Duration::from_secs(14 * 86400) {
        cx.warn(
            place,
            format!(
                "{} expires on {}: renew it soon",
                path.display(),
                certs::day(f.not_after)
            ),
        );
    }
}

/// A dev certificate: the running one when its names did not change,
/// otherwise a new one.
fn dev_cert(cx: &mut Ctx<'_>, place: &str, list: &[String]) -> Option<Arc<CertifiedKey>> {
    if list.is_empty() {
        cx.errs.add(
            place,
            "list at least one name, e.g. [\"localhost\", \"127.0.0.1\"]",
        );
        return None;
    }
    let mut bad = false;
    for n in list {
        if n.parse::<std::net::IpAddr>().is_err() {
            if let Err(e) = sni::check_name(n) {
                cx.errs.add(place, e);
                bad = true;
            }
        }
    }
    if bad {
        return None;
    }
    if let Some(k) = cx
        .prev
        .and_then(|p| p.dev_keys.iter().find(|(names, _)| names == list))
    {
        return Some(k.1.clone());
    }
    let dev = match certs::self_signed(list) {
        Ok(d) => d,
        Err(e) => {
            cx.errs.add(place, e);
            return None;
        }
    };
    match CertifiedKey::from_der(vec![dev.cert_der], dev.key_der, cx.provider) {
        Ok(k) => Some(Arc::new(k)),
        Err(e) => {
            cx.errs
                .add(place, format!("cannot use the dev certificate: {e}"));
            None
        }
    }
}

/// A name served by two certificates is ambiguous: which one a client gets
/// would depend on the order in the file.
pub(super) fn duplicates(cx: &mut Ctx<'_>, entries: &[Entry]) {
    for (i, e) in entries.iter().enumerate() {
        for n in &e.summary.names {
            if let Some(first) = entries[..i].iter().find(|o| o.summary.names.contains(n)) {
                cx.errs.add(
                    format!("{}.names", e.summary.place),
                    format!(
                        "{n:?} is also served by {}; set names on one of them",
                        first.summary.place
                    ),
                );
            }
        }
    }
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
