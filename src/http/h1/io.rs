//! The connection's transport and read buffer, shared by the connection's
//! loop and the body of the request in progress (which reads from the same
//! socket). Both run in the connection's one task, so the lock is never
//! contended; it is held inside a poll, never across an await.

use super::super::decode::{self, Decoder, Step};
use super::super::idle::IdleTimer;
use super::super::Io;
use crate::body::BoxError;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

pub struct Shared<T: ?Sized> {
    pub rbuf: BytesMut,
    read_size: usize,
    /// `now_ms` of the last byte read or written: the idle timeout's clock.
    pub last_ms: u64,
    /// Here rather than in the connection's task: see `h1::serve`.
    idle: IdleTimer,
    /// The current request's body, as far as it has been read.
    pub body: Decoder,
    /// Reading the body failed: where the next request starts is unknown,
    /// so the connection ends after this answer.
    pub body_failed: bool,
    /// Which request `body` belongs to: a body kept past its request's end
    /// must not read the next request's bytes.
    pub seq: u64,
    /// Bytes of `100 Continue` still to send before the body is read
    /// (`Expect: 100-continue`); 0 when none is owed.
    pub continue_owed: usize,
    pub io: T,
}

pub type SharedIo = Arc<Mutex<Shared<dyn Io>>>;

pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while the lock was held cannot leave the buffer half-updated
    // in a way that matters more than the connection, which ends anyway.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T: Io> Shared<T> {
    pub fn new(io: T, idle: IdleTimer) -> Self {
        Shared {
            rbuf: BytesMut::new(),
            read_size: decode::MIN_READ,
            last_ms: crate::upstream::now_ms(),
            idle,
            body: Decoder::done(),
            body_failed: false,
            seq: 0,
            continue_owed: 0,
            io,
        }
    }

    /// Ready once nothing moved on the connection for `limit`.
    pub fn poll_idle(&mut self, limit: Duration, cx: &mut Context<'_>) -> Poll<()> {
        self.idle.poll(self.last_ms, limit, cx)
    }
}

/// Read buffers of idle connections, kept per thread for the next busy one:
/// an idle connection holds no buffer, and a busy one does not pay for a
/// fresh allocation on every request.
const SPARE_MAX: usize = 64;
thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

impl<T: Io + ?Sized> Shared<T> {
    /// Give the (empty) read buffer back while the connection waits.
    pub fn release_buffer(&mut self) {
        let mut buf = std::mem::take(&mut self.rbuf);
        // Heads consumed from the front shrink what is left of the buffer;
        // an empty one that nothing else shares gets its whole allocation
        // back without a copy.
        if buf.is_empty() && !buf.try_reclaim(decode::MIN_READ) {
            return;
        }
        let cap = buf.capacity();
        if (decode::MIN_READ..=4 * decode::MIN_READ).contains(&cap) {
            SPARE.with(|s| {
                let mut s = s.borrow_mut();
                if s.len() < SPARE_MAX {
                    s.push(buf);
                }
            });
        }
    }

    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() == 0 {
            if let Some(buf) = SPARE.with(|s| s.borrow_mut().pop()) {
                self.rbuf = buf;
            }
        }
        let r = decode::poll_fill(&mut self.io, &mut self.rbuf, &mut self.read_size, cx);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.last_ms = crate::upstream::now_ms();
            }
        }
        r
    }

    pub fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        file: &std::fs::File,
        off: u64,
        len: u64,
    ) -> Poll<io::Result<usize>> {
        let r = self.io.poll_send_file(cx, file, off, len);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.last_ms = crate::upstream::now_ms();
            }
        }
        r
    }

    /// Write `buf[*at..]`, advancing `at`.
    pub fn poll_write_from(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        at: &mut usize,
    ) -> Poll<io::Result<()>> {
        self.poll_write_all(cx, buf, at, false)
    }

    /// As `poll_write_from`; `more`: bytes follow at once
    /// (`Io::poll_write_more`).
    pub fn poll_write_all(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        at: &mut usize,
        more: bool,
    ) -> Poll<io::Result<()>> {
        while *at < buf.len() {
            let n = if more {
                ready!(self.io.poll_write_more(cx, &buf[*at..]))?
            } else {
                ready!(Pin::new(&mut self.io).poll_write(cx, &buf[*at..]))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *at += n;
            self.last_ms = crate::upstream::now_ms();
        }
        Poll::Ready(Ok(()))
    }

    /// Write two buffers, in one syscall when the transport can.
    pub fn poll_write2_from(
        &mut self,
        cx: &mut Context<'_>,
        a: &[u8],
        b: &[u8],
        at: &mut usize,
    ) -> Poll<io::Result<()>> {
        while *at < a.len() {
            let slices = [io::IoSlice::new(&a[*at..]), io::IoSlice::new(b)];
            let n = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *at += n;
            self.last_ms = crate::upstream::now_ms();
        }
        let mut rest = *at - a.len();
        let r = self.poll_write_from(cx, b, &mut rest);
        *at = a.len() + rest;
        r
    }
}

