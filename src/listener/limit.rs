//! `max_connections`: a permit per connection for its whole life; when
//! none is left, new connections wait in the kernel's backlog.
//!
//! A reload may lower the limit below what is open. tokio's semaphore can
//! forget only the permits it holds, so the rest are owed: each is
//! forgotten when a connection ends, until the limit is what the config
//! says. Given back instead, every connection that ended would have made
//! room for a new one, and the lower limit would never have applied.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct ConnLimit {
    sem: Arc<Semaphore>,
    /// Permits held by open connections beyond the limit: forgotten as
    /// they come back.
    owed: AtomicUsize,
}

/// A connection's place under the limit.
pub struct ConnPermit {
    permit: Option<OwnedSemaphorePermit>,
    limit: Arc<ConnLimit>,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let Some(p) = self.permit.take() else {
            return;
        };
        // One load when nothing is owed, which is always but after a reload
        // that lowered the limit.
        let owed = self
            .limit
            .owed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if owed.is_ok() {
            p.forget();
        }
    }
}

impl ConnLimit {
    pub fn new(max: usize) -> Arc<ConnLimit> {
        Arc::new(ConnLimit {
            sem: Arc::new(Semaphore::new(max)),
            owed: AtomicUsize::new(0),
        })
    }

    /// Wait for a place; `None` only if the semaphore were closed, which it
    /// never is.
    pub async fn acquire(self: &Arc<Self>) -> Option<ConnPermit> {
        let p = self.sem.clone().acquire_owned().await.ok()?;
        Some(ConnPermit {
            permit: Some(p),
            limit: self.clone(),
        })
    }

    /// The config's limit went from `old` to `new`.
    pub fn resize(&self, old: usize, new: usize) {
        if new > old {
            // What is still owed is cancelled first: those permits are out
            // already, and will now come back.
            let mut add = new - old;
            let before = self
                .owed
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    Some(n - n.min(add))
                })
                .unwrap_or(0);
            add -= before.min(add);
            self.sem.add_permits(add);
        } else if new < old {
            let want = old - new;
            let forgotten = self.sem.forget_permits(want);
            // A connection that ends between these two lines gives its
            // permit back (one more accepted, once); the next to end pays.
            self.owed.fetch_add(want - forgotten, Ordering::AcqRel);
        }
    }

    /// Permits taken now under a limit of `max`: the open connections and
    /// the accept loops' waiting places.
    pub fn taken(&self, max: usize) -> usize {
        (max + self.owed.load(Ordering::Acquire)).saturating_sub(self.sem.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lowered_limit_applies_as_connections_end() {
        let limit = ConnLimit::new(4);
        let mut open = Vec::new();
        for _ in 0..4 {
            open.push(limit.acquire().await.unwrap());
        }
        assert_eq!(limit.taken(4), 4);
        limit.resize(4, 2);
        assert_eq!(limit.taken(2), 4, "four still open under a limit of two");
        // Two end: their places are not given to new connections.
        open.pop();
        open.pop();
        assert_eq!(limit.taken(2), 2);
        assert_eq!(limit.sem.available_permits(), 0);
        // One more ends: one place, and only one.
        open.pop();
        assert_eq!(limit.taken(2), 1);
        let again = limit.acquire().await.unwrap();
        assert_eq!(limit.sem.available_permits(), 0);
        drop(again);
        drop(open);
        assert_eq!(limit.taken(2), 0);
        assert_eq!(limit.sem.available_permits(), 2);
    }

    #[tokio::test]
    async fn raised_again_before_the_debt_is_paid_it_is_cancelled_first() {
        let limit = ConnLimit::new(3);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(limit.acquire().await.unwrap());
        }
        limit.resize(3, 1);
        // Owed two; raised to 4: the two are cancelled and one added.
        limit.resize(1, 4);
        assert_eq!(limit.sem.available_permits(), 1);
        assert_eq!(limit.taken(4), 3);
        drop(held);
        assert_eq!(limit.sem.available_permits(), 4);
        assert_eq!(limit.taken(4), 0);
        // Lowered with places free: forgotten at once, nothing owed.
        limit.resize(4, 2);
        assert_eq!(limit.sem.available_permits(), 2);
        assert_eq!(limit.owed.load(Ordering::Relaxed), 0);
    }
}
