//! HTTP/1.x on one client connection: read a head, run the request through
//! the service, write the answer, and again while the client keeps the
//! connection. Everything happens in the connection's task; the request body
//! reads the same socket through `io::Shared`.
//!
//! Timeouts: an idle connection (no byte read or written) is closed after
//! `idle_timeout`, kept by the server's sweeper (`http::idle`) rather than
//! a timer in each connection; `header_timeout` starts with the first byte
//! of a head, so a head that arrives in one read never touches a timer.

mod io;
mod request;
mod response;
#[cfg(test)]
mod tests;

pub use io::{is_body_timeout, BodyError, H1Body, OnUpgrade, Upgraded};

use self::io::{lock, Shared, SharedIo};
use self::request::{Head, Reject};
use super::idle::IdleTimer;
use super::Io;
use crate::body::ReqBody;
use crate::service::{self, ConnInfo};
use crate::state::State;
use http::{Method, Request, StatusCode};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::Sleep;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long a closing connection may take to say goodbye, and how much of
/// an unread request body is read and dropped meanwhile, so that the answer
/// is not lost to a reset (nginx's lingering close).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// Kept small: it lives in every connection's task.
#[derive(Clone, Copy)]
struct Limits {
    header_timeout_ms: u32,
    idle_ms: u32,
    max_head: u32,
}

impl Limits {
    fn new(s: &crate::state::ServerSettings) -> Self {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        Limits {
            header_timeout_ms: ms(s.header_timeout),
            idle_ms: ms(s.idle_timeout),
            max_head: u32::try_from(s.max_header_size).unwrap_or(u32::MAX),
        }
    }

    fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms.into())
    }

    fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms.into())
    }
}

// Returned once per request and moved once: boxing would cost more.
#[allow(clippy::large_enum_variant)]
enum Next {
    Request(Head),
    /// The client went away, idled out, or the server is shutting down.
    Closed,
    H2,
    Reject(Reject),
}

