//! Thread-per-core request handling. `server.threads` worker threads each run
//! their own single-threaded tokio runtime. An accepted connection is handed
//! to the worker serving the fewest connections and stays there for its whole
//! life, together with the upstream connections its requests use, so nothing
//! of a request crosses threads: no work stealing, no cross-thread wake-ups,
//! and per-worker upstream pools whose locks are never contended. On two
//! cores this serves about twice the requests per second of one
//! multi-threaded runtime (bench/README.md).
//!
//! Without workers (the integration tests' in-process servers) connections
//! run on the caller's runtime, as everything else does.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::OwnedSemaphorePermit;

struct Worker {
    handle: Handle,
    /// Connections this worker is serving: where the next one goes.
    conns: AtomicUsize,
}

static WORKERS: OnceLock<Vec<Worker>> = OnceLock::new();

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// Start `n` worker threads (at least one), once per process; later calls
/// change nothing. The workers run until the process exits: a server's
/// shutdown drains their connections, not the threads.
pub fn start(n: usize) -> std::io::Result<()> {
    if WORKERS.get().is_some() {
        return Ok(());
    }
    let mut workers = Vec::new();
    for i in 0..n.max(1) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name(format!("portcullis-worker-{i}"))
            .spawn(move || {
                INDEX.set(i);
                rt.block_on(std::future::pending::<()>());
            })?;
        workers.push(Worker {
            handle,
            conns: AtomicUsize::new(0),
        });
    }
    let _ = WORKERS.set(workers);
    Ok(())
}

/// How many workers run; 1 without workers (everything on one runtime).
pub fn count() -> usize {
    WORKERS.get().map_or(1, Vec::len)
}

/// This thread's worker number, in `0..count()`; 0 outside workers.
pub fn index() -> usize {
    INDEX.get()
}

/// Serve an accepted connection on the least busy worker, or on the current
/// runtime when no workers run. `serve` makes the connection's future; it
/// runs on this thread, with the worker's runtime entered.
pub fn spawn_conn<F, Fut>(stream: TcpStream, permit: OwnedSemaphorePermit, serve: F)
where
    F: FnOnce(TcpStream) -> Fut,
    Fut: Future + Send + 'static,
    Fut::Output: Ended,
{
    let Some(w) = WORKERS
        .get()
        .and_then(|ws| ws.iter().min_by_key(|w| w.conns.load(Ordering::Relaxed)))
    else {
        tokio::spawn(Conn {
            fut: serve(stream),
            hold: Some(Hold {
                _permit: permit,
                _done: None,
            }),
        });
        return;
    };
    // The socket moves to the worker's own I/O driver; registering with it
    // from this thread is what entering its runtime allows.
    let std = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "cannot hand a connection to a worker");
            return;
        }
    };
    w.conns.fetch_add(1, Ordering::Relaxed);
    let done = Done(&w.conns);
    let stream = {
        let _rt = w.handle.enter();
        match TcpStream::from_std(std) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "worker cannot take a connection");
                return;
            }
        }
    };
    w.handle.spawn(Conn {
        fut: serve(stream),
        hold: Some(Hold {
            _permit: permit,
            _done: Some(done),
        }),
    });
}

/// Serve a parked connection again, on this thread's runtime (the worker
/// it was parked on), with what it held.
pub fn respawn<Fut>(hold: Hold, fut: Fut)
where
    Fut: Future + Send + 'static,
    Fut::Output: Ended,
{
    tokio::spawn(Conn {
        fut,
        hold: Some(hold),
    });
}

/// What a connection holds for its whole life, parked or not: its place
/// under `max_connections`, and its count on its worker.
pub struct Hold {
    _permit: OwnedSemaphorePermit,
    _done: Option<Done>,
}

/// How a connection's future ended: closed, or parked (HTTP/1 over TCP,
/// idle), in which case its `Hold` goes with it into the parking lot.
pub trait Ended {
    fn parked(self) -> Option<crate::http::park::Parked>;
}

impl Ended for () {
    fn parked(self) -> Option<crate::http::park::Parked> {
        None
    }
}

impl Ended for Option<crate::http::park::Parked> {
    fn parked(self) -> Option<crate::http::park::Parked> {
        self
    }
}

pin_project_lite::pin_project! {
    /// A connection's task: its future, and what it holds until it ends.
    struct Conn<F> {
        #[pin]
        fut: F,
        hold: Option<Hold>,
    }
}

impl<F: Future> Future for Conn<F>
where
    F::Output: Ended,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let parked = std::task::ready!(this.fut.poll(cx)).parked();
        if let (Some(p), Some(hold)) = (parked, this.hold.take()) {
            crate::http::park::put(p, hold);
        }
        Poll::Ready(())
    }
}

struct Done(&'static AtomicUsize);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
