//! Idle HTTP/1 connections parked without a task.
//!
//! A keep-alive connection that waits for its next request held a tokio
//! task (256 bytes), a registration in tokio's I/O driver (256), its shared
//! state (168) and its `ConnInfo` (96): about 1.3 KiB of resident memory
//! each, twice nginx's. After `AFTER` without a byte, a plain-TCP
//! connection now gives all of that up: its socket goes into an epoll set
//! of its worker's own, with what is needed to serve it again (its
//! addresses, the state, the shutdown signal, its connection permit) in one
//! table entry. When the client sends its next request, or closes, the
//! socket goes back to tokio and a new task serves it from its first byte,
//! as if just accepted. The idle timeout still holds: the watcher closes
//! what is due, and a shutdown closes everything parked.
//!
//! Busy connections never get here: a connection that is never idle for a
//! whole second costs nothing more than its idle-timer deadline did.
//! TLS connections are not parked: their session state cannot leave the
//! task, and it is far larger than what parking would save.

use crate::service::ConnInfo;
use crate::state::State;
use crate::upstream::now_ms;
use crate::workers::Hold;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::{watch, Notify};

/// How long a connection is idle before it is parked. Long enough that a
/// client between two requests of a page load never pays for it; short
/// against every sane idle timeout.
pub const AFTER: Duration = Duration::from_secs(1);

/// Idle timeouts shorter than this are left to the connection's own
/// deadline: parking would save memory for a moment only.
pub const MIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Watchers look at deadlines at least this often, and at most this late.
const TICK_MS: u64 = 500;

/// After this many connections parked since the last time, the allocator is
/// asked to give back what the tasks freed (see `Shard::trim`).
const TRIM_AFTER: usize = 256;

const SHARDS: usize = 16;

/// What a connection's task hands over when it parks.
pub struct Parked {
    pub stream: std::net::TcpStream,
    /// Its own, not the task's shared one: every allocation the task held
    /// is freed, so that whole pages can go back to the system.
    pub info: ConnInfo,
    pub state: Arc<State>,
    pub shutdown: watch::Receiver<bool>,
    /// `now_ms` when the idle timeout closes it.
    pub due: u64,
}

impl Parked {
    pub fn new(
        stream: std::net::TcpStream,
        info: &ConnInfo,
        state: Arc<State>,
        shutdown: watch::Receiver<bool>,
        due: u64,
    ) -> Self {
        Parked {
            stream,
            info: ConnInfo {
                peer: info.peer,
                local: info.local,
                kind: info.kind,
                // Only TLS connections have one, and they are not parked.
                client_cert_subject: None,
            },
            state,
            shutdown,
            due,
        }
    }
}

struct Entry {
    parked: Parked,
    hold: Hold,
}

/// One server's parked connections, a shard per worker thread.
#[derive(Default)]
pub struct Lot {
    shards: [OnceLock<Arc<Shard>>; SHARDS],
}

struct Shard {
    /// The epoll set the parked sockets are in, itself watched by tokio.
    epoll: AsyncFd<OwnedFd>,
    /// Boxed: a table has up to about twice as many slots as entries,
    /// and a slot of a box is 16 bytes where one of an entry is 152.
    entries: Mutex<HashMap<RawFd, Box<Entry>>>,
    closed: AtomicBool,
    /// Wakes the watcher: a shutdown, or a deadline earlier than it knew.
    wake: Notify,
    next_due: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while the table is held; if it did, the entries are
    // still whole connections.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Lot {
    /// How many connections are parked.
    pub fn count(&self) -> usize {
        self.shards
            .iter()
            .filter_map(OnceLock::get)
            .map(|s| lock(&s.entries).len())
            .sum()
    }

    /// Close every parked connection: at shutdown (they are idle, so
    /// nothing is cut short), or when the server goes away.
    pub fn close_all(&self) {
        for s in self.shards.iter().filter_map(OnceLock::get) {
            s.closed.store(true, Ordering::SeqCst);
            // Dropped outside the lock: closing sockets takes a while.
            let gone = std::mem::take(&mut *lock(&s.entries));
            drop(gone);
            s.wake.notify_one();
        }
    }

    /// This worker's shard, made (with its watcher task) on first use.
    fn shard(&self) -> std::io::Result<&Arc<Shard>> {
        let cell = &self.shards[crate::workers::index() % SHARDS];
        if let Some(s) = cell.get() {
            return Ok(s);
        }
        // SAFETY: no pointers are passed; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor just made, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the descriptor is owned by the `AsyncFd` and stays open
        // for as long as it is registered.
        let epoll = unsafe { AsyncFd::register(fd) }.map_err(std::io::Error::from)?;
        let made = Arc::new(Shard {
            epoll,
            entries: Mutex::default(),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
            next_due: AtomicU64::new(u64::MAX),
        });
        // Two threads share an index only past `SHARDS` workers; the first
        // shard made is kept, with its one watcher.
        let s = cell.get_or_init(|| made.clone());
        if Arc::ptr_eq(s, &made) {
            tokio::spawn(watch(made));
        }
        Ok(s)
    }
}

