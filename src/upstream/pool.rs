//! Keep-alive connections to one server. A connection goes back to the pool
//! only once its response body has been read to the end (`body.rs`); one
//! that the server or an error closed is simply dropped.

use super::connect::connect;
use super::h1::Conn;
use super::ServerAddr;
use crate::body::BoxError;
use crate::http::{IdleSet, IdleTimer};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

/// Idle connections with the `now_ms` they came back at.
type Idle = Mutex<Vec<(Conn, u64)>>;

pub struct Pool {
    /// One idle list per worker thread (workers.rs): a request takes and
    /// returns connections of its own thread, whose sockets are registered
    /// with that thread's runtime, and the lock is never contended. Made at
    /// first use, when the workers run.
    shards: OnceLock<Box<[Idle]>>,
    /// For the whole pool; each worker keeps its share.
    max_idle: AtomicUsize,
    /// A connection that carried this many requests is closed, not kept.
    max_requests: AtomicU32,
    /// The deadlines of its connections' waits for an answer.
    waits: Arc<IdleSet>,
}

impl Pool {
    pub fn new(max_idle: usize, max_requests: u32) -> Self {
        Pool {
            shards: OnceLock::new(),
            max_idle: AtomicUsize::new(max_idle),
            max_requests: AtomicU32::new(max_requests),
            waits: Arc::default(),
        }
    }

    pub fn set_max_idle(&self, n: usize) {
        self.max_idle.store(n, Ordering::Relaxed);
    }

    pub fn set_max_requests(&self, n: u32) {
        self.max_requests.store(n, Ordering::Relaxed);
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

    /// An idle connection for a request, most recently used first (it is
    /// the one least likely to have been closed by the server). Connections
    /// idle longer than `max_age` are closed rather than reused: gunicorn
    /// closes idle keep-alive connections after 2 s, and a request sent at
    /// that moment fails. So are those the server has closed meanwhile.
    pub fn checkout(&self, max_age: Duration) -> Option<Conn> {
        let mut idle = self.shard().0.lock().ok()?;
        let now = super::now_ms();
        while let Some((mut conn, since)) = idle.pop() {
            if !too_old(now, since, max_age) && !conn.is_stale() {
                return Some(conn);
            }
        }
        None
    }

    /// Close idle connections older than `max_age`. `checkout` only looks
    /// when a request comes: after a burst, a pool left alone would keep its
    /// connections for ever, in CLOSE_WAIT once the server gave up on them
    /// (gunicorn after 2 s), where nginx's upstream `keepalive_timeout`
    /// closes them.
    pub fn expire(&self, max_age: Duration) {
        let now = super::now_ms();
        for shard in self.shards.get().into_iter().flatten() {
            let old = match shard.lock() {
                Ok(mut idle) => {
                    // Oldest first: they came back in order.
                    let n = idle.partition_point(|&(_, since)| too_old(now, since, max_age));
                    idle.drain(..n).collect::<Vec<_>>()
                }
                Err(_) => continue,
            };
            // Closed outside the lock, which the worker takes per request.
            drop(old);
        }
    }

    /// Close every idle connection (they are suspected stale).
    pub fn clear(&self) {
        for shard in self.shards.get().into_iter().flatten() {
            if let Ok(mut idle) = shard.lock() {
                idle.clear();
            }
        }
    }

    /// Keep a connection whose answer has ended, unless it has carried
    /// `max_requests`: connections made again from time to time spread
    /// over the server's processes as they accept (a burst of connects at
    /// start-up can leave most of them on one), as nginx's
    /// `keepalive_requests` and haproxy's idle-connection purges do.
    pub fn put(&self, conn: Conn) {
        if conn.requests >= self.max_requests.load(Ordering::Relaxed) {
            return;
        }
        let (idle, max) = self.shard();
        if let Ok(mut idle) = idle.lock() {
            if idle.len() < max {
                idle.push((conn, super::now_ms()));
            }
        }
    }

    pub async fn connect(
        &self,
        addr: &ServerAddr,
        timeout: Duration,
    ) -> Result<Conn, std::io::Error> {
        let io = connect(addr, timeout).await?;
        Ok(Conn::new(io, IdleTimer::new(self.waits.clone())))
    }
}

/// A client's body streamed upstream, limited to `max_body` as it goes.
pub struct RequestBody {
    inner: Option<crate::body::ReqBody>,
    remaining: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("request body larger than max_body")]
pub struct BodyTooLarge;

impl RequestBody {
    pub fn limited(inner: crate::body::ReqBody, limit: u64) -> Self {
        RequestBody {
            inner: Some(inner),
            remaining: limit,
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
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    // With what the body has promised still to come (the
                    // rest of a chunk): a chunk past max_body goes no further.
                    let n = d.len() as u64;
                    let promised = this.inner.as_ref().map_or(0, |b| b.size_hint().lower());
                    if n.saturating_add(promised) > this.remaining {
                        this.inner = None;
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    this.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
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
        server.attempts.fetch_add(1, Ordering::Relaxed);
        InflightGuard(server)
    }
}

impl InflightGuard {
    pub fn server(&self) -> &Arc<super::Server> {
        &self.0
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether a connection idle since `since` is past `max_age` at `now`.
fn too_old(now: u64, since: u64, max_age: Duration) -> bool {
    u128::from(now.saturating_sub(since)) >= max_age.as_millis()
}

/// Once a second, close the idle connections of every pool in the running
/// config that are older than their upstream's `keepalive_timeout`. Ends
/// with the server's state.
pub async fn sweep(state: std::sync::Weak<crate::state::State>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else {
            return;
        };
        let snap = state.load();
        for up in snap.upstreams.values() {
            for server in &up.servers {
                server.pool.expire(up.settings.keepalive_timeout);
            }
        }
    }
}
