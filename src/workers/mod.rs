//! Thread-per-core request handling. `server.threads` worker threads each run
//! their own single-threaded tokio runtime. An accepted connection is handed
//! to the worker serving the fewest connections and stays there for its whole
//! life, together with the upstream connections its requests use, so nothing
//! of a request crosses threads: no work stealing, no cross-thread wake-ups,
//! and per-worker upstream pools whose locks are never contended. On two
//! cores this serves about twice the requests per second of one
//! multi-threaded runtime (bench/README.md).
//!
//! Each worker is bound to a CPU of its own when there is one per CPU
//! (`server.cpu_affinity`): two workers left to the kernel sometimes share
//! one CPU for tens of milliseconds while the other runs the app or the
//! clients, and every connection of both waits (bench/HISTORY.md, "a third
//! machine": plain p99 about 2 ms bound against 3-5 ms unbound).
//!
//! Workers run under SCHED_BATCH by default (`server.scheduling_policy`): a
//! woken worker then waits for the thread running on its CPU to end its
//! turn instead of preempting it, and finds tens of requests waiting instead
//! of one. With the clients on the same CPUs that is about 15 times fewer
//! context switches and 30 % more static files served, with the same p99
//! (bench/HISTORY.md, "the scheduling policy").
//! They also run at nice -3 by default (`server.nice`): once on a CPU, a
//! worker is then seldom preempted by the threads it wakes (the app's, the
//! clients') before its turn ends, so it serves every request waiting
//! instead of being switched out after the first write. That took the
//! workers' involuntary context switches from one per 4-7 requests to
//! about none, and up to 10 % more requests through (bench/HISTORY.md, "a
//! worker's nice value").
//!
//! Without workers (the integration tests' in-process servers) connections
//! run on the caller's runtime, as everything else does.

use crate::listener::limit::ConnPermit;
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tokio::runtime::Handle;

use crate::state::{Affinity, Nice, SchedPolicy};

mod sched;
pub use sched::{allowed_cpus, placement, plan};
use sched::{bind, refused_nice, set_nice, set_policy};

struct Worker {
    handle: Handle,
    /// Connections this worker is serving: where the next one goes.
    conns: AtomicUsize,
}

static WORKERS: OnceLock<Vec<Worker>> = OnceLock::new();

/// The workers' scheduling policy and nice value, which the access log's
/// writer takes too.
static POLICY: OnceLock<(SchedPolicy, Nice)> = OnceLock::new();

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// Start `n` worker threads (at least one), once per process; later calls
/// change nothing. The workers run until the process exits: a server's
/// shutdown drains their connections, not the threads.
pub fn start(
    n: usize,
    affinity: &Affinity,
    policy: SchedPolicy,
    nice: Nice,
) -> std::io::Result<()> {
    // Held to the end, so that two first calls at once (tests) do not both
    // start workers, the loser's running unused.
    static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    if WORKERS.get().is_some() {
        return Ok(());
    }
    let n = n.max(1);
    let _ = POLICY.set((policy, nice));
    let cpus = placement(affinity, n);
    match &cpus {
        Some(c) => {
            tracing::info!(workers = n, cpus = ?c, policy = policy.name(), nice = nice.value, "worker threads bound to CPUs")
        }
        None => tracing::info!(
            workers = n,
            policy = policy.name(),
            nice = nice.value,
            "worker threads not bound to CPUs"
        ),
    }
    // Each worker says when it has bound itself and set its policy, so that
    // the server is not announced ready with a worker still unbound.
    let (bound_tx, bound) = std::sync::mpsc::channel::<()>();
    let mut workers = Vec::new();
    for i in 0..n {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let cpu = cpus.as_ref().map(|c| c[i]);
        let bound_tx = bound_tx.clone();
        std::thread::Builder::new()
            .name(format!("portcullis-worker-{i}"))
            .spawn(move || {
                INDEX.set(i);
                if let Some(cpu) = cpu {
                    if let Err(e) = bind(cpu) {
                        tracing::warn!(worker = i, cpu, error = %e, "cannot bind the worker to its CPU; it runs unbound");
                    }
                }
                if let Err(e) = set_policy(policy) {
                    tracing::warn!(worker = i, policy = policy.name(), error = %e, "cannot set the worker's scheduling policy; it keeps the process's");
                }
                if let Err(e) = set_nice(nice.value) {
                    refused_nice(i, nice, &e);
                }
                let _ = bound_tx.send(());
                drop(bound_tx);
                rt.block_on(std::future::pending::<()>());
            })?;
        workers.push(Worker {
            handle,
            conns: AtomicUsize::new(0),
        });
    }
    drop(bound_tx);
    // One message per worker; an error only if a worker died before it
    // could send: nothing left to wait for.
    for _ in 0..n {
        if bound.recv().is_err() {
            break;
        }
    }
    let _ = WORKERS.set(workers);
    Ok(())
}

/// Put the calling thread under the workers' policy and nice value, if
/// workers run: for threads that serve them in the background (the access
/// log's writer), which would otherwise preempt a worker each time they are
/// woken.
pub fn join_policy() -> std::io::Result<()> {
    match POLICY.get() {
        Some(&(p, nice)) => {
            set_policy(p)?;
            set_nice(nice.value)
        }
        None => Ok(()),
    }
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
/// runtime when no workers run. The socket is registered only there, once.
/// `serve` makes the connection's future; it runs on this thread, with the
/// worker's runtime entered.
pub fn spawn_conn<F, Fut>(stream: std::net::TcpStream, permit: ConnPermit, serve: F)
where
    F: FnOnce(TcpStream) -> Fut,
    Fut: Future + Send + 'static,
    Fut::Output: Ended,
{
    let Some(w) = WORKERS
        .get()
        .and_then(|ws| ws.iter().min_by_key(|w| w.conns.load(Ordering::Relaxed)))
    else {
        match TcpStream::from_std(stream) {
            Ok(s) => {
                tokio::spawn(Conn {
                    fut: serve(s),
                    hold: Some(Hold {
                        _permit: permit,
                        _done: None,
                    }),
                });
            }
            Err(e) => tracing::debug!(error = %e, "cannot register a connection"),
        }
        return;
    };
    // The socket goes to the worker's own I/O driver; registering with it
    // from this thread is what entering its runtime allows.
    let stream = {
        let _rt = w.handle.enter();
        match TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "worker cannot take a connection");
                return;
            }
        }
    };
    w.conns.fetch_add(1, Ordering::Relaxed);
    let done = Done(&w.conns);
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
    _permit: ConnPermit,
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
