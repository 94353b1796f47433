//! Forwarding to an upstream: headers rewritten for the hop, a server picked,
//! a pooled connection used, retries where they are safe, the response
//! streamed back. WebSocket and other upgrades are joined end to end.

use crate::body::{ProxyBody, ReqBody};
use crate::error::ProxyError;
use crate::handler::Resp;
use crate::http::OnUpgrade;
use crate::router::Route;
use crate::service::{ConnInfo, Outcome};
use crate::state::Snapshot;
use crate::upstream::body::UpstreamBody;
use crate::upstream::h1::{Conn, Head, ProtoError, SendBody};
use crate::upstream::pool::{InflightGuard, RequestBody};
use crate::upstream::{Server, Upstream};
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use std::sync::Arc;

mod buffer;
mod hop;
mod set_headers;
mod spill;

use crate::client::client_ip;
use buffer::read_whole;
pub(crate) use buffer::{in_memory, Share};
use hop::prepare;
pub use hop::strip_prefix;
pub use set_headers::SetHeader;
pub(crate) use spill::on_disk;
pub(crate) use spill::FileSlot;

#[allow(clippy::manual_async_fn)] // a plain fn returning an async block: see `service::handle`
pub fn forward<'a>(
    up: &'a Arc<Upstream>,
    route: &'a Route,
    snap: &'a Snapshot,
    conn: &'a ConnInfo,
    mut parts: http::request::Parts,
    body: ReqBody,
    out: &'a mut Outcome,
) -> impl std::future::Future<Output = Result<Resp, ProxyError>> + Send + 'a {
    async move {
        let client_version = parts.version;
        // The HTTP/1 server put this here when the request asks for an
        // upgrade (HTTP/1.1, `Connection: upgrade` and an `Upgrade` field).
        let client_upgrade = parts.extensions.remove::<OnUpgrade>();
        let upgrade = prepare(&mut parts, snap, conn, client_upgrade.is_some())?;
        let client_ip = client_ip(&parts.headers, snap, conn);
        if !route.request_headers.is_empty() {
            set_headers::apply(&route.request_headers, &mut parts, client_ip, conn.is_tls());
        }
        let max_body = route.max_body;
        let mut send = if http_body::Body::is_end_stream(&body) {
            SendBody::None
        } else if upgrade.is_none()
            && if parts.headers.contains_key(header::CONTENT_LENGTH) {
                up.settings.buffer_requests
            } else {
                up.settings.buffer_chunked
            }
        {
            let whole = read_whole(body, max_body, &snap.server).await?;
            let len = whole.whole_len().unwrap_or(0);
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            whole
        } else {
            SendBody::Stream(RequestBody::limited(body, max_body))
        };
        // A request may go again to another server after it was sent only when
        // it is harmless to repeat and its body (if any) is still at hand.
        let replayable = upgrade.is_none()
            && is_idempotent(&parts.method)
            && !matches!(send, SendBody::Stream(_));
        let mut tried: u64 = 0;
        let mut last_err = ProxyError::NoServerAvailable;
        let max_attempts = up.settings.retries.saturating_add(1);
        let started = out.log.is_some().then(std::time::Instant::now);

        while out.attempts < max_attempts {
            // No server left in service (or all tried): fail now, 503 if none
            // was tried at all, else the last attempt's error.
            let Some(i) = up.pick(client_ip, tried) else {
                break;
            };
            tried |= 1 << i.min(63);
            let server = &up.servers[i];
            out.attempts += 1;
            out.upstream = Some(server.clone());
            let guard = InflightGuard::new(server.clone());
            let sent = snap.timed.then(std::time::Instant::now);
            let result = exchange(up, route, server, &parts, &mut send, replayable).await;
            let result = result.and_then(|(head, c)| {
                if head.status == StatusCode::SWITCHING_PROTOCOLS && upgrade.is_none() {
                    let e = ProxyError::Upstream("101 to a request that asked no upgrade".into());
                    return Err(Failed::Sent(e));
                }
                Ok((head, c))
            });
            match result {
                Ok((head, c)) => {
                    out.upstream_head = started.map(|t| t.elapsed());
                    if let Some(t) = sent {
                        server.header_time.observe(t.elapsed());
                    }
                    let status = head.status.as_u16();
                    if up.settings.fail_on_status && matches!(status, 502..=504) {
                        up.failed(server, &format_args!("status {status}"));
                    } else {
                        up.succeeded(server);
                    }
                    let ahead = up
                        .settings
                        .buffer_responses
                        .then(|| (&snap.server, up.settings.max_read_ahead));
                    let h2 = client_version == http::Version::HTTP_2;
                    let mut r = response(head, c, guard, client_upgrade, ahead, h2);
                    // Answer in the client's protocol, not the upstream's.
                    *r.version_mut() = client_version;
                    return Ok(r);
                }
                Err(Failed::TooLarge) => return Err(ProxyError::BodyTooLarge),
                Err(Failed::Client(e)) => return Err(client_body_error(&e)),
                Err(Failed::Store(e)) => {
                    tracing::warn!(error = %e, "request body's temporary file could not be read");
                    return Err(ProxyError::BodyStore);
                }
                Err(Failed::Unsent(e)) => {
                    tracing::warn!(upstream = %up.name, server = %server.label, error = %e, "upstream request failed before it was sent");
                    up.failed(server, &e);
                    last_err = e;
                }
                Err(Failed::Sent(e)) => {
                    tracing::warn!(upstream = %up.name, server = %server.label, error = %e, "upstream request failed");
                    up.failed(server, &e);
                    last_err = e;
                    if !replayable {
                        break;
                    }
                }
            }
        }
        Err(last_err)
    }
}

