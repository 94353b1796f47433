//! Where formatted lines wait for the writer thread.
//!
//! A request's line is formatted on the thread that served it, into one of
//! a few slots (a thread keeps to one), under the slot's lock, which only
//! the writer also takes, and only to swap a full buffer for an empty one.
//! The writer is called by the first line after it went to sleep, lingers
//! a moment so that a load's lines go out in a few large writes, and is
//! called at once by a slot that grows large. So a request hands over no
//! allocation and wakes no thread: under load the writer runs a few dozen
//! times a second, and an idle server's writer sleeps.
//!
//! A destination that stops taking lines (a full pipe to a stalled
//! journal) blocks only the writer; the slots then stop at `CAP` and
//! further lines are counted as lost, and the count is logged, instead of
//! the server's memory growing or its requests waiting.

use super::dest::Destination;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const SLOTS: usize = 8;
/// A slot this full calls the writer without waiting for the linger.
const HIGH: usize = 64 << 10;
/// A slot this full takes no more lines until the writer has emptied it.
const CAP: usize = 4 << 20;
/// How long a called writer waits for more lines before writing: the
/// most a line waits on a busy server.
const LINGER: Duration = Duration::from_millis(50);

/// The Common Log Format time of the last second a slot wrote, which is
/// the next line's second too, mostly.
#[derive(Default)]
pub(super) struct Clf {
    pub secs: i64,
    pub text: String,
}

#[derive(Default)]
pub(super) struct Slot {
    pub buf: Vec<u8>,
    pub clf: Clf,
}

// Each slot on its own cache lines: two workers writing their own slots
// must not contend for one line.
#[repr(align(128))]
#[derive(Default)]
struct Padded(Mutex<Slot>);

#[derive(Default)]
struct Call {
    called: bool,
    closed: bool,
}

#[derive(Default)]
pub(super) struct Shared {
    slots: [Padded; SLOTS],
    /// The writer sleeps until a line comes; the first to find this set
    /// calls it.
    armed: AtomicBool,
    /// A slot passed `HIGH`; set once until the writer has run.
    urgent: AtomicBool,
    lost: AtomicU64,
    /// SIGUSR1 asked for the log file to be opened again.
    reopen: AtomicBool,
    call: Mutex<Call>,
    ring: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while a slot is held (formatting into a Vec does not);
    // if it did, the buffer holds whole lines and a part of one.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The slot of the calling thread: a worker's own (other threads share
/// the first worker's, under its lock).
fn slot_index() -> usize {
    crate::workers::index() % SLOTS
}

impl Shared {
    /// Format one line into the calling thread's slot.
    pub fn push(&self, format: impl FnOnce(&mut Slot)) {
        let mut slot = lock(&self.slots[slot_index()].0);
        if slot.buf.len() >= CAP {
            self.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let first = slot.buf.is_empty();
        format(&mut slot);
        let len = slot.buf.len();
        drop(slot);
        if len >= HIGH {
            if !self.urgent.swap(true, Ordering::AcqRel) {
                self.ring(false);
            }
        } else if first
            && self.armed.load(Ordering::Acquire)
            && self.armed.swap(false, Ordering::AcqRel)
        {
            self.ring(false);
        }
    }

    fn ring(&self, close: bool) {
        let mut c = lock(&self.call);
        c.called = true;
        c.closed |= close;
        drop(c);
        self.ring.notify_one();
    }

    /// The writer opens its file again (made if missing) at once, with or
    /// without lines to write.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
        self.ring(false);
    }

    /// The writer drains what is left and ends.
    pub fn close(&self) {
        self.ring(true);
    }

    fn any_waiting(&self) -> bool {
        self.slots.iter().any(|s| !lock(&s.0).buf.is_empty())
    }

    /// Sleep until called; false once closed and nothing is left.
    fn wait(&self) -> bool {
        let mut c = lock(&self.call);
        if !c.called && !c.closed {
            drop(c);
            self.armed.store(true, Ordering::SeqCst);
            // A line pushed before `armed` was set saw it clear and did not
            // call: look once more. One pushed after sees it set (the
            // slot's lock orders the two).
            if self.any_waiting() {
                self.armed.store(false, Ordering::SeqCst);
                return true;
            }
            c = lock(&self.call);
            while !c.called && !c.closed {
                c = self.ring.wait(c).unwrap_or_else(|e| e.into_inner());
            }
        }
        self.armed.store(false, Ordering::SeqCst);
        if !c.closed && !self.urgent.load(Ordering::Acquire) {
            // Let the load's next lines join these.
            let (g, _) = self
                .ring
                .wait_timeout_while(c, LINGER, |c| {
                    !c.closed && !self.urgent.load(Ordering::Acquire)
                })
                .unwrap_or_else(|e| e.into_inner());
            c = g;
        }
        c.called = false;
        let closed = c.closed;
        drop(c);
        self.urgent.store(false, Ordering::Release);
        !closed
    }
}

/// The writer thread's loop: each slot's lines, a slot at a time, until
/// the logger is closed, then what is left.
pub(super) fn run(shared: &Shared, mut out: Box<dyn Destination>) {
    let mut spare = Vec::new();
    let mut reported = None::<Instant>;
    loop {
        let open = shared.wait();
        // Before any line of this batch: a line pushed after logrotate
        // moved the file goes to the new one.
        out.follow(shared.reopen.swap(false, Ordering::AcqRel));
        for s in &shared.slots {
            {
                let mut slot = lock(&s.0);
                if slot.buf.is_empty() {
                    continue;
                }
                std::mem::swap(&mut slot.buf, &mut spare);
            }
            if let Err(e) = out.write_all(&spare) {
                if reported.is_none_or(|t: Instant| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(error = %e, "cannot write the access log");
                    reported = Some(Instant::now());
                }
            }
            spare.clear();
            // After a stall the buffers may be large: do not keep that.
            if spare.capacity() > 4 * HIGH {
                spare.shrink_to(HIGH);
            }
        }
        let _ = out.flush();
        let lost = shared.lost.swap(0, Ordering::Relaxed);
        if lost > 0 {
            tracing::warn!(
                lines = lost,
                "access log lines lost: its destination did not keep up"
            );
        }
        if !open {
            return;
        }
    }
}

#[cfg(test)]
impl Shared {
    /// Bytes formatted and not yet taken by the writer.
    pub fn waiting(&self) -> usize {
        self.slots.iter().map(|s| lock(&s.0).buf.len()).sum()
    }

    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}
