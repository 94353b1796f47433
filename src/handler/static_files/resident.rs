//! Which files were wholly in the page cache a moment ago.
//!
//! Before a file goes out by sendfile, the kernel is asked whether all of
//! it is in the page cache (see body.rs), so that sending cannot wait for
//! the disk on a worker's thread. That question is a system call per
//! response; for a file served again and again, each worker asks it at most
//! once a second. A file evicted within that second is sent all the same,
//! and the send then waits for the disk: what nginx does for every file.

use std::cell::RefCell;
use std::fs::Metadata;

const SLOTS: usize = 64;
/// How long an answer of "all cached" is trusted.
const FRESH_MS: u64 = 1000;

/// One version of one file: device, inode, modification time, length.
/// Never 0, which marks an empty slot.
pub fn version(meta: &Metadata) -> u64 {
    #[cfg(unix)]
    let parts = {
        use std::os::unix::fs::MetadataExt;
        [
            meta.dev(),
            meta.ino(),
            meta.mtime() as u64,
            meta.mtime_nsec() as u64,
            meta.len(),
        ]
    };
    #[cfg(not(unix))]
    let parts = {
        let m = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
            .unwrap_or_default();
        [m.as_secs(), u64::from(m.subsec_nanos()), meta.len(), 0, 0]
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        h = (h ^ p).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
    }
    h | 1
}

/// Whether the file `version` is all in the page cache: from this thread's
/// memory of the last second, or else from `check`, whose "yes" is kept.
pub fn all_cached(version: u64, check: impl FnOnce() -> bool) -> bool {
    all_cached_at(version, crate::upstream::now_ms(), check)
}

fn all_cached_at(version: u64, now_ms: u64, check: impl FnOnce() -> bool) -> bool {
    thread_local! {
        /// (version, when it was last found all cached)
        static SEEN: RefCell<[(u64, u64); SLOTS]> = const { RefCell::new([(0, 0); SLOTS]) };
    }
    let i = (version >> 58) as usize % SLOTS;
    let fresh = SEEN.with_borrow(|seen| {
        let (v, at) = seen[i];
        v == version && now_ms.saturating_sub(at) < FRESH_MS
    });
    if fresh {
        return true;
    }
    let cached = check();
    if cached {
        SEEN.with_borrow_mut(|seen| seen[i] = (version, now_ms));
    }
    cached
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_yes_is_trusted_for_a_second_and_a_no_never() {
        let asked = Cell::new(0);
        let yes = || {
            asked.set(asked.get() + 1);
            true
        };
        let v = 0xdead_beef_0000_0001;
        assert!(all_cached_at(v, 10_000, yes));
        assert!(all_cached_at(v, 10_999, yes));
        assert_eq!(asked.get(), 1, "asked again within the second");
        assert!(all_cached_at(v, 11_000, yes));
        assert_eq!(asked.get(), 2, "not asked again after the second");

        let no = || {
            asked.set(asked.get() + 1);
            false
        };
        let w = 0xfeed_0000_0000_0001;
        assert!(!all_cached_at(w, 10_000, no));
        assert!(!all_cached_at(w, 10_001, no));
        assert_eq!(asked.get(), 4, "a no is asked again each time");
    }

    #[test]
    fn another_version_of_the_file_is_asked_about() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"one").unwrap();
        let a = version(&std::fs::metadata(&p).unwrap());
        std::fs::write(&p, b"two!").unwrap();
        let b = version(&std::fs::metadata(&p).unwrap());
        assert_ne!(a, b, "a new length is a new version");
        assert!(all_cached_at(a, 5_000, || true));
        let asked = Cell::new(false);
        all_cached_at(b, 5_001, || {
            asked.set(true);
            true
        });
        assert!(asked.get());
    }
}
