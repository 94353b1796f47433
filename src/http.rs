//! Serving one accepted connection: hyper-util's auto server (HTTP/1.1 and
//! HTTP/2), upgrades, the header and idle timeouts, graceful shutdown.

use crate::service::{self, ConnInfo};
use crate::state::State;
use hyper::rt::{Sleep, Timer};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// Counts bytes read and the time of the last I/O, for the timeouts below.
#[derive(Default)]
pub struct Activity {
    read: AtomicU64,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(crate::upstream::now_ms(), Ordering::Relaxed);
    }
}

pub struct ActivityIo<T> {
    inner: T,
    act: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for ActivityIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.act.read.fetch_add(n as u64, Ordering::Relaxed);
            self.act.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ActivityIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.act.touch();
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.act.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// hyper runs its HTTP/1 header timer from the moment it waits for a request
/// head, idle keep-alive wait included. This timer starts counting
/// `header_timeout` only once a byte of the next head has arrived: an idle
/// connection is bounded by the idle watchdog in `serve` instead. So the
/// common case, a head that arrives whole in one read, never touches the
/// runtime's timer wheel.
#[derive(Clone)]
struct HeadTimer {
    act: Arc<Activity>,
    header_timeout: Duration,
    /// What `now` answers: hyper asks only to compute a deadline, which
    /// this timer does not use, so no clock is read for it.
    epoch: Instant,
}

struct HeadSleep {
    act: Arc<Activity>,
    header_timeout: Duration,
    read_at_start: u64,
    /// Armed when the head's first byte is seen.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Future for HeadSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.act.read.load(Ordering::Relaxed) == self.read_at_start {
            // Still idle: not this timer's business (see `serve`).
            return Poll::Pending;
        }
        let timeout = self.header_timeout;
        self.timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)))
            .as_mut()
            .poll(cx)
    }
}

impl Sleep for HeadSleep {}

impl Timer for HeadTimer {
    fn sleep(&self, _: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(self.epoch)
    }
    fn sleep_until(&self, _: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(HeadSleep {
            act: self.act.clone(),
            header_timeout: self.header_timeout,
            read_at_start: self.act.read.load(Ordering::Relaxed),
            timer: None,
        })
    }
    fn now(&self) -> Instant {
        self.epoch
    }
}

pub async fn serve<IO>(
    io: IO,
    info: Arc<ConnInfo>,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let snap = state.load();
    let s = &snap.server;
    let idle = s.idle_timeout;
    let act = Arc::new(Activity::default());
    act.touch();
    let io = TokioIo::new(ActivityIo {
        inner: io,
        act: act.clone(),
    });

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(HeadTimer {
            act: act.clone(),
            header_timeout: s.header_timeout,
            epoch: Instant::now(),
        })
        .header_read_timeout(s.header_timeout)
        .max_buf_size(s.max_header_size)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(s.max_header_size as u32)
        .max_concurrent_streams(256);
    drop(snap);

    let svc =
        hyper::service::service_fn(move |req| service::handle(req, info.clone(), state.clone()));
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);

    let idle_ms = idle.as_millis() as u64;
    let mut closing = false;
    loop {
        let last = act.last_ms.load(Ordering::Relaxed);
        let wake = tokio::time::Instant::now()
            + Duration::from_millis((last + idle_ms).saturating_sub(crate::upstream::now_ms()));
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with error");
                }
                return;
            }
            _ = tokio::time::sleep_until(wake), if !closing => {
                if crate::upstream::now_ms() >= act.last_ms.load(Ordering::Relaxed) + idle_ms {
                    // Nothing moved for idle_timeout: close once any request
                    // in flight is answered.
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            _ = shutdown.changed(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}