/// Why one attempt on one server failed.
enum Failed {
    /// The request never reached the server whole (connect error, or a
    /// connection closed while the head was written): it may go to another
    /// server whatever its method.
    Unsent(ProxyError),
    /// It was sent, maybe in part: only a replayable request may be tried
    /// again.
    Sent(ProxyError),
    /// The client's body grew past max_body while it streamed.
    TooLarge,
    /// The client's body could not be read (the client went away or
    /// paused too long): not the server's fault.
    Client(crate::body::BoxError),
    /// The body's temporary file could not be read back.
    Store(std::io::Error),
}

/// One attempt on one server, up to the response head.
///
/// A reused idle connection that fails before any answer is the keep-alive
/// race (the server closed it just as the request went out), not the
/// server's fault: like nginx, the request goes again on a fresh connection
/// to the same server, within the same attempt, when it can be repeated (it
/// did not reach the server whole, or it is replayable). The idle pool is
/// cleared then: its other connections are as old. A fresh connection is
/// never reused, so this happens at most once per attempt.
async fn exchange(
    up: &Upstream,
    route: &Route,
    server: &Server,
    parts: &http::request::Parts,
    send: &mut SendBody,
    replayable: bool,
) -> Result<(Head, Conn), Failed> {
    let s = &up.settings;
    let mut idle = server.pool.checkout(s.keepalive_timeout);
    loop {
        let reused = idle.is_some();
        let mut c = match idle.take() {
            Some(c) => c,
            None => match server.pool.connect(&server.addr, s.connect_timeout).await {
                Ok(c) => c,
                Err(e) => return Err(Failed::Unsent(ProxyError::Connect(e.to_string()))),
            },
        };
        // The route's own, else its upstream's.
        let timeout = route.timeout.unwrap_or(s.timeout);
        let e = match c.exchange(parts, send, timeout).await {
            Ok(head) => return Ok((head, c)),
            Err(e) => e,
        };
        let err = match e.error {
            // Not the keep-alive race: the server took the request and
            // kept silent (or stopped reading it).
            ProtoError::Timeout => return Err(Failed::Sent(ProxyError::UpstreamTimeout)),
            ProtoError::BodyTooLarge => return Err(Failed::TooLarge),
            ProtoError::Client(e) => return Err(Failed::Client(e)),
            ProtoError::Spill(e) => return Err(Failed::Store(e)),
            other => ProxyError::Upstream(other.to_string()),
        };
        let intact = !e.body_used;
        if reused && !e.answered && intact && (replayable || !e.sent) {
            tracing::debug!(server = %server.label, error = %err, "pooled connection failed on reuse; retrying on a fresh one");
            server.pool.clear();
            continue;
        }
        return Err(if !e.sent && intact {
            Failed::Unsent(err)
        } else {
            Failed::Sent(err)
        });
    }
}

/// The client's response from the app's answer; its body read ahead of the
/// client (`ahead`: the server's budgets for it and the upstream's
/// `max_read_ahead`) unless the app said `X-Accel-Buffering: no`. An HTTP/1
/// connection says when its client falls behind (its socket is full);
/// hyper's HTTP/2 server does not, so an HTTP/2 client's answer is read
/// ahead from the start, as nginx does every answer.
fn response(
    head: Head,
    c: Conn,
    guard: InflightGuard,
    client_upgrade: Option<OnUpgrade>,
    ahead: Option<(&crate::state::ServerSettings, u64)>,
    h2: bool,
) -> Resp {
    // Hop-by-hop headers were left out when the head was parsed.
    let Head {
        status,
        fields,
        framing,
        keep_alive,
        read_ahead,
        ..
    } = head;
    let mut body = if status == StatusCode::SWITCHING_PROTOCOLS {
        // Upgrade and Connection stay: they are the 101's point.
        if let Some(client) = client_upgrade {
            tokio::spawn(join_upgraded(client, c, guard));
        }
        ProxyBody::empty()
    } else {
        let mut body = UpstreamBody::new(c, framing, keep_alive, guard);
        if let Some((server, in_file)) = ahead.filter(|_| read_ahead && !body.is_whole()) {
            body.read_ahead(crate::upstream::ahead::Limits::of(server, in_file), h2);
        }
        ProxyBody::upstream(body)
    };
    body.set_fields(fields);
    let mut r = Response::new(body);
    *r.status_mut() = status;
    // For what the proxy adds (X-Request-Id, HSTS, a route's headers).
    *r.headers_mut() = crate::http::spare::map();
    r
}

async fn join_upgraded(client: OnUpgrade, mut up: Conn, _guard: InflightGuard) {
    use tokio::io::AsyncWriteExt;
    let Some(mut c) = client.wait().await else {
        return tracing::debug!("the client connection ended before the upgrade");
    };
    // What the server sent right after its 101 came with the head.
    if !up.buf.is_empty() {
        if let Err(e) = c.write_all(&up.buf).await {
            return tracing::debug!(error = %e, "upgraded connection ended");
        }
        up.buf.clear();
    }
    if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut up.io).await {
        tracing::debug!(error = %e, "upgraded connection ended");
    }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

fn client_body_error(e: &crate::body::BoxError) -> ProxyError {
    if crate::http::is_body_timeout(e) {
        ProxyError::BodyTimeout
    } else {
        ProxyError::BadRequest("request body could not be read")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_methods() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }
}
