//! HTTP/2 (ALPN `h2` on TLS, or prior knowledge on plain listeners): hyper's
//! server, with the idle timeout and graceful shutdown around it.

use crate::body::ReqBody;
use crate::service::{self, ConnInfo};
use crate::state::State;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Sleep;

mod io;

/// What a connection's task, its streams and its byte stream share.
struct Shared {
    streams: Streams,
    uptake: Uptake,
    counts: io::Counts,
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
struct Stream(Arc<Shared>);

impl Stream {
    fn new(conn: &Arc<Shared>) -> Self {
        conn.streams.open.fetch_add(1, Ordering::Relaxed);
        Stream(conn.clone())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let streams = &self.0.streams;
        streams
            .last_ms
            .store(crate::upstream::now_ms(), Ordering::Relaxed);
        streams.open.fetch_sub(1, Ordering::Relaxed);
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

/// A response body that reports to its connection's `Uptake` and the
/// data it served, and holds its stream open for the idle rule.
struct Tracked<B> {
    inner: B,
    handed: bool,
    stream: Stream,
}

impl<B: http_body::Body<Data = bytes::Bytes> + Unpin> http_body::Body for Tracked<B> {
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = &mut *self;
        let conn = &*this.stream.0;
        if std::mem::take(&mut this.handed) {
            // Polled again: the last frame went on.
            conn.uptake.waiting.fetch_sub(1, Ordering::Relaxed);
            conn.uptake.moved();
        }
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(data) = f.data_ref() {
                this.handed = true;
                conn.uptake.waiting.fetch_add(1, Ordering::Relaxed);
                conn.uptake.moved();
                let n = data.len() as u64;
                conn.counts.served.fetch_add(n, Ordering::Relaxed);
            }
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
            let uptake = &self.stream.0.uptake;
            uptake.waiting.fetch_sub(1, Ordering::Relaxed);
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
    let shared = Arc::new(Shared {
        streams: Streams {
            open: AtomicUsize::new(0),
            last_ms: AtomicU64::new(crate::upstream::now_ms()),
        },
        uptake: Uptake::default(),
        counts: io::Counts::default(),
    });
    shared.uptake.moved();
    let io = TokioIo::new(io::MeteredIo::new(io, shared.clone()));
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(max_header as u32)
        .max_concurrent_streams(max_streams);
    let peer = info.peer;
    let conn_shared = shared.clone();
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let stream = Stream::new(&conn_shared);
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
                handed: false,
                stream,
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
                if shared.counts.flooded.load(Ordering::Relaxed) {
                    tracing::info!(%peer, "HTTP/2 control frame flood; connection closed");
                } else if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with error");
                }
                return;
            }
            _ = std::future::poll_fn(|cx| {
                poll_idle(timer.as_mut(), &shared.streams, idle, cx)
            }), if close == Close::Open => {
                conn.as_mut().graceful_shutdown();
                close = Close::Since(shared.counts.reads.load(Ordering::Relaxed));
                grace.as_mut().reset(tokio::time::Instant::now() + idle);
            }
            _ = std::future::poll_fn(|cx| {
                let since = shared.uptake.last_ms.load(Ordering::Relaxed);
                super::poll_stalled(uptake_timer.as_mut(), since, idle, cx)
            }) => {
                if shared.uptake.waiting.load(Ordering::Relaxed) > 0 {
                    tracing::debug!("the client took no response data for idle_timeout; closing");
                    return;
                }
                shared.uptake.moved();
            }
            _ = shutdown.changed(), if close == Close::Open => {
                conn.as_mut().graceful_shutdown();
                close = Close::Since(shared.counts.reads.load(Ordering::Relaxed));
                grace.as_mut().reset(tokio::time::Instant::now() + idle);
            }
            _ = grace.as_mut(), if matches!(close, Close::Since(_)) => {
                if close == Close::Since(shared.counts.reads.load(Ordering::Relaxed)) {
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