/// Serve HTTP/1.x until the connection ends; a client that opens with the
/// HTTP/2 preface is handed to HTTP/2.
///
/// The future returned is the connection's task, and its size is most of
/// what an idle connection costs. So the connection's state is made here,
/// and `io`, moved into it, keeps no room in the future; and the future is
/// a block, not an async fn, which would keep every argument twice (as
/// given, and moved into its body).
pub fn serve<T: Io>(
    io: T,
    info: Arc<ConnInfo>,
    state: Arc<State>,
    shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send {
    let lim = Limits::new(&state.load().server);
    let shared = Arc::new(Mutex::new(Shared::new(
        io,
        IdleTimer::new(state.idle.clone()),
    )));
    async move {
        let mut first = true;
        let mut head_timer = None;
        let end = loop {
            // Nothing is awaited inside this match: a `Next` (a whole request
            // head) held across an await would be kept in every idle
            // connection's state.
            let head =
                match poll_fn(|cx| next_head(&shared, &lim, first, &shutdown, &mut head_timer, cx))
                    .await
                {
                    Next::Request(h) => h,
                    Next::Closed => break End::Close { linger: false },
                    Next::H2 => break End::H2,
                    Next::Reject(r) => break End::Refused(r),
                };
            // `header_timeout` counts from the first byte of each head.
            head_timer = None;
            first = false;
            // Boxed: the request's state (the service, the response's body) is
            // held only while it runs; an idle connection keeps a pointer less.
            let ctx = Ctx {
                shared: &shared,
                info: &info,
                state: &state,
                shutdown: &shutdown,
                lim: &lim,
            };
            match Box::pin(exchange(ctx, head)).await {
                After::KeepAlive => continue,
                After::Close { linger } => break End::Close { linger },
                After::Upgrade(tx) => break End::Upgrade(tx),
                After::Abort => break End::Abort,
            }
        };
        // One await for whatever comes after: an `End` held across several
        // would keep its room beside the loop's, in every idle connection.
        Box::pin(finish(end, shared, info, state, shutdown)).await
    }
}

async fn finish<T: Io>(
    end: End,
    shared: Arc<Mutex<Shared<T>>>,
    info: Arc<ConnInfo>,
    state: Arc<State>,
    shutdown: watch::Receiver<bool>,
) {
    match end {
        End::Close { linger } => close(&shared, linger).await,
        // The rare ends are boxed again, so that the common one (`close`)
        // allocates only its own small state.
        End::Refused(r) => {
            // Large: it holds a whole response.
            Box::pin(reject(&shared, r, &info, &state)).await;
            close(&shared, true).await;
        }
        End::H2 => {
            Box::pin(super::h2::serve(
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
}

/// How the request loop ended.
enum End {
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
}

struct Ctx<'a, T: ?Sized> {
    shared: &'a Arc<Mutex<Shared<T>>>,
    info: &'a Arc<ConnInfo>,
    state: &'a Arc<State>,
    shutdown: &'a watch::Receiver<bool>,
    lim: &'a Limits,
}

/// What the connection does after an exchange.
enum After {
    KeepAlive,
    /// `linger`: a request body may still be arriving.
    Close {
        linger: bool,
    },
    /// A 101 went out: the connection is the upgrade's.
    Upgrade(oneshot::Sender<Upgraded>),
    /// The connection broke.
    Abort,
}

/// One request: the service's answer, written out.
async fn exchange<T: Io>(c: Ctx<'_, T>, head: Head) -> After {
    let Head {
        mut parts,
        body,
        keep_alive,
        expect_continue,
        upgrade,
    } = head;
    let body = {
        let mut s = lock(c.shared);
        let has_body = !body.is_done();
        s.body = body;
        s.body_failed = false;
        s.continue_owed = if expect_continue {
            io::CONTINUE.len()
        } else {
            0
        };
        if has_body {
            let io: SharedIo = c.shared.clone();
            ReqBody::H1(H1Body::new(io, s.seq, c.lim.idle()))
        } else {
            ReqBody::Empty
        }
    };
    let upgrade = upgrade.then(|| {
        let (tx, rx) = oneshot::channel();
        parts.extensions.insert(OnUpgrade::new(rx));
        tx
    });
    let head_request = parts.method == Method::HEAD;
    let version = parts.version;
    let Ok(resp) = service::handle(
        Request::from_parts(parts, body),
        c.info.clone(),
        c.state.clone(),
    )
    .await;
    let mut keep_alive = keep_alive && !c.shutdown.has_changed().unwrap_or(true);
    let unread = {
        let mut s = lock(c.shared);
        // The body is over for its request, read or not.
        s.seq += 1;
        s.continue_owed = 0;
        !s.body.is_done() || s.body_failed
    };
    // An unread body would be taken for the next request: close.
    keep_alive &= !unread;
    let upgrading = upgrade.is_some() && resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let (parts, body) = resp.into_parts();
    // Room for a typical head: growing it reallocates.
    let mut out = Vec::with_capacity(512);
    let wire = response::encode_head(
        &mut out,
        &parts,
        body.fields(),
        &http_body::Body::size_hint(&body),
        head_request,
        version,
        &mut keep_alive,
    );
    drop(parts);
    let shared = c.shared;
    let sent = tokio::select! {
        biased;
        r = response::send(shared, out, body, wire) => r,
        _ = poll_fn(|cx| lock(shared).poll_idle(c.lim.idle(), cx)) => {
            tracing::debug!(peer = %c.info.peer, "client stopped reading the response; closing");
            Ok(false)
        }
    };
    match sent {
        Ok(true) if upgrading => upgrade.map_or(After::Abort, After::Upgrade),
        Ok(true) if keep_alive => After::KeepAlive,
        Ok(_) => After::Close { linger: unread },
        Err(e) => {
            tracing::debug!(peer = %c.info.peer, error = %e, "writing the response failed");
            After::Abort
        }
    }
}

/// Wait for and parse the next request head.
fn next_head<T: Io>(
    shared: &Mutex<Shared<T>>,
    lim: &Limits,
    first: bool,
    shutdown: &watch::Receiver<bool>,
    head_timer: &mut Option<Pin<Box<Sleep>>>,
    cx: &mut Context<'_>,
) -> Poll<Next> {
    let mut g = lock(shared);
    let s = &mut *g;
    loop {
        if s.rbuf.is_empty() {
            // Idle: wait without a buffer; allocate one once bytes come.
            match s.io.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Next::Closed),
                Poll::Pending => {
                    if s.rbuf.capacity() > 0 {
                        s.release_buffer();
                    }
                    return idle_or_stop(s, shutdown, lim, cx);
                }
            }
        } else if first && H2_PREFACE.starts_with(&s.rbuf[..s.rbuf.len().min(24)]) {
            if s.rbuf.len() >= H2_PREFACE.len() {
                return Poll::Ready(Next::H2);
            }
        } else {
            match request::parse(&mut s.rbuf, lim.max_head as usize) {
                Ok(Some(h)) => return Poll::Ready(Next::Request(h)),
                Ok(None) => {}
                Err(r) => return Poll::Ready(Next::Reject(r)),
            }
        }
        match s.poll_fill(cx) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Next::Closed),
            Poll::Ready(Ok(_)) => continue,
            Poll::Pending if s.rbuf.is_empty() => return idle_or_stop(s, shutdown, lim, cx),
            Poll::Pending => {
                let t = head_timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(lim.header_timeout())));
                if t.as_mut().poll(cx).is_ready() {
                    tracing::debug!("request head not complete within header_timeout");
                    return Poll::Ready(Next::Closed);
                }
                return Poll::Pending;
            }
        }
    }
}

fn idle_or_stop<T: Io>(
    s: &mut Shared<T>,
    shutdown: &watch::Receiver<bool>,
    lim: &Limits,
    cx: &mut Context<'_>,
) -> Poll<Next> {
    if s.poll_idle(lim.idle(), cx).is_ready() {
        return Poll::Ready(Next::Closed);
    }
    // After arming: the shutdown wakes every armed wait once its signal is
    // out, so a signal missed here still wakes this one. A sender gone
    // (the server dropped) is a shutdown too.
    if shutdown.has_changed().unwrap_or(true) {
        return Poll::Ready(Next::Closed);
    }
    Poll::Pending
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
    let (parts, mut body) = crate::handler::text(status, text).into_parts();
    if let Some(logger) = state.load().access_log.clone() {
        // Like nginx, a refused head is logged too, with its first line as
        // it came (a probe or an attack is worth seeing).
        let line = first_line(&lock(shared).rbuf);
        body.set_log(Box::new(crate::access_log::Entry {
            time: std::time::SystemTime::now(),
            start: std::time::Instant::now(),
            client: crate::state::canonical_ip(info.peer.ip()),
            method: Method::GET,
            uri: String::new(),
            version: http::Version::HTTP_11,
            status: status.as_u16(),
            bytes: 0,
            referer: String::new(),
            user_agent: String::new(),
            host: String::new(),
            request_id: "-".into(),
            upstream: None,
            attempts: 0,
            reason: Some(text.trim_end()),
            raw_line: Some(line),
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
