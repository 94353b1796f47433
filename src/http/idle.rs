//! Idle timeouts for HTTP/1 connections without a timer in each one; also
//! the wait for an upstream's answer (`upstream::h1`).
//!
//! A tokio timer (`Sleep`) is 112 bytes, and waking idle connections at
//! shutdown took a watch-change future (about 100 more) in every
//! connection's task. With ten thousand keep-alive connections that was a
//! third of what each one held. Here a connection keeps a 16-byte
//! `IdleTimer`: a slot in its server's `IdleSet` with a deadline and the
//! task's waker. One sweeper task per server sleeps until the earliest
//! deadline and wakes the connections that are due; shutdown wakes them
//! all (they see the shutdown signal themselves). Deadlines are moved by
//! the connection itself on each wait, which costs a lock that no other
//! thread holds (one shard per worker).
//!
//! Each upstream pool has a set of its own for the wait on a response head.
//! A tokio timer there cost a write to the runtime's eventfd on most
//! requests: arming a timer earlier than any the parked runtime knew of
//! wakes its driver, and under load that was 0.13 `write` calls a request
//! (bench/README.md, "What changed"). An upstream timeout firing up to
//! `GRAIN_MS` late is of no consequence.

use crate::upstream::now_ms;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Sweeps are at least this far apart, so that ten thousand connections
/// with deadlines a millisecond apart cost a few sweeps a second, not one
/// per connection. Timeouts fire up to this late.
const GRAIN_MS: u64 = 50;
const SHARDS: usize = 8;
const NONE: u64 = u64::MAX;

/// The idle deadlines of one server's connections.
pub struct IdleSet {
    shards: [Mutex<Shard>; SHARDS],
    /// The earliest deadline armed since the last sweep; `NONE` if none.
    next_due: AtomicU64,
    sweeping: AtomicBool,
    sweeper: Mutex<Option<Waker>>,
}

#[derive(Default)]
struct Shard {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

struct Slot {
    due: u64,
    /// Present while the connection waits on this deadline.
    waker: Option<Waker>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while a shard is held; if it did, the slots are still
    // valid (at worst a connection is woken for nothing).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Default for IdleSet {
    fn default() -> Self {
        IdleSet {
            shards: Default::default(),
            next_due: AtomicU64::new(NONE),
            sweeping: AtomicBool::new(false),
            sweeper: Mutex::new(None),
        }
    }
}

impl IdleSet {
    /// Wake every connection waiting on a deadline: at shutdown, after the
    /// signal went out, so that idle ones see it. A wait armed later checks
    /// the signal after arming.
    pub fn wake_all(&self) {
        for shard in &self.shards {
            for slot in &mut lock(shard).slots {
                if let Some(w) = slot.waker.take() {
                    w.wake();
                }
            }
        }
    }

    /// Wake the connections due by `now`; the earliest deadline left.
    fn sweep(&self, now: u64) -> u64 {
        let mut next = NONE;
        for shard in &self.shards {
            for slot in &mut lock(shard).slots {
                if slot.waker.is_none() {
                    continue;
                }
                if slot.due <= now {
                    if let Some(w) = slot.waker.take() {
                        w.wake();
                    }
                } else {
                    next = next.min(slot.due);
                }
            }
        }
        next
    }

