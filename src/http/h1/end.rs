//! How an HTTP/1 connection ends: a lingering close, a refused head
//! answered and logged, a hand-over to HTTP/2 or to an upgrade.

use super::io::{lock, Shared};
use super::request::Reject;
use super::{response, Upgraded};
use crate::http::park::Parked;
use crate::http::Io;
use crate::service::ConnInfo;
use crate::state::State;
use http::Method;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// How long a closing connection may take to say goodbye, and how much of
/// an unread request body is read and dropped meanwhile, so that the answer
/// is not lost to a reset (nginx's lingering close).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// How the request loop ended.
pub(super) enum End {
    /// `linger`: a request body may still be arriving.
    Close {
        linger: bool,
    },
    Refused(Reject),
    H2,
    /// A 101 went out: the connection is the upgrade's.
    Upgrade(oneshot::Sender<Upgraded>),
    /// The connection broke.
    Abort,
    /// Idle, to be parked (`park`).
    Park,
}

/// What the connection does once its request loop has ended; the loop
/// awaits it once, boxed.
pub(super) async fn finish<T: Io>(
    end: End,
    shared: Arc<Mutex<Shared<T>>>,
    info: Arc<ConnInfo>,
    state: Arc<State>,
    shutdown: watch::Receiver<bool>,
    idle: Duration,
) -> Option<Parked> {
    match end {
        End::Park => return park(shared, &info, state, shutdown, idle),
        End::Close { linger } => close(&shared, linger).await,
        // The rare ends are boxed again, so that the common one (`close`)
        // allocates only its own small state.
        End::Refused(r) => {
            // Large: it holds a whole response.
            Box::pin(reject(&shared, r, &info, &state)).await;
            close(&shared, true).await;
        }
        End::H2 => {
            Box::pin(crate::http::h2::serve(
                Upgraded::new(shared),
                info,
                state,
                shutdown,
            ))
            .await
        }
        End::Upgrade(tx) => {
            let _ = tx.send(Upgraded::new(shared));
        }
        End::Abort => {}
    }
    None
}

/// The socket and what serving it again needs, out of the task. Nothing
/// else holds the connection's state between requests; if something did,
/// the connection is closed instead, as at its idle timeout.
fn park<T: Io>(
    shared: Arc<Mutex<Shared<T>>>,
    info: &ConnInfo,
    state: Arc<State>,
    shutdown: watch::Receiver<bool>,
    idle: Duration,
) -> Option<Parked> {
    let s = Arc::try_unwrap(shared).ok()?;
    let s = s.into_inner().unwrap_or_else(|e| e.into_inner());
    let due = s.last_ms + idle.as_millis() as u64;
    let stream = s.io.into_parked()?;
    Some(Parked::new(stream, info, state, shutdown, due))
}

/// Answer a head that cannot be served, then close.
async fn reject<T: Io>(
    shared: &Mutex<Shared<T>>,
    Reject(status, text): Reject,
    info: &ConnInfo,
    state: &State,
) {
    tracing::debug!(
        status = status.as_u16(),
        reason = text.trim_end(),
        "request head refused"
    );
    let (mut parts, mut body) = crate::handler::text(status, text).into_parts();
    // An id for the answer and its log line, as every other answer has, so
    // that a client told "400" can name the line. The head was refused, so
    // a client-supplied id was never read.
    let id = crate::service::new_request_id();
    parts
        .headers
        .insert(crate::service::X_REQUEST_ID.clone(), id.clone());
    state.metrics.request();
    // Not timed: a refused head's answer is at once.
    state.metrics.answer(status.as_u16(), None);
    let snap = state.load();
    if let Some(logger) = snap.access_log.clone() {
        // Like nginx, a refused head is logged too, with its first line as
        // it came (a probe or an attack is worth seeing).
        let line = first_line(&lock(shared).rbuf);
        body.set_log(Box::new(crate::access_log::Entry {
            time: std::time::SystemTime::now(),
            start: std::time::Instant::now(),
            client: crate::state::canonical_ip(info.peer.ip()),
            method: Method::GET,
            target: None,
            version: http::Version::HTTP_11,
            status: status.as_u16(),
            bytes: 0,
            referer: None,
            user_agent: None,
            host: String::new(),
            request_id: Some(id),
            upstream: None,
            attempts: 0,
            upstream_head: None,
            user: None,
            reason: Some(text.trim_end()),
            raw_line: Some(line),
            hidden: snap.log_hidden.clone(),
            logger,
        }));
    }
    let mut head = Vec::with_capacity(256);
    let mut keep_alive = false;
    let hint = http_body::Body::size_hint(&body);
    let wire = response::encode_head(
        &mut head,
        &parts,
        None,
        &hint,
        false,
        http::Version::HTTP_11,
        &mut keep_alive,
    );
    let _ = tokio::time::timeout(LINGER, response::send(shared, head, body, wire)).await;
}

/// The first line of what the client sent, at most 200 bytes, with every
/// byte that is not printable ASCII written as `\xHH`.
fn first_line(buf: &[u8]) -> String {
    let end = buf
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(buf.len())
        .min(200);
    let mut out = String::with_capacity(end);
    for &b in &buf[..end] {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// End the connection: send our FIN (TLS: close_notify) and, when the
/// client may still be sending a body we did not read, read and drop it for
/// a moment so that our answer is not destroyed by a reset.
async fn close<T: Io>(shared: &Mutex<Shared<T>>, linger: bool) {
    // Pipelined requests already read are as unanswered as an unread body.
    let linger = linger || !lock(shared).rbuf.is_empty();
    let done = async {
        poll_fn(|cx| Pin::new(&mut lock(shared).io).poll_shutdown(cx)).await?;
        let mut dropped = 0;
        while linger && dropped < LINGER_BYTES {
            let n = poll_fn(|cx| {
                let mut s = lock(shared);
                s.rbuf.clear();
                s.poll_fill(cx)
            })
            .await?;
            if n == 0 {
                break;
            }
            dropped += n;
        }
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(LINGER, done).await;
}