/// Park a connection; its task has ended. If it cannot be watched, it is
/// closed, as its idle timeout would have.
pub fn put(p: Parked, hold: Hold) {
    let lot = p.state.parked.clone();
    let shard = match lot.shard() {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "cannot park an idle connection; closing it");
            return;
        }
    };
    if shard.closed.load(Ordering::SeqCst) {
        return;
    }
    let fd = p.stream.as_raw_fd();
    let due = p.due;
    // In the table before the socket is watched: an event for it must find it.
    lock(&shard.entries).insert(fd, Box::new(Entry { parked: p, hold }));
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
        u64: fd as u64,
    };
    // SAFETY: both descriptors are open (the socket is in the table, owned
    // by it); `ev` outlives the call.
    let r = unsafe { libc::epoll_ctl(shard.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
    if r != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot watch a parked connection; closing it");
        lock(&shard.entries).remove(&fd);
        return;
    }
    if due < shard.next_due.fetch_min(due, Ordering::SeqCst) {
        shard.wake.notify_one();
    }
}

/// A shard's watcher: resumes the connections whose clients sent something
/// (or closed), closes those whose idle timeout passed.
async fn watch(shard: Arc<Shard>) {
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
    let mut parked_at_trim = 0;
    loop {
        if shard.closed.load(Ordering::SeqCst) {
            // Also what a `put` racing with `close_all` left behind.
            lock(&shard.entries).clear();
            return;
        }
        let now = now_ms();
        let next = shard.sweep(now);
        parked_at_trim = shard.trim(parked_at_trim);
        let wait = next.saturating_sub(now).clamp(1, TICK_MS);
        tokio::select! {
            r = shard.epoll.readable() => {
                let Ok(mut ready) = r else { return };
                loop {
                    // SAFETY: the set is open; `events` has room for the
                    // count passed.
                    let n = unsafe {
                        libc::epoll_wait(
                            shard.epoll.as_raw_fd(),
                            events.as_mut_ptr(),
                            events.len() as i32,
                            0,
                        )
                    };
                    if n <= 0 {
                        // Nothing more: tokio says "ready" again on the
                        // next event, even one that came during this loop.
                        ready.clear_ready();
                        break;
                    }
                    for ev in &events[..n as usize] {
                        shard.resume(ev.u64 as RawFd);
                    }
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = shard.wake.notified() => {}
        }
    }
}

impl Shard {
    /// Close the connections due by `now`; the earliest deadline left.
    fn sweep(&self, now: u64) -> u64 {
        if self.next_due.load(Ordering::SeqCst) > now {
            return self.next_due.load(Ordering::SeqCst);
        }
        self.next_due.store(u64::MAX, Ordering::SeqCst);
        let mut closed = 0;
        let mut next = u64::MAX;
        lock(&self.entries).retain(|_, e| {
            let keep = e.parked.due > now;
            if keep {
                next = next.min(e.parked.due);
            } else {
                closed += 1;
            }
            keep
        });
        if closed > 0 {
            tracing::debug!(closed, "parked connections reached idle_timeout");
        }
        self.next_due.fetch_min(next, Ordering::SeqCst);
        self.next_due.load(Ordering::SeqCst)
    }

    /// Give freed memory back to the system after a burst of parking: the
    /// tasks and buffers the connections gave up sit in the allocator's
    /// free lists otherwise, counted in the process's resident memory.
    /// Returns the table size to compare with next time.
    fn trim(&self, parked_at_trim: usize) -> usize {
        let now = lock(&self.entries).len();
        if now < parked_at_trim + TRIM_AFTER {
            return now.min(parked_at_trim);
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: no arguments but a size; glibc's own locks guard it.
        unsafe {
            libc::malloc_trim(0);
        }
        now
    }

    /// The client spoke (or hung up): serve the connection again.
    fn resume(&self, fd: RawFd) {
        let Some(e) = lock(&self.entries).remove(&fd) else {
            return;
        };
        // SAFETY: the set and the socket are open; DEL reads no event.
        unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            );
        }
        let Entry { parked: p, hold } = *e;
        if p.shutdown.has_changed().unwrap_or(true) {
            return;
        }
        let stream = match tokio::net::TcpStream::from_std(p.stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "cannot resume a parked connection");
                return;
            }
        };
        let info = Arc::new(p.info);
        crate::workers::respawn(hold, crate::http::resume(stream, info, p.state, p.shutdown));
    }
}