/// A request body read from the client connection as the handler asks.
pub struct H1Body {
    io: SharedIo,
    seq: u64,
    /// `idle_timeout`: the longest the client may pause inside its body.
    stall: crate::http::Stall,
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the client closed the connection inside the body")]
    Truncated,
    #[error("request body read after its request ended")]
    Stale,
    #[error("the client paused inside the body for longer than idle_timeout")]
    Timeout,
    #[error(transparent)]
    Chunked(#[from] decode::ChunkError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl H1Body {
    pub(super) fn new(io: SharedIo, seq: u64, idle: Duration) -> Self {
        H1Body {
            io,
            seq,
            stall: crate::http::Stall::new(idle),
        }
    }
}

/// Whether a request body's error is the client pausing too long (408)
/// rather than a broken body (400).
pub fn is_body_timeout(e: &BoxError) -> bool {
    matches!(e.downcast_ref::<BodyError>(), Some(BodyError::Timeout))
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut g = lock(&this.io);
        let s = &mut *g;
        if s.seq != this.seq {
            return Poll::Ready(Some(Err(BodyError::Stale.into())));
        }
        let err = |s: &mut Shared<dyn Io>, e: BodyError| {
            s.body.finish();
            s.body_failed = true;
            // The rest of the connection's bytes cannot be framed now.
            s.rbuf.clear();
            Poll::Ready(Some(Err(e.into())))
        };
        if s.continue_owed > 0 {
            let mut at = CONTINUE.len() - s.continue_owed;
            let r = s.poll_write_from(cx, CONTINUE, &mut at);
            s.continue_owed = CONTINUE.len() - at;
            match r {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return err(s, e.into()),
                Poll::Ready(Ok(())) => {}
            }
            if let Err(e) = ready!(Pin::new(&mut s.io).poll_flush(cx)) {
                return err(s, e.into());
            }
        }
        loop {
            match s.body.step(&mut s.rbuf, true) {
                Ok(Step::Data(d)) => return Poll::Ready(Some(Ok(Frame::data(d)))),
                Ok(Step::Done) => return Poll::Ready(None),
                Ok(Step::NeedMore) => {}
                Err(e) => return err(s, e.into()),
            }
            match s.poll_fill(cx) {
                Poll::Ready(Ok(0)) => return err(s, BodyError::Truncated),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return err(s, e.into()),
                Poll::Pending => {
                    // Like nginx's client_body_timeout: a pause, not the
                    // whole upload, is bounded.
                    if this.stall.poll(s.last_ms, cx).is_ready() {
                        return err(s, BodyError::Timeout);
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let s = lock(&self.io);
        s.seq != self.seq || s.body.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        let s = lock(&self.io);
        match s.body.remaining() {
            Some(n) if s.seq == self.seq => SizeHint::with_exact(n),
            Some(_) => SizeHint::with_exact(0),
            // Chunked: at least the rest of the chunk under way, so that a
            // chunk that alone passes max_body is refused at its size line.
            None if s.seq == self.seq => {
                let mut h = SizeHint::default();
                h.set_lower(s.body.at_least());
                h
            }
            None => SizeHint::default(),
        }
    }
}

/// The client connection after a `101 Switching Protocols`, or handed to
/// HTTP/2: bytes already read come first.
pub struct Upgraded {
    io: SharedIo,
}

impl Upgraded {
    pub(super) fn new(io: SharedIo) -> Self {
        Upgraded { io }
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut s = lock(&self.io);
        if !s.rbuf.is_empty() {
            let n = s.rbuf.len().min(buf.remaining());
            buf.put_slice(&s.rbuf.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut s.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut lock(&self.io).io).poll_write(cx, b)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut lock(&self.io).io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        lock(&self.io).io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut lock(&self.io).io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut lock(&self.io).io).poll_shutdown(cx)
    }
}

/// In a request's extensions when it asks for a protocol upgrade: resolves
/// to the client's connection once a 101 answer has been written.
/// (Extensions must be Clone; the first to wait takes the connection.)
#[derive(Clone)]
pub struct OnUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    pub(super) fn new(rx: oneshot::Receiver<Upgraded>) -> Self {
        OnUpgrade(Arc::new(Mutex::new(Some(rx))))
    }

    pub async fn wait(self) -> Option<Upgraded> {
        let rx = lock(&self.0).take()?;
        rx.await.ok()
    }
}
