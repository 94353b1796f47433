//! HTTP/1.x on one client connection: read a head, run the request through
//! the service, write the answer, and again while the client keeps the
//! connection. Everything happens in the connection's task; the request body
//! reads the same socket through `io::Shared`.
//!
//! Timeouts: an idle connection (no byte read or written) is closed after
//! `idle_timeout`, kept by the server's sweeper (`http::idle`) rather than
//! a timer in each connection; `header_timeout` starts with the first byte
//! of a head, so a head that arrives in one read never touches a timer. A
//! new connection's silence before its first byte is bounded by the
//! shorter of the two.

mod end;
mod io;
mod request;
mod response;
#[cfg(test)]
mod tests;
mod wait;

pub use io::{is_body_timeout, BodyError, H1Body, OnUpgrade, Upgraded};

use self::end::{finish, End};
use self::io::{lock, Shared, SharedIo};
use self::request::{Head, Reject};
use self::wait::next_head;
use super::idle::IdleTimer;
use super::park::Parked;
use super::Io;
use crate::body::ReqBody;
use crate::service::{self, ConnInfo};
use crate::state::State;
use http::{Method, Request, StatusCode};
use std::future::{poll_fn, Future};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

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
    /// Idle long enough to be parked (`park`).
    Park,
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
    fresh: bool,
) -> impl Future<Output = Option<Parked>> + Send {
    let lim = Limits::new(&state.load().server);
    let shared = Arc::new(Mutex::new(Shared::new(
        io,
        IdleTimer::new(state.idle.clone()),
    )));
    async move {
        // A resumed connection (`park`) is past its first request: no
        // HTTP/2 preface can come now.
        let mut first = fresh;
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
                    Next::Park => break End::Park,
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
            match super::in_box(|| exchange(ctx, head)).await {
                After::KeepAlive => continue,
                After::Close { linger } => break End::Close { linger },
                After::Upgrade(tx) => break End::Upgrade(tx),
                After::Abort => break End::Abort,
            }
        };
        // One await for whatever comes after: an `End` held across several
        // would keep its room beside the loop's, in every idle connection.
        Box::pin(finish(end, shared, info, state, shutdown, lim.idle())).await
    }
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
///
/// The awaits only: the work between them is in plain fns that take and
/// give values. A local that is borrowed stays in an async fn's state
/// across every later await, and this future is moved into its box once
/// per request.
#[allow(clippy::manual_async_fn)] // written out: see `service::handle`
fn exchange<'a, T: Io>(c: Ctx<'a, T>, head: Head) -> impl Future<Output = After> + Send + 'a {
    async move {
        let (req, upgrade, keep_alive, head_request, version) = begin(&c, head);
        let handled = service::handle(req, c.info.clone(), c.state.clone());
        let resp = tokio::select! {
            biased;
            Ok(resp) = handled => resp,
            _ = poll_fn(|cx| poll_gone(c.shared, cx)) => {
                // Dropping the service's future cancels the upstream
                // request and logs the 499.
                tracing::debug!(peer = %c.info.peer, "client closed the connection before its answer");
                return After::Abort;
            }
        };
        let (out, body, wire, keep_alive, unread, upgrading) = encode(
            &c,
            resp,
            upgrade.is_some(),
            keep_alive,
            head_request,
            version,
        );
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
}

/// Ready when the client has closed its side while its request waits for
/// the answer: nginx then cancels the upstream request and logs 499, and so
/// does this (a client could otherwise drive the upstream unseen). Watched
/// only once the request's body is read (until then reading is the body's
/// job), and only until a byte of a next request arrives, kept for later.
fn poll_gone<T: Io>(shared: &Mutex<Shared<T>>, cx: &mut Context<'_>) -> Poll<()> {
    let mut s = lock(shared);
    if !s.body.is_done() || !s.rbuf.is_empty() {
        // Polled again whenever the service's future wakes this task.
        return Poll::Pending;
    }
    match s.poll_fill(cx) {
        Poll::Ready(Ok(0) | Err(_)) => Poll::Ready(()),
        _ => Poll::Pending,
    }
}

/// The request as the service takes it: its body reads from this
/// connection, and an upgrade gets a way to the connection after the 101.
/// Also the head's keep-alive, whether it is a HEAD, and its version.
fn begin<T: Io>(
    c: &Ctx<'_, T>,
    head: Head,
) -> (
    Request<ReqBody>,
    Option<oneshot::Sender<Upgraded>>,
    bool,
    bool,
    http::Version,
) {
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
    let (head_request, version) = (parts.method == Method::HEAD, parts.version);
    let req = Request::from_parts(parts, body);
    (req, upgrade, keep_alive, head_request, version)
}

/// The response's head encoded, and what the connection does after it:
/// (head, body, framing, keep-alive, a request body left unread, a 101 to
/// an upgrade).
fn encode<T: Io>(
    c: &Ctx<'_, T>,
    resp: crate::handler::Resp,
    upgrade: bool,
    keep_alive: bool,
    head_request: bool,
    version: http::Version,
) -> (
    Vec<u8>,
    crate::body::ProxyBody,
    response::Wire,
    bool,
    bool,
    bool,
) {
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
    let upgrading = upgrade && resp.status() == StatusCode::SWITCHING_PROTOCOLS;
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
    // Its map is done with: the next answer on this thread takes it.
    crate::http::spare::recycle(parts.headers);
    (out, body, wire, keep_alive, unread, upgrading)
}
