//! An app's answer read ahead of a slow client (`buffer_responses`, nginx's
//! `proxy_buffering`).
//!
//! Decoded as the client takes it, an answer larger than the sockets' buffers
//! holds the app's worker until the client has nearly all of it: behind
//! gunicorn's sync workers, one phone downloading a 20 MB export at 500 KB/s
//! kept every other request waiting 29 s. Here a task of its own reads the
//! body as fast as the app sends it, so the worker and the connection are
//! free once the app is done, and the client is sent what was read, in order.
//!
//! What is read and not yet sent is held in memory, up to
//! `server.max_body_in_memory` per answer and `server.max_buffered` in all
//! (shared with request bodies), then in an unnamed temporary file in
//! `server.body_temp_dir`, up to `server.max_spilled` for all answers
//! together (apart from request bodies': a slow download never makes an
//! upload fail) and `max_connections` files. Past those, reading waits for
//! the client, as without read-ahead: nothing is refused. A file is written
//! and read in the worker's thread, as nginx does its temporary files: the
//! bytes just written are in the page cache.

use super::body::Direct;
use crate::body::BoxError;
use crate::state::ServerSettings;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::poll_fn;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

mod blocks;
mod held;

use held::State;

/// What an answer may hold while the client falls behind (the module's
/// comment).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Bytes in memory for this answer before the file.
    pub in_memory: u64,
    /// Bytes of bodies in memory in all (`server.max_buffered`).
    pub memory: u64,
    pub dir: PathBuf,
    /// Bytes of answers in files in all.
    pub on_disk: u64,
    /// Bytes of this answer in its file (the upstream's `max_read_ahead`).
    pub in_file: u64,
    /// Answers with a file at once: each is a descriptor.
    pub files: usize,
}

impl Limits {
    pub fn of(server: &ServerSettings, in_file: u64) -> Limits {
        Limits {
            in_file,
            in_memory: server.max_body_in_memory,
            memory: server.max_buffered,
            dir: server.body_temp_dir.clone(),
            on_disk: server.max_spilled,
            files: server.max_connections,
        }
    }
}

/// The client's side: the body the response carries.
pub struct Reader {
    shared: Arc<Mutex<State>>,
    /// Bytes still to come, when the app said how many.
    remaining: Option<u64>,
    done: bool,
}

/// Answers read ahead so far, in the whole process (a metric).
static STARTED: AtomicU64 = AtomicU64::new(0);

pub fn started() -> u64 {
    STARTED.load(Ordering::Relaxed)
}

/// Start reading `body` ahead; the reader gets what it reads.
pub(super) fn start(body: Direct, limits: Limits) -> Reader {
    STARTED.fetch_add(1, Ordering::Relaxed);
    let remaining = http_body::Body::size_hint(&body).exact();
    tracing::trace!(remaining, "reading an answer ahead of its client");
    let shared = Arc::new(Mutex::new(State::new()));
    tokio::spawn(pump(body, shared.clone(), limits));
    Reader {
        shared,
        remaining,
        done: false,
    }
}

fn lock(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while locked leaves no half-made change that matters here:
    // every change is a push or a pop of whole pieces.
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Read the app's body to its end, or until the client has gone (its
/// reader dropped). Dropping `body` unfinished closes the connection; a
/// finished one has gone back to the pool.
async fn pump(mut body: Direct, shared: Arc<Mutex<State>>, limits: Limits) {
    let mut pending: Option<Bytes> = None;
    poll_fn(|cx| loop {
        let mut st = lock(&shared);
        if st.reader_gone {
            return Poll::Ready(());
        }
        let mut stored = false;
        if let Some(d) = pending.take() {
            if let Err(d) = st.store(d, &limits) {
                pending = Some(d);
                st.pump_waits = true;
                set_waker(&mut st.pump, cx);
                return Poll::Pending;
            }
            stored = true;
        }
        // Woken by the socket or by the reader's going.
        set_waker(&mut st.pump, cx);
        let reader = if stored { st.reader.take() } else { None };
        drop(st);
        if let Some(w) = reader {
            w.wake();
        }
        let end = match Pin::new(&mut body).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                pending = frame.into_data().ok().filter(|d| !d.is_empty());
                continue;
            }
            Poll::Ready(Some(Err(e))) => Err(e),
            Poll::Ready(None) => Ok(()),
        };
        let mut st = lock(&shared);
        st.end = Some(end);
        let reader = st.reader.take();
        drop(st);
        if let Some(w) = reader {
            w.wake();
        }
        return Poll::Ready(());
    })
    .await
}

fn set_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}

impl Body for Reader {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let mut st = lock(&this.shared);
        match st.take() {
            Some(Ok(d)) => {
                if let Some(r) = this.remaining.as_mut() {
                    *r = r.saturating_sub(d.len() as u64);
                }
                let pump = if std::mem::take(&mut st.pump_waits) {
                    st.pump.take()
                } else {
                    None
                };
                drop(st);
                if let Some(w) = pump {
                    w.wake();
                }
                Poll::Ready(Some(Ok(Frame::data(d))))
            }
            Some(Err(e)) => {
                this.done = true;
                Poll::Ready(Some(Err(e.into())))
            }
            None => match st.end.take() {
                Some(end) => {
                    this.done = true;
                    Poll::Ready(end.err().map(Err))
                }
                None => {
                    set_waker(&mut st.reader, cx);
                    Poll::Pending
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        self.remaining
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let mut st = lock(&self.shared);
        st.reader_gone = true;
        let w = st.pump.take();
        drop(st);
        if let Some(w) = w {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests;
