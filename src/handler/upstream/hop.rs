//! The request as it goes to the upstream: hop-by-hop fields out, the
//! forwarding fields (`X-Forwarded-*`, the client certificate's subject) set
//! from what the connection knows, trusting a client's own only when it
//! comes through a trusted proxy.

use crate::client::{join_values, X_FORWARDED_FOR};
use crate::error::ProxyError;
use crate::router::Route;
use crate::service::ConnInfo;
use crate::state::{canonical_ip, Snapshot};
use crate::upstream::h1::strip_fixed_hop_by_hop;
#[cfg(test)]
use crate::upstream::h1::strip_hop_by_hop;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Uri, Version};
use std::net::IpAddr;

static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_CLIENT_CERT_SUBJECT: HeaderName = HeaderName::from_static("x-client-cert-subject");

/// Rewrite the request for the hop to the upstream. Returns the Upgrade
/// header when this is a protocol upgrade (WebSocket).
pub(super) fn prepare(
    parts: &mut http::request::Parts,
    snap: &Snapshot,
    conn: &ConnInfo,
    upgrade: bool,
) -> Result<Option<HeaderValue>, ProxyError> {
    let from_h2 = parts.version == Version::HTTP_2;
    let h = &mut parts.headers;
    if from_h2 {
        join_cookies(h);
    }
    let upgrade = if upgrade {
        h.get(header::UPGRADE).cloned()
    } else {
        None
    };
    strip_fixed_hop_by_hop(h);
    if let Some(u) = &upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, u.clone());
    }

    let peer = canonical_ip(conn.peer.ip());
    let trusted = snap.server.is_trusted(peer);
    let xff = if trusted && h.contains_key(&X_FORWARDED_FOR) {
        let mut chain = join_values(h, &X_FORWARDED_FOR);
        chain.push_str(", ");
        chain.push_str(&peer.to_string());
        HeaderValue::try_from(chain).map_err(|_| ProxyError::BadRequest("bad X-Forwarded-For"))?
    } else {
        ip_header(peer)
    };
    h.insert(X_FORWARDED_FOR.clone(), xff);
    if !(trusted && h.contains_key(&X_FORWARDED_PROTO)) {
        let proto = if conn.is_tls() { "https" } else { "http" };
        h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }

    // The host the route was chosen for is the host the upstream is told:
    // an absolute-form target (HTTP/1) or :authority (HTTP/2) names it, and
    // a Host field beside it is replaced (RFC 9112 §3.2.2, RFC 9113
    // §8.3.1). Otherwise the client's Host goes on; an HTTP/1.0 request
    // without one gets the address it came to, since HTTP/1.1 upstreams
    // need a Host.
    if let Some(a) = parts.uri.authority() {
        // Without userinfo: the HTTP/1 server and `service::h2_fields`
        // refuse a target or :authority that has one.
        let v = HeaderValue::from_str(a.as_str())
            .map_err(|_| ProxyError::BadRequest("bad authority"))?;
        h.insert(header::HOST, v);
    } else if !h.contains_key(header::HOST) {
        h.insert(header::HOST, ip_port_header(conn.local));
    }
    if !(trusted && h.contains_key(&X_FORWARDED_HOST)) {
        // Host is always there by now: a client's own X-Forwarded-Host is
        // replaced, never passed on from an untrusted peer.
        if let Some(host) = h.get(header::HOST).cloned() {
            h.insert(X_FORWARDED_HOST.clone(), host);
        }
    }
    // Never let a client claim a certificate it did not present.
    h.remove(&X_CLIENT_CERT_SUBJECT);
    if let Some(subject) = conn.client_cert_subject.as_deref() {
        h.insert(X_CLIENT_CERT_SUBJECT.clone(), subject.clone());
    }

    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = if parts.uri.scheme().is_none() && parts.uri.authority().is_none() {
        std::mem::take(&mut parts.uri)
    } else {
        Uri::try_from(pq).map_err(|_| ProxyError::BadRequest("bad request target"))?
    };
    parts.version = Version::HTTP_11;
    Ok(upgrade)
}

static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// A route's `strip_prefix`: the app is sent the path after the route's
/// prefix (`/grafana/api/x` -> `/api/x`, `/grafana` -> `/`), the query
/// unchanged, and told what was taken in `X-Forwarded-Prefix`, which
/// replaces a client's own. The path is in its normal form by now, and
/// the prefix matched it; a `%2F` that matched the prefix's last `/` is
/// sent as the `/` it stood for, and a rest that starts with a `;`
/// parameter gets a `/` before it.
pub fn strip_prefix(route: &Route, parts: &mut http::request::Parts) -> Result<(), ProxyError> {
    let rest = route.rest(parts.uri.path());
    let rest = match rest.get(..3) {
        Some(s) if s.eq_ignore_ascii_case("%2f") => format!("/{}", &rest[3..]),
        _ if rest.starts_with('/') => rest.to_string(),
        // A `;` parameter that ended the prefix's last segment
        // (`/api;x/y` under `/api`): a target starts with `/`.
        _ => format!("/{rest}"),
    };
    let pq = match parts.uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest,
    };
    let bad = |_| ProxyError::BadRequest("bad request target");
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.path_and_query = Some(PathAndQuery::try_from(pq).map_err(bad)?);
    parts.uri = Uri::from_parts(uri).map_err(|_| ProxyError::BadRequest("bad request target"))?;
    let prefix = route.prefix.trim_end_matches('/');
    // A prefix is a path the config checked: a valid value. `/` strips
    // nothing, and a client's own claim goes all the same.
    match HeaderValue::from_str(prefix) {
        Ok(v) if !prefix.is_empty() => parts.headers.insert(X_FORWARDED_PREFIX.clone(), v),
        _ => parts.headers.remove(&X_FORWARDED_PREFIX),
    };
    Ok(())
}

/// HTTP/2 may send each cookie as a field of its own; HTTP/1.1 allows one
/// Cookie field, so they are joined with "; " (RFC 9113 §8.2.3).
fn join_cookies(h: &mut HeaderMap) {
    let mut all = h.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (all.next(), all.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in h.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    // Valid header values joined by "; " make a valid header value.
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        h.insert(header::COOKIE, v);
    }
}

fn ip_port_header(addr: std::net::SocketAddr) -> HeaderValue {
    let addr = std::net::SocketAddr::new(canonical_ip(addr.ip()), addr.port());
    // An address's text form is always a valid header value.
    HeaderValue::try_from(addr.to_string()).expect("an address is a valid header value")
}

/// The address as a header value. A thread's requests mostly come from the
/// same few clients (keep-alive connections), so the last one is kept rather
/// than formatted and allocated again for every request.
fn ip_header(ip: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((cached, v)) = last.as_ref() {
            if *cached == ip {
                return v.clone();
            }
        }
        // An address's text form is always a valid header value.
        let v =
            HeaderValue::try_from(ip.to_string()).expect("an IP address is a valid header value");
        *last = Some((ip, v.clone()));
        v
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_connection_tokens_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic x"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn headers_without_hop_by_hop_ones_are_kept_whole() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("example.com"));
        h.append("x-multi", HeaderValue::from_static("1"));
        h.append("x-multi", HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 3);
        let mut h = HeaderMap::new();
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty());
    }
}
