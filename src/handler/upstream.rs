//! Forwarding to an upstream: headers rewritten for the hop, a server picked,
//! a pooled connection used, retries where they are safe, the response
//! streamed back. WebSocket and other upgrades are joined end to end.

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::handler::Resp;
use crate::service::{ConnInfo, Outcome};
use crate::state::{canonical_ip, Snapshot};
use crate::upstream::pool::{BodyTooLarge, InflightGuard, Pool, PooledBody, RequestBody};
use crate::upstream::{Server, Upstream};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::IpAddr;
use std::sync::Arc;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_CLIENT_CERT_SUBJECT: HeaderName = HeaderName::from_static("x-client-cert-subject");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

pub async fn forward(
    up: &Arc<Upstream>,
    snap: &Snapshot,
    conn: &ConnInfo,
    mut parts: http::request::Parts,
    body: Incoming,
    out: &mut Outcome,
) -> Result<Resp, ProxyError> {
    let client_version = parts.version;
    let upgrade = prepare(&mut parts, snap, conn)?;
    let client_ip = client_ip(&parts.headers, snap, conn);
    let client_upgrade = if upgrade.is_some() {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    let s = &up.settings;
    let has_body = !hyper::body::Body::is_end_stream(&body);
    // A request may be sent again after a failure only when nothing of it
    // can have been consumed and repeating it is harmless.
    let replayable = !has_body && upgrade.is_none() && is_idempotent(&parts.method);
    let mut pending = Some(Request::from_parts(
        parts,
        RequestBody::limited(body, snap.server.max_body),
    ));
    let mut tried: u64 = 0;
    let mut last_err = ProxyError::NoServerAvailable;
    let max_attempts = s.retries as usize + 1;

    // A pooled connection that fails as it is reused is the keep-alive race
    // (the server closed it as we sent), not the server's fault: like nginx,
    // try again on a fresh connection without counting an attempt.
    let mut free_retries = 2;
    let mut attempt = 0;
    while attempt < max_attempts {
        let Some(i) = up.pick(client_ip, tried) else {
            break;
        };
        tried |= 1 << i.min(63);
        let server = &up.servers[i];
        attempt += 1;
        out.attempts = attempt as u32;
        out.upstream = Some(server.clone());

        let (mut tx, reused) = match server.pool.take_idle(s.keepalive_timeout) {
            Some(tx) => (tx, true),
            None => match Pool::connect(&server.addr, s.connect_timeout).await {
                Ok(tx) => (tx, false),
                Err(e) => {
                    tracing::warn!(upstream = %up.name, server = %server.label, error = %e, "connect to upstream failed");
                    server
                        .health
                        .record_failure(&server.label, s.max_fails, s.fail_timeout);
                    last_err = ProxyError::Connect(e.to_string());
                    continue;
                }
            },
        };
        // Keep a copy for a retry only when one is possible.
        let Some(req) = pending.take() else { break };
        if replayable && (attempt < max_attempts || (reused && free_retries > 0)) {
            pending = Some(clone_head(&req));
        }
        let guard = InflightGuard::new(server.clone());
        let sent = tokio::time::timeout(s.timeout, tx.try_send_request(req)).await;
        match sent {
            Ok(Ok(resp)) => {
                let status = resp.status();
                if s.fail_on_status && matches!(status.as_u16(), 502..=504) {
                    server
                        .health
                        .record_failure(&server.label, s.max_fails, s.fail_timeout);
                } else {
                    server.health.record_success(&server.label);
                }
                let mut r = response(resp, tx, guard, client_upgrade, upgrade.is_some());
                // Answer in the client's protocol, not the upstream's.
                *r.version_mut() = client_version;
                return Ok(r);
            }
            Ok(Err(mut e)) => {
                if is_body_too_large(e.error()) {
                    return Err(ProxyError::BodyTooLarge);
                }
                // Not sent at all: the request is intact and may go on.
                let unsent = e.take_message();
                let was_unsent = unsent.is_some();
                let can_repeat = was_unsent || pending.is_some();
                if let Some(r) = unsent {
                    pending = Some(r);
                }
                if reused && free_retries > 0 && can_repeat {
                    free_retries -= 1;
                    attempt -= 1;
                    tried &= !(1 << i.min(63));
                    server.pool.clear();
                    tracing::debug!(server = %server.label, error = %e.error(), "pooled connection failed on reuse; retrying on a fresh one");
                    continue;
                }
                if !(was_unsent && reused) {
                    server
                        .health
                        .record_failure(&server.label, s.max_fails, s.fail_timeout);
                }
                tracing::warn!(upstream = %up.name, server = %server.label, error = %e.error(), "upstream request failed");
                last_err = ProxyError::Upstream(e.error().to_string());
            }
            Err(_) => {
                server
                    .health
                    .record_failure(&server.label, s.max_fails, s.fail_timeout);
                tracing::warn!(upstream = %up.name, server = %server.label, timeout = ?s.timeout, "upstream timed out");
                last_err = ProxyError::UpstreamTimeout;
            }
        }
        drop(guard);
    }
    Err(last_err)
}

fn response(
    resp: Response<Incoming>,
    tx: crate::upstream::pool::Sender,
    guard: InflightGuard,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    wants_upgrade: bool,
) -> Resp {
    let (mut parts, body) = resp.into_parts();
    if parts.status == http::StatusCode::SWITCHING_PROTOCOLS && wants_upgrade {
        if let Some(client) = client_upgrade {
            let upstream = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
            tokio::spawn(join_upgraded(client, upstream, guard));
        }
        // Upgrade and Connection stay: they are the 101's point.
        return Response::from_parts(parts, ProxyBody::empty());
    }
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(
        parts,
        ProxyBody::upstream(PooledBody::new(body, Some(tx), guard)),
    )
}

async fn join_upgraded(
    client: hyper::upgrade::OnUpgrade,
    upstream: Option<hyper::upgrade::OnUpgrade>,
    _guard: InflightGuard,
) {
    let Some(upstream) = upstream else { return };
    match tokio::try_join!(client, upstream) {
        Ok((c, u)) => {
            let mut c = TokioIo::new(c);
            let mut u = TokioIo::new(u);
            if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
        }
        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
    }
}

/// Rewrite the request for the hop to the upstream. Returns the Upgrade
/// header when this is a protocol upgrade (WebSocket).
fn prepare(
    parts: &mut http::request::Parts,
    snap: &Snapshot,
    conn: &ConnInfo,
) -> Result<Option<HeaderValue>, ProxyError> {
    let h = &mut parts.headers;
    let upgrade = if parts.version == Version::HTTP_11 && connection_has(h, "upgrade") {
        h.get(header::UPGRADE).cloned()
    } else {
        None
    };
    strip_hop_by_hop(h);
    if let Some(u) = &upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, u.clone());
    }

    let peer = canonical_ip(conn.peer.ip());
    let trusted = snap.server.is_trusted(peer);
    let peer_s = peer.to_string();
    let xff = if trusted && h.contains_key(&X_FORWARDED_FOR) {
        let mut chain = join_values(h, &X_FORWARDED_FOR);
        chain.push_str(", ");
        chain.push_str(&peer_s);
        chain
    } else {
        peer_s
    };
    h.insert(
        X_FORWARDED_FOR.clone(),
        HeaderValue::try_from(xff).map_err(|_| ProxyError::BadRequest("bad X-Forwarded-For"))?,
    );
    if !(trusted && h.contains_key(&X_FORWARDED_PROTO)) {
        let proto = if conn.is_tls() { "https" } else { "http" };
        h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }

    // HTTP/2 carries the host in :authority; HTTP/1.1 upstreams need Host.
    if !h.contains_key(header::HOST) {
        if let Some(a) = parts.uri.authority() {
            let v = HeaderValue::from_str(a.as_str())
                .map_err(|_| ProxyError::BadRequest("bad authority"))?;
            h.insert(header::HOST, v);
        }
    }
    if !(trusted && h.contains_key(&X_FORWARDED_HOST)) {
        if let Some(host) = h.get(header::HOST).cloned() {
            h.insert(X_FORWARDED_HOST.clone(), host);
        }
    }
    // Never let a client claim a certificate it did not present.
    h.remove(&X_CLIENT_CERT_SUBJECT);
    if let Some(subject) = &conn.client_cert_subject {
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

/// The real client: the peer, or, behind trusted proxies, the right-most
/// X-Forwarded-For address that is not itself a trusted proxy.
fn client_ip(h: &HeaderMap, snap: &Snapshot, conn: &ConnInfo) -> IpAddr {
    let peer = canonical_ip(conn.peer.ip());
    if snap.server.trusted_proxies.is_empty() || !snap.server.is_trusted(peer) {
        return peer;
    }
    let chain = join_values(h, &X_FORWARDED_FOR);
    let mut best = peer;
    for part in chain.rsplit(',') {
        match part.trim().parse::<IpAddr>() {
            Ok(ip) => {
                best = canonical_ip(ip);
                if !snap.server.is_trusted(best) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    best
}

fn join_values(h: &HeaderMap, name: &HeaderName) -> String {
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

fn connection_has(h: &HeaderMap, token: &str) -> bool {
    h.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Remove hop-by-hop headers: the fixed set and whatever Connection names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    if h.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
        h.remove(header::CONNECTION);
    }
    for n in [
        &KEEP_ALIVE,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &PROXY_CONNECTION,
    ] {
        h.remove(n);
    }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn clone_head(r: &Request<RequestBody>) -> Request<RequestBody> {
    let mut c = Request::new(RequestBody::empty());
    *c.method_mut() = r.method().clone();
    *c.uri_mut() = r.uri().clone();
    *c.version_mut() = r.version();
    *c.headers_mut() = r.headers().clone();
    c
}

fn is_body_too_large(e: &hyper::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if s.is::<BodyTooLarge>() {
            return true;
        }
        src = s.source();
    }
    false
}

#[allow(dead_code)]
fn _assert_server_is_shared(_: &Arc<Server>) {}

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
    fn idempotent_methods() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }
}