    fn armed(self: &Arc<Self>, due: u64) {
        // Loads first: on the common path (a later deadline than one already
        // armed, the sweeper running) this writes nothing shared.
        let lowered = due < self.next_due.load(Ordering::SeqCst)
            && due < self.next_due.fetch_min(due, Ordering::SeqCst);
        if !self.sweeping.load(Ordering::SeqCst) && !self.sweeping.swap(true, Ordering::SeqCst) {
            tokio::spawn(sweeper(Arc::downgrade(self)));
        } else if lowered {
            if let Some(w) = lock(&self.sweeper).take() {
                w.wake();
            }
        }
    }
}

/// Sleep until the earliest deadline, wake who is due, repeat; end when
/// nothing is armed (the next arm starts another) or the set is gone.
async fn sweeper(set: Weak<IdleSet>) {
    let mut last_sweep = 0;
    loop {
        let Some(s) = set.upgrade() else { return };
        let due = s.next_due.load(Ordering::SeqCst);
        if due == NONE {
            s.sweeping.store(false, Ordering::SeqCst);
            // An arm between the load and the store saw `sweeping` still
            // set and started nobody: carry on for it.
            if s.next_due.load(Ordering::SeqCst) == NONE || s.sweeping.swap(true, Ordering::SeqCst)
            {
                return;
            }
            continue;
        }
        let now = now_ms();
        let at = due.max(last_sweep + GRAIN_MS);
        if at > now {
            drop(s);
            let mut sleep = pin!(tokio::time::sleep(Duration::from_millis(at - now)));
            poll_fn(|cx| {
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                let Some(s) = set.upgrade() else {
                    return Poll::Ready(());
                };
                *lock(&s.sweeper) = Some(cx.waker().clone());
                // Re-read after registering: an earlier deadline armed in
                // between would otherwise wait for this sleep.
                if s.next_due.load(Ordering::SeqCst) < due {
                    return Poll::Ready(());
                }
                Poll::Pending
            })
            .await;
            continue;
        }
        // Deadlines armed during the sweep land in `next_due` after this
        // reset, or are seen by the sweep itself: none is lost.
        s.next_due.store(NONE, Ordering::SeqCst);
        let next = s.sweep(now);
        s.next_due.fetch_min(next, Ordering::SeqCst);
        last_sweep = now;
    }
}

/// One connection's idle deadline.
pub struct IdleTimer {
    set: Arc<IdleSet>,
    shard: u32,
    /// `u32::MAX` until first armed.
    slot: u32,
}

impl IdleTimer {
    pub fn new(set: Arc<IdleSet>) -> Self {
        IdleTimer {
            set,
            shard: 0,
            slot: u32::MAX,
        }
    }

    /// Ready once nothing moved for `limit` since `last_ms`; otherwise the
    /// task is woken when that time comes (up to `GRAIN_MS` late), or by
    /// `IdleSet::wake_all`.
    pub fn poll(&mut self, last_ms: u64, limit: Duration, cx: &mut Context<'_>) -> Poll<()> {
        let due = last_ms + limit.as_millis() as u64;
        if now_ms() >= due {
            return Poll::Ready(());
        }
        if self.slot == u32::MAX {
            // Chosen where the connection runs, at its first wait: it is
            // made on the accepting thread, and a shard shared by two
            // workers would bounce its lock between their cores.
            self.shard = (crate::workers::index() % SHARDS) as u32;
        }
        {
            let mut shard = lock(&self.set.shards[self.shard as usize]);
            if self.slot == u32::MAX {
                self.slot = match shard.free.pop() {
                    Some(i) => i,
                    None => {
                        shard.slots.push(Slot { due, waker: None });
                        (shard.slots.len() - 1) as u32
                    }
                };
            }
            let slot = &mut shard.slots[self.slot as usize];
            slot.due = due;
            match &mut slot.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                w => *w = Some(cx.waker().clone()),
            }
        }
        self.set.armed(due);
        Poll::Pending
    }

    /// The wait is over before its deadline: the sweeper will not wake the
    /// task for it. A connection that keeps waiting need not call this (its
    /// next wait moves the deadline), but an upstream connection goes back
    /// to its pool, where a stale waker would wake a finished request.
    pub fn disarm(&mut self) {
        if self.slot != u32::MAX {
            lock(&self.set.shards[self.shard as usize]).slots[self.slot as usize].waker = None;
        }
    }
}

