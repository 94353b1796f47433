//! HTTP/2 (ALPN `h2` on TLS, or prior knowledge on plain listeners): hyper's
//! server, with the idle timeout and graceful shutdown around it.

use crate::body::ReqBody;
use crate::service::{self, ConnInfo};
use crate::state::State;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Sleep;

/// The reads that brought bytes, for a closing connection's client.
struct ActivityIo<T> {
    inner: T,
    reads: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for ActivityIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.reads.fetch_add(1, Ordering::Relaxed);
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
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

/// A connection's streams, for its idle rule: it is idle when no stream
/// is open and none has ended for idle_timeout. Control frames (PING,
/// SETTINGS, WINDOW_UPDATE) do not count: a client sending them on a
/// schedule would otherwise keep a connection that asks for nothing, and
/// its place among max_connections, for ever. An open stream is bounded
/// by its own rules (the upstream's timeout, the body's pause limit, the
/// uptake rule below).
struct Streams {
    open: AtomicUsize,
    /// When the last stream ended, or the connection began.
    last_ms: AtomicU64,
}

/// One stream, counted from its request until hyper drops its response
/// body (sent or reset), or its future if it never answered.
struct Stream(Arc<Streams>);

impl Stream {
    fn new(streams: &Arc<Streams>) -> Self {
        streams.open.fetch_add(1, Ordering::Relaxed);
        Stream(streams.clone())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.0
            .last_ms
            .store(crate::upstream::now_ms(), Ordering::Relaxed);
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Ready when the connection has been idle for `idle`.
fn poll_idle(
    timer: Pin<&mut Sleep>,
    streams: &Streams,
    idle: Duration,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let since = if streams.open.load(Ordering::Relaxed) > 0 {
        // Not idle: look again in `idle`.
        crate::upstream::now_ms()
    } else {
        streams.last_ms.load(Ordering::Relaxed)
    };
    super::poll_stalled(timer, since, idle, cx)
}

/// A request body on an HTTP/2 stream, with the same pause limit as on
/// HTTP/1: a client that sends nothing of its body for `idle_timeout`
/// fails the request (408) rather than holding it open.
pub struct H2Body {
    inner: hyper::body::Incoming,
    last_ms: u64,
    stall: super::Stall,
}

impl H2Body {
    fn new(inner: hyper::body::Incoming, idle: Duration) -> Self {
        H2Body {
            inner,
            last_ms: crate::upstream::now_ms(),
            stall: super::Stall::new(idle),
        }
    }
}

impl http_body::Body for H2Body {
    type Data = bytes::Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                this.last_ms = crate::upstream::now_ms();
                Poll::Ready(r.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                if this.stall.poll(this.last_ms, cx).is_ready() {
                    return Poll::Ready(Some(Err(super::BodyError::Timeout.into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether the client takes the answers it asked for. A response body that
/// handed hyper a frame hyper has not come back for is waiting on the
/// client's flow-control window. A client that opens none would hold the
/// stream, and the upstream connection behind it, for ever, its PINGs
/// keeping the socket busy meanwhile; HTTP/1's idle rule cuts such a
/// client off, and this is the same rule for HTTP/2: no response data
/// taken for `idle_timeout` while some waits, and the connection goes.
#[derive(Default)]
struct Uptake {
    /// Streams whose last frame hyper has not yet sent on.
    waiting: AtomicUsize,
    /// When a frame was last handed over or taken.
    last_ms: AtomicU64,
}

impl Uptake {
    fn moved(&self) {
        self.last_ms
            .store(crate::upstream::now_ms(), Ordering::Relaxed);
    }
}

/// A response body that reports to its connection's `Uptake`, and holds
/// its stream open for the idle rule.
struct Tracked<B> {
    inner: B,
    uptake: Arc<Uptake>,
    handed: bool,
    _stream: Stream,
}

impl<B: http_body::Body<Data = bytes::Bytes> + Unpin> http_body::Body for Tracked<B> {
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = &mut *self;
        if std::mem::take(&mut this.handed) {
            // Polled again: the last frame went on.
            this.uptake.waiting.fetch_sub(1, Ordering::Relaxed);
            this.uptake.moved();
        }
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(&r, Poll::Ready(Some(Ok(f))) if f.is_data()) {
            this.handed = true;
            this.uptake.waiting.fetch_add(1, Ordering::Relaxed);
            this.uptake.moved();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        if self.handed {
            self.uptake.waiting.fetch_sub(1, Ordering::Relaxed);
        }
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
    let (idle, max_header, max_streams) = {
        let snap = state.load();
        let s = &snap.server;
        (s.idle_timeout, s.max_header_size, s.max_concurrent_streams)
    };
    let streams = Arc::new(Streams {
        open: AtomicUsize::new(0),
        last_ms: AtomicU64::new(crate::upstream::now_ms()),
    });
    let reads = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(ActivityIo {
        inner: io,
        reads: reads.clone(),
    });
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(max_header as u32)
        .max_concurrent_streams(max_streams);
    let uptake = Arc::new(Uptake::default());
    uptake.moved();
    let conn_uptake = uptake.clone();
    let conn_streams = streams.clone();
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let uptake = conn_uptake.clone();
        let stream = Stream::new(&conn_streams);
        let (info, state) = (info.clone(), state.clone());
        // Boxed: hyper keeps a slot of this future's size per stream. The
        // request's future is made inside, so that it is never moved.
        super::in_box(move || async move {
            let req = req.map(|b| ReqBody::H2(H2Body::new(b, idle)));
            let Ok(mut resp) = service::handle(req, info, state).await;
            // hyper writes the map: an upstream's fields go into it.
            if let Some(raw) = resp.body_mut().take_fields() {
                let set = std::mem::take(resp.headers_mut());
                *resp.headers_mut() = raw.into_map(set);
            }
            Ok::<_, std::convert::Infallible>(resp.map(|inner| Tracked {
                inner,
                uptake,
                handed: false,
                _stream: stream,
            }))
        })
    });
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);

    // One timer, moved when it fires, as HTTP/1's idle rule.
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    let uptake_timer = tokio::time::sleep(idle);
    tokio::pin!(uptake_timer);
    // A graceful close sends GOAWAY and a PING, and hyper waits for the
    // PING's answer before it lets the connection end. A client that never
    // answers (gone, or holding the connection on purpose) would keep it,
    // and its place among max_connections, for ever: from the close on, it
    // has idle_timeout to send anything at all.
    let grace = tokio::time::sleep(idle);
    tokio::pin!(grace);
    let mut close = Close::Open;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with error");
                }
                return;
            }
            _ = std::future::poll_fn(|cx| {
                poll_idle(timer.as_mut(), &streams, idle, cx)
            }), if close == Close::Open => {
                conn.as_mut().graceful_shutdown();
                close = Close::Since(reads.load(Ordering::Relaxed));
                grace.as_mut().reset(tokio::time::Instant::now() + idle);
            }
            _ = std::future::poll_fn(|cx| {
                super::poll_stalled(uptake_timer.as_mut(), uptake.last_ms.load(Ordering::Relaxed), idle, cx)
            }) => {
                if uptake.waiting.load(Ordering::Relaxed) > 0 {
                    tracing::debug!("the client took no response data for idle_timeout; closing");
                    return;
                }
                uptake.moved();
            }
            _ = shutdown.changed(), if close == Close::Open => {
                conn.as_mut().graceful_shutdown();
                close = Close::Since(reads.load(Ordering::Relaxed));
                grace.as_mut().reset(tokio::time::Instant::now() + idle);
            }
            _ = grace.as_mut(), if matches!(close, Close::Since(_)) => {
                if close == Close::Since(reads.load(Ordering::Relaxed)) {
                    tracing::debug!("no answer to GOAWAY's PING within idle_timeout; closing");
                    return;
                }
                // It answered: hyper ends the connection once its streams
                // are done.
                close = Close::Answered;
            }
        }
    }
}

/// Where a connection is in closing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Close {
    Open,
    /// GOAWAY sent when the client's reads numbered this.
    Since(u64),
    /// The client has sent something since.
    Answered,
}
