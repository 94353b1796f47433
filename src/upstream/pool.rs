//! Keep-alive connections to one server. A connection goes back to the pool
//! only once its response body has been read to the end; one that the
//! server or an error closed is simply dropped.

use super::connect::{connect, Stream};
use super::ServerAddr;
use crate::body::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub type Sender = http1::SendRequest<RequestBody>;

type Idle = Mutex<Vec<(Sender, Instant)>>;

pub struct Pool {
    /// One idle list per worker thread (workers.rs): a request takes and
    /// returns connections of its own thread, whose connection tasks run
    /// there too, and the lock is never contended. Made at first use, when
    /// the workers run.
    shards: OnceLock<Box<[Idle]>>,
    /// For the whole pool; each worker keeps its share.
    max_idle: AtomicUsize,
}

impl Pool {
    pub fn new(max_idle: usize) -> Self {
        Pool {
            shards: OnceLock::new(),
            max_idle: AtomicUsize::new(max_idle),
        }
    }

    pub fn set_max_idle(&self, n: usize) {
        self.max_idle.store(n, Ordering::Relaxed);
    }

    pub fn idle_count(&self) -> usize {
        self.shards.get().map_or(0, |shards| {
            shards
                .iter()
                .map(|s| s.lock().map(|v| v.len()).unwrap_or(0))
                .sum()
        })
    }

    fn shard(&self) -> (&Idle, usize) {
        let shards = self.shards.get_or_init(|| {
            (0..crate::workers::count())
                .map(|_| Mutex::new(Vec::new()))
                .collect()
        });
        let n = shards.len();
        let max = self.max_idle.load(Ordering::Relaxed).div_ceil(n);
        (&shards[crate::workers::index() % n], max)
    }

    /// An idle connection ready for a request, most recently used first (it
    /// is the one least likely to have been closed by the server).
    /// Connections idle longer than `max_age` are closed rather than reused:
    /// gunicorn closes idle keep-alive connections after 2 s, and a request
    /// sent at that moment fails.
    ///
    /// A connection comes back to the pool the moment its response body
    /// ends; hyper marks it ready (or closed, if the server said so) when its
    /// connection task next runs, which this waits for, at most `wait`.
    pub async fn checkout(&self, max_age: Duration, wait: Duration) -> Option<Sender> {
        loop {
            let mut tx = self.pop(max_age)?;
            if tx.is_ready() {
                return Some(tx);
            }
            if let Ok(Ok(())) = tokio::time::timeout(wait, tx.ready()).await {
                return Some(tx);
            }
        }
    }

    fn pop(&self, max_age: Duration) -> Option<Sender> {
        let mut idle = self.shard().0.lock().ok()?;
        while let Some((tx, since)) = idle.pop() {
            if !tx.is_closed() && since.elapsed() < max_age {
                return Some(tx);
            }
        }
        None
    }

    /// Close every idle connection (they are suspected stale).
    pub fn clear(&self) {
        for shard in self.shards.get().into_iter().flatten() {
            if let Ok(mut idle) = shard.lock() {
                idle.clear();
            }
        }
    }

    pub fn put(&self, tx: Sender) {
        if tx.is_closed() {
            return;
        }
        let (idle, max) = self.shard();
        if let Ok(mut idle) = idle.lock() {
            if idle.len() < max {
                idle.push((tx, Instant::now()));
            }
        }
    }

    pub async fn connect(addr: &ServerAddr, timeout: Duration) -> Result<Sender, std::io::Error> {
        let stream: Stream = connect(addr, timeout).await?;
        let (tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            // Upgrades (WebSocket) need the connection handed over intact.
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with error");
            }
        });
        Ok(tx)
    }
}

/// What is sent upstream: the client's body, limited to `max_body` while it
/// streams, or nothing.
pub struct RequestBody {
    inner: Option<Incoming>,
    remaining: u64,
    /// A body read whole beforehand (see `buffer_chunked`).
    full: Option<Bytes>,
}

#[derive(Debug, thiserror::Error)]
#[error("request body larger than max_body")]
pub struct BodyTooLarge;

impl RequestBody {
    pub fn empty() -> Self {
        RequestBody {
            inner: None,
            remaining: 0,
            full: None,
        }
    }
    pub fn limited(inner: Incoming, limit: u64) -> Self {
        RequestBody {
            inner: Some(inner),
            remaining: limit,
            full: None,
        }
    }
    pub fn full(b: Bytes) -> Self {
        RequestBody {
            inner: None,
            remaining: 0,
            full: (!b.is_empty()).then_some(b),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(b) = this.full.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    let n = d.len() as u64;
                    if n > this.remaining {
                        this.inner = None;
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    this.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.full.is_none() && self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(b) = &self.full {
            return SizeHint::with_exact(b.len() as u64);
        }
        self.inner
            .as_ref()
            .map_or(SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// Decrements a server's in-flight count when the exchange is over (the
/// response body finished or was dropped).
pub struct InflightGuard(Arc<super::Server>);

impl InflightGuard {
    pub fn new(server: Arc<super::Server>) -> Self {
        server.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(server)
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An upstream response body that returns its connection to the pool once it
/// has been read to the end.
pub struct PooledBody {
    inner: Incoming,
    tx: Option<Sender>,
    guard: Option<InflightGuard>,
}

impl PooledBody {
    pub fn new(inner: Incoming, tx: Option<Sender>, guard: InflightGuard) -> Self {
        PooledBody {
            inner,
            tx,
            guard: Some(guard),
        }
    }

    fn finish(&mut self) {
        let guard = self.guard.take();
        if let (Some(tx), Some(guard)) = (self.tx.take(), guard) {
            // Straight back to the pool: `checkout` waits for it to be ready,
            // so no task per request is spawned to do that here.
            guard.0.pool.put(tx);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let res = Pin::new(&mut self.inner).poll_frame(cx);
        match res {
            Poll::Ready(None) => {
                self.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(f))) => {
                if self.inner.is_end_stream() {
                    self.finish();
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.tx = None;
                self.guard = None;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Read to the end but never polled past it (an empty body): still
        // reusable. Otherwise the connection has unread bytes: drop it.
        if self.inner.is_end_stream() {
            self.finish();
        }
    }
}