impl Drop for IdleTimer {
    fn drop(&mut self) {
        if self.slot == u32::MAX {
            return;
        }
        let mut shard = lock(&self.set.shards[self.shard as usize]);
        shard.slots[self.slot as usize].waker = None;
        shard.free.push(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::pin::Pin;

    fn wait(t: &mut IdleTimer, last_ms: u64, limit: Duration) -> impl Future<Output = ()> + '_ {
        poll_fn(move |cx| t.poll(last_ms, limit, cx))
    }

    #[tokio::test]
    async fn a_deadline_wakes_its_connection_when_due() {
        let set = Arc::new(IdleSet::default());
        let mut a = IdleTimer::new(set.clone());
        let mut b = IdleTimer::new(set.clone());
        let start = now_ms();
        // The later deadline is armed first: the sweeper must still wake
        // for the earlier one.
        let mut late = Box::pin(wait(&mut b, start, Duration::from_secs(600)));
        assert!(futures_poll(&mut late).is_pending());
        tokio::time::timeout(
            Duration::from_secs(10),
            wait(&mut a, start, Duration::from_millis(100)),
        )
        .await
        .expect("the 100 ms deadline woke its waiter");
        assert!(now_ms() >= start + 100);
        assert!(futures_poll(&mut late).is_pending(), "the other is not due");
    }

    #[tokio::test]
    async fn wake_all_wakes_every_waiting_connection() {
        let set = Arc::new(IdleSet::default());
        let mut timers: Vec<_> = (0..3).map(|_| IdleTimer::new(set.clone())).collect();
        let now = now_ms();
        let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for mut t in timers.drain(..) {
            let woken = woken.clone();
            let (armed_tx, armed_rx) = tokio::sync::oneshot::channel();
            tasks.push(tokio::spawn(async move {
                let mut armed = Some(armed_tx);
                // Pending until woken once: the wake is what is tested.
                poll_fn(|cx| {
                    if armed.is_none() {
                        return Poll::Ready(());
                    }
                    let p = t.poll(now, Duration::from_secs(600), cx);
                    assert!(p.is_pending());
                    let _ = armed.take().map(|a| a.send(()));
                    Poll::Pending
                })
                .await;
                woken.fetch_add(1, Ordering::SeqCst);
            }));
            armed_rx.await.unwrap();
        }
        set.wake_all();
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("woken")
                .unwrap();
        }
        assert_eq!(woken.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn slots_are_reused_after_their_connection_ends() {
        let set = Arc::new(IdleSet::default());
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _rt = rt.enter();
        for _ in 0..100 {
            let mut t = IdleTimer::new(set.clone());
            assert!(t
                .poll(now_ms(), Duration::from_secs(60), &mut cx)
                .is_pending());
        }
        let slots: usize = set.shards.iter().map(|s| lock(s).slots.len()).sum();
        assert_eq!(slots, 1, "one slot, taken and given back a hundred times");
        // A deadline already past is ready without arming.
        let mut t = IdleTimer::new(set.clone());
        assert!(t.poll(0, Duration::from_millis(0), &mut cx).is_ready());
    }

    #[tokio::test]
    async fn a_disarmed_wait_is_not_woken() {
        let set = Arc::new(IdleSet::default());
        let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let waker = Waker::from(Arc::new(Counter(woken.clone())));
        let mut cx = Context::from_waker(&waker);
        let (mut kept, mut done) = (IdleTimer::new(set.clone()), IdleTimer::new(set.clone()));
        let limit = Duration::from_secs(60);
        assert!(kept.poll(now_ms(), limit, &mut cx).is_pending());
        assert!(done.poll(now_ms(), limit, &mut cx).is_pending());
        done.disarm();
        // Every deadline due: only the wait still armed is woken.
        assert_eq!(set.sweep(u64::MAX - 1), NONE);
        assert_eq!(woken.load(Ordering::SeqCst), 1);
    }

    struct Counter(Arc<std::sync::atomic::AtomicUsize>);
    impl std::task::Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn futures_poll<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(f).poll(&mut cx)
    }
}
