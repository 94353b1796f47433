//! Serving one accepted connection. HTTP/1.x is our own loop (`h1`): the
//! request's whole way, head to last body byte, runs in the connection's
//! task with no channel or second task in between, and an idle connection
//! keeps no buffer. HTTP/2 (ALPN `h2`, or the prior-knowledge preface on a
//! plain listener) is hyper's server (`h2`).

pub mod decode;
mod h1;
mod h2;
mod idle;
pub mod park;
pub mod raw;
pub mod spare;

pub use h1::{is_body_timeout, BodyError, H1Body, OnUpgrade, Upgraded};
pub use h2::H2Body;
pub use idle::{IdleSet, IdleTimer};
pub use raw::RawFields;

use crate::service::ConnInfo;
use crate::state::State;
use std::fs::File;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Sleep;

/// A client connection's transport.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// Wait until a read would find something, without a buffer to read
    /// into: what lets an idle connection hold none. Transports that cannot
    /// tell say "ready" and are read into a buffer at once.
    fn poll_read_ready(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Can this transport send file bytes without them passing through
    /// memory (plain TCP; TLS must encrypt them)?
    fn can_send_file(&self) -> bool {
        false
    }

    /// Write what must not leave alone: a head whose file follows at once.
    /// Plain TCP sends it with `MSG_MORE`, so head and file share segments
    /// (nginx's `tcp_nopush`) without two `TCP_CORK` calls per response.
    fn poll_write_more(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(self).poll_write(cx, buf)
    }

    /// Send up to `len` bytes of `file` from `off` straight from the page
    /// cache. Only called when `can_send_file`.
    fn poll_send_file(
        &self,
        _cx: &mut Context<'_>,
        _file: &File,
        _off: u64,
        _len: u64,
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }

    /// Can an idle connection on this transport be parked (`park`)?
    fn can_park(&self) -> bool {
        false
    }

    /// The socket, out of tokio's hands, for parking; only called when
    /// `can_park`.
    fn into_parked(self) -> Option<std::net::TcpStream>
    where
        Self: Sized,
    {
        None
    }
}

impl Io for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }

    fn can_send_file(&self) -> bool {
        cfg!(target_os = "linux")
    }

    fn can_park(&self) -> bool {
        cfg!(target_os = "linux")
    }

    fn into_parked(self) -> Option<std::net::TcpStream> {
        self.into_std().ok()
    }

    #[cfg(target_os = "linux")]
    fn poll_write_more(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        use std::os::fd::AsRawFd;
        let fd = self.as_raw_fd();
        poll_raw_write(self, cx, || {
            // SAFETY: `buf` is valid for `len` bytes for the call; the
            // socket is ours.
            unsafe {
                libc::send(
                    fd,
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_MORE | libc::MSG_NOSIGNAL,
                )
            }
        })
    }

    #[cfg(target_os = "linux")]
    fn poll_send_file(
        &self,
        cx: &mut Context<'_>,
        file: &File,
        off: u64,
        len: u64,
    ) -> Poll<io::Result<usize>> {
        use std::os::fd::AsRawFd;
        let (sock, fd) = (self.as_raw_fd(), file.as_raw_fd());
        poll_raw_write(self, cx, || {
            let mut off = off as libc::off_t;
            // SAFETY: both descriptors are open for the call (the socket is
            // ours, the file is borrowed); the kernel writes only the
            // offset, which is a local.
            unsafe { libc::sendfile(sock, fd, &mut off, len as usize) }
        })
    }
}

/// One write system call on the socket when tokio says it is writable;
/// `call` returns what the call returned (-1 and errno on failure).
#[cfg(target_os = "linux")]
fn poll_raw_write(
    s: &TcpStream,
    cx: &mut Context<'_>,
    mut call: impl FnMut() -> isize,
) -> Poll<io::Result<usize>> {
    loop {
        std::task::ready!(s.poll_write_ready(cx))?;
        let r = s.try_io(tokio::io::Interest::WRITABLE, || match call() {
            n if n < 0 => Err(io::Error::last_os_error()),
            n => Ok(n as usize),
        });
        match r {
            // Readiness was stale; it is cleared, so the next poll waits.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return Poll::Ready(r),
        }
    }
}

impl Io for tokio_rustls::server::TlsStream<TcpStream> {}

/// HTTP/1.x, or HTTP/2 if the client opens with its preface. Ends with
/// the connection, or with it parked (`park`), handed back to be kept.
pub fn serve<T: Io>(
    io: T,
    info: Arc<ConnInfo>,
    state: Arc<State>,
    shutdown: watch::Receiver<bool>,
) -> impl Future<Output = Option<park::Parked>> + Send {
    h1::serve(io, info, state, shutdown, true)
}

/// A parked connection whose client spoke again: HTTP/1 from its next head.
pub fn resume(
    io: TcpStream,
    info: Arc<ConnInfo>,
    state: Arc<State>,
    shutdown: watch::Receiver<bool>,
) -> impl Future<Output = Option<park::Parked>> + Send {
    h1::serve(io, info, state, shutdown, false)
}

/// HTTP/2 from the first byte (ALPN chose it).
pub async fn serve_h2<T: Io>(
    io: T,
    info: Arc<ConnInfo>,
    state: Arc<State>,
    shutdown: watch::Receiver<bool>,
) {
    h2::serve(io, info, state, shutdown).await
}

/// A future made straight into its box: `Box::pin(f())` makes it on the
/// stack and copies it (2.5 KiB for an HTTP/1 exchange, 2.6 KiB for an
/// HTTP/2 stream's) into the heap.
#[inline(always)]
pub(crate) fn in_box<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    let mut b = Box::<F>::new_uninit();
    b.write(make());
    // SAFETY: written just above.
    Box::into_pin(unsafe { b.assume_init() })
}

/// A pause limit for a request body: the timer is made the first time a
/// read has to wait, so a body that is never waited on costs none.
pub(crate) struct Stall {
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Stall {
    pub fn new(limit: Duration) -> Self {
        Stall { limit, timer: None }
    }

    /// Ready once nothing arrived for the limit since `last_ms`.
    pub fn poll(&mut self, last_ms: u64, cx: &mut Context<'_>) -> Poll<()> {
        let limit = self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        poll_stalled(timer.as_mut(), last_ms, limit, cx)
    }
}

/// Ready once nothing moved on the connection for `limit` since `last_ms`.
/// The timer is only moved when it fires early, not on every byte.
pub(crate) fn poll_stalled(
    mut timer: Pin<&mut Sleep>,
    last_ms: u64,
    limit: Duration,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let limit_ms = limit.as_millis() as u64;
    loop {
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let now = crate::upstream::now_ms();
        let due = last_ms + limit_ms;
        if now >= due {
            return Poll::Ready(());
        }
        timer
            .as_mut()
            .reset(tokio::time::Instant::now() + Duration::from_millis(due - now));
    }
}
