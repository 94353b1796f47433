//! Memory freed after a burst goes back to the system.
//!
//! glibc's malloc gives a heap's pages back only from its top. After a
//! burst (10,240 HTTP/2 streams held on a slow upstream at once: 13.6 KB
//! each) a few long-lived allocations are scattered through the worker
//! threads' heaps, and the freed space between them stays resident: 130 MB
//! of RSS for 1 MB in use, for as long as the process runs. No glibc
//! setting helped (`MALLOC_ARENA_MAX`, `MALLOC_TRIM_THRESHOLD_`); only
//! `malloc_trim(0)`, which also releases free pages inside a heap, brought
//! it back to 10 MB. So a thread of its own looks every few seconds and
//! trims when much more is held free than is in use: once after a burst,
//! not while it goes on, and never under steady load, where little is
//! free.

use std::time::Duration;

/// Free bytes held before a trim is worth its page faults later.
const WORTH: usize = 32 << 20;
/// And how many times what is in use: while a burst is still going on,
/// free and in use are alike (71 and 69 MB), and a trim then (24 ms) only
/// gives back pages the burst's tail takes again; after it, 135 MB is
/// free for 0.6 MB in use.
const FREE_PER_USED: usize = 4;
const EVERY: Duration = Duration::from_secs(10);

/// Start the process's trimming thread, once, however many servers start.
pub fn start() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("heap-trim".into())
            .spawn(|| loop {
                std::thread::sleep(EVERY);
                trim_if_worth(WORTH);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the heap trimming thread");
        }
    });
}

/// Trim when more than `worth` bytes are resident but not in use, and
/// `FREE_PER_USED` times what is in use is held free. The bytes held free
/// when it trimmed, if it did.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim_if_worth(worth: usize) -> Option<usize> {
    // SAFETY: mallinfo2 and malloc_trim only read and lock glibc's own
    // arenas; they take no pointer from us.
    let before = unsafe { libc::mallinfo2() };
    if before.fordblks <= FREE_PER_USED * before.uordblks {
        return None;
    }
    // A trim leaves the free chunks counted as free, only without their
    // pages: what is resident tells whether there is anything to give back.
    let resident = rss_bytes() as usize;
    if resident.saturating_sub(before.uordblks) <= worth {
        return None;
    }
    let started = std::time::Instant::now();
    unsafe { libc::malloc_trim(0) };
    let rss = rss_bytes();
    tracing::debug!(
        free = before.fordblks,
        in_use = before.uordblks,
        rss,
        took_us = started.elapsed().as_micros() as u64,
        "heap trimmed"
    );
    Some(before.fordblks)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim_if_worth(_worth: usize) -> Option<usize> {
    None
}

/// The process's resident set, from /proc (0 where it cannot be read).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn memory_freed_between_survivors_goes_back_after_a_trim() {
        // 128 MiB in 512-byte pieces, one in a thousand kept: what a burst
        // of streams leaves, free space that malloc alone keeps resident.
        let pieces: Vec<Box<[u8; 512]>> = (0..256 << 10).map(|_| Box::new([1u8; 512])).collect();
        let survivors: Vec<_> = pieces.into_iter().step_by(1000).collect();
        let before = rss_bytes();
        let freed = trim_if_worth(WORTH).expect("128 MiB freed is worth a trim");
        let after = rss_bytes();
        assert!(freed > 64 << 20, "only {freed} bytes were free");
        assert!(
            after + (64 << 20) < before,
            "RSS went from {before} to {after} only"
        );
        assert!(survivors.iter().all(|p| p[511] == 1));
    }
}
