//! Between requests: waiting for the next head, with the timeouts that
//! bound the wait (header_timeout once a head has begun, or for a new
//! connection's first byte; idle_timeout between requests), parking, the
//! shutdown, and the HTTP/2 preface on a plain listener.

use super::io::{lock, Shared};
use super::request;
use super::{Limits, Next};
use crate::http::park;
use crate::http::Io;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use tokio::sync::watch;
use tokio::time::Sleep;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Wait for and parse the next request head.
pub(super) fn next_head<T: Io>(
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
                    return idle_or_stop(s, shutdown, lim, first, cx);
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
            Poll::Pending if s.rbuf.is_empty() => return idle_or_stop(s, shutdown, lim, first, cx),
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

/// Nothing to read: wait, and end the wait when the connection has been
/// idle for `idle_timeout` (close), for `park::AFTER` (park it, after its
/// first request, on a transport that can be parked), or at shutdown.
fn idle_or_stop<T: Io>(
    s: &mut Shared<T>,
    shutdown: &watch::Receiver<bool>,
    lim: &Limits,
    first: bool,
    cx: &mut Context<'_>,
) -> Poll<Next> {
    // A new connection's client has header_timeout to start its first
    // request, as nginx's client_header_timeout: silent connections would
    // otherwise hold places among max_connections for idle_timeout.
    let limit = if first {
        lim.idle().min(lim.header_timeout())
    } else {
        lim.idle()
    };
    let park = !first && limit >= park::MIN_TIMEOUT && s.io.can_park();
    if s.poll_idle(if park { park::AFTER } else { limit }, cx)
        .is_ready()
    {
        return Poll::Ready(if park { Next::Park } else { Next::Closed });
    }
    // After arming: the shutdown wakes every armed wait once its signal is
    // out, so a signal missed here still wakes this one. A sender gone
    // (the server dropped) is a shutdown too.
    if shutdown.has_changed().unwrap_or(true) {
        return Poll::Ready(Next::Closed);
    }
    Poll::Pending
}
