//! Small files served from memory.
//!
//! A static file costs an `openat2`, a `statx`, `sendfile` and `close`
//! besides the request's own read and write. For a small file asked for
//! again and again (a site's CSS, JS, icons) each worker keeps the bytes,
//! and a request costs one `lstat` of the path: the bytes are served only
//! while the path still names the same inode in the same state (device,
//! inode, length, modification and change times, mode), so an edit, a
//! replacement, a `chmod` or a removal is seen at once, as without the
//! cache.
//!
//! The bytes only ever come from a file opened by the one-call open that
//! refuses symlinks (`open.rs`), so they are known to lie under the root;
//! a path that later leads elsewhere names another inode, misses, and goes
//! through that open again.
//!
//! A file changed within the last `SETTLED` is not kept: a write in the
//! same clock tick as the read would leave the times as they were, and
//! half-written bytes could otherwise stay in memory (git's "racy clean"
//! problem, solved the same way).

use super::resident;
use bytes::{Bytes, BytesMut};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Larger files go out by `sendfile` from the page cache.
pub const MAX_LEN: u64 = 32 * 1024;
/// Per worker: at most this many files, so at most `FILES * MAX_LEN`
/// (4 MiB) of bytes.
const FILES: usize = 128;
/// For the whole process, shared out among the workers, so that a server
/// with many threads does not keep many copies of a large share.
const TOTAL: usize = 8 << 20;
const SETTLED: Duration = Duration::from_secs(2);
/// When the store is full, a file unused this long gives way to a new one;
/// a working set larger than the store keeps what it has rather than
/// evicting on every request.
const COLD_MS: u64 = 10_000;
/// A file unused this long is let go even when there is room, so that a
/// file deleted from the site does not stay open (its disk space held, its
/// file system busy) for long. Looked for at most once per `SWEEP_MS`, on
/// a request.
const IDLE_MS: u64 = 60_000;
const SWEEP_MS: u64 = 5_000;

struct Kept {
    state: State,
    bytes: Bytes,
    /// The file the bytes were read from, kept open: plain-TCP connections
    /// send it by sendfile, which copies nothing into the socket.
    file: Arc<File>,
    /// `now_ms` of its last use.
    used_ms: u64,
}

/// What must not have changed for the kept bytes to be the file's.
#[derive(PartialEq, Eq, Clone, Copy)]
struct State {
    version: u64,
    ctime: (i64, i64),
    mode: u32,
}

impl State {
    fn of(meta: &Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        State {
            version: resident::version(meta),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            mode: meta.mode(),
        }
    }
}

/// One worker's files, by the bytes of their path.
#[derive(Default)]
struct Store {
    files: HashMap<Box<[u8]>, Kept>,
    /// Bytes kept in `files`.
    bytes: usize,
    /// `now_ms` of the last look for idle files.
    swept_ms: u64,
}

impl Store {
    fn sweep(&mut self, now_ms: u64) {
        if now_ms.saturating_sub(self.swept_ms) < SWEEP_MS {
            return;
        }
        self.swept_ms = now_ms;
        let before = self.files.len();
        self.files
            .retain(|_, k| now_ms.saturating_sub(k.used_ms) < IDLE_MS);
        if self.files.len() != before {
            self.bytes = self.files.values().map(|k| k.bytes.len()).sum();
        }
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(k) = self.files.remove(key) {
            self.bytes -= k.bytes.len();
        }
    }

    /// Room for one more file of `len` bytes within `budget`, made by
    /// evicting cold files only.
    fn room(&mut self, len: usize, budget: usize, now_ms: u64) -> bool {
        while self.files.len() >= FILES || self.bytes + len > budget {
            let coldest = self
                .files
                .iter()
                .min_by_key(|(_, k)| k.used_ms)
                .filter(|(_, k)| now_ms.saturating_sub(k.used_ms) >= COLD_MS)
                .map(|(key, _)| key.clone());
            match coldest {
                Some(key) => self.remove(&key),
                None => return false,
            }
        }
        true
    }
}

thread_local! {
    static KEPT: RefCell<Store> = RefCell::default();
}

/// What one worker may keep when `workers` run.
fn budget(workers: usize) -> usize {
    (TOTAL / workers.max(1)).min(FILES * MAX_LEN as usize)
}

fn key(path: &Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes()
}

/// The kept bytes of the file at `path`, the file itself and its metadata,
/// if this worker keeps them and the file has not changed. No system call
/// when it keeps nothing for this path.
pub fn get(path: &Path) -> Option<(Bytes, Arc<File>, Metadata)> {
    get_at(path, crate::upstream::now_ms())
}

fn get_at(path: &Path, now_ms: u64) -> Option<(Bytes, Arc<File>, Metadata)> {
    KEPT.with_borrow_mut(|k| {
        k.sweep(now_ms);
        let e = k.files.get_mut(key(path))?;
        // Not following a final symlink: the kept bytes came from a
        // regular file reached without one.
        let meta = std::fs::symlink_metadata(path).ok();
        match meta {
            // The state compares a hash of the length among others; ranges
            // are cut from these bytes by the metadata's length: make sure.
            Some(m) if State::of(&m) == e.state && e.bytes.len() as u64 == m.len() => {
                e.used_ms = now_ms;
                Some((e.bytes.clone(), e.file.clone(), m))
            }
            _ => {
                k.remove(key(path));
                None
            }
        }
    })
}

/// Keep the bytes of `file`, just opened at `path` with no symlink on the
/// way, when it is small, settled and all in the page cache (the read must
/// not wait for the disk on a worker's thread). Returns them when kept,
/// with the file, now shared with the store.
pub fn keep(path: &Path, file: &File, meta: &Metadata) -> Option<(Bytes, Arc<File>)> {
    let budget = budget(crate::workers::count());
    keep_at(path, file, meta, now(), crate::upstream::now_ms(), budget)
}

fn keep_at(
    path: &Path,
    file: &File,
    meta: &Metadata,
    now: SystemTime,
    now_ms: u64,
    budget: usize,
) -> Option<(Bytes, Arc<File>)> {
    use std::os::unix::fs::MetadataExt;
    let len = meta.len();
    if !meta.is_file() || len == 0 || len > MAX_LEN {
        return None;
    }
    let ctime = Duration::new(
        u64::try_from(meta.ctime()).ok()?,
        u32::try_from(meta.ctime_nsec()).ok()?,
    );
    let changed = meta.modified().ok()?.max(SystemTime::UNIX_EPOCH + ctime);
    if changed > now.checked_sub(SETTLED)? {
        return None;
    }
    KEPT.with_borrow_mut(|k| {
        // An older version of this file makes way for the new one.
        k.remove(key(path));
        if !k.room(len as usize, budget, now_ms) {
            return None;
        }
        let mut buf = BytesMut::with_capacity(len as usize);
        // A file that shrank since its stat fails the read: not kept.
        if !super::read::read_cached(file, 0, &mut buf, len as usize).ok()? {
            return None;
        }
        let bytes = buf.freeze();
        // A descriptor of its own (once per file kept): the request's
        // goes with its response.
        let file = Arc::new(file.try_clone().ok()?);
        k.bytes += bytes.len();
        let kept = Kept {
            state: State::of(meta),
            bytes: bytes.clone(),
            file: file.clone(),
            used_ms: now_ms,
        };
        k.files.insert(key(path).into(), kept);
        Some((bytes, file))
    })
}

#[cfg(not(test))]
fn now() -> SystemTime {
    SystemTime::now()
}

#[cfg(test)]
thread_local! {
    /// Tests cannot make a file's change time old: they move this thread's
    /// clock ahead instead.
    static AHEAD: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
}

#[cfg(test)]
fn now() -> SystemTime {
    SystemTime::now() + AHEAD.get()
}

/// As if every file on disk had been written long ago (this thread only).
#[cfg(test)]
pub fn settle_all() {
    AHEAD.set(Duration::from_secs(3600));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn file(dir: &Path, name: &str, body: &[u8]) -> (PathBuf, File, Metadata) {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        let f = File::open(&p).unwrap();
        let m = f.metadata().unwrap();
        (p, f, m)
    }

    const ALL: usize = usize::MAX;

    fn later() -> SystemTime {
        SystemTime::now() + Duration::from_secs(60)
    }

    /// Keep as if the file were settled, at `now_ms`, within `budget`.
    fn keep_settled(p: &Path, f: &File, m: &Metadata, now_ms: u64, budget: usize) -> bool {
        keep_at(p, f, m, later(), now_ms, budget).is_some()
    }

    #[test]
    fn a_settled_small_file_is_kept_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (p, f, m) = file(dir.path(), "a.css", b"body { }");
        assert!(keep_settled(&p, &f, &m, 1, ALL));
        let (bytes, _, meta) = get(&p).unwrap();
        assert_eq!((&bytes[..], meta.len()), (&b"body { }"[..], 8));

        std::fs::write(&p, b"body { color: red }").unwrap();
        assert!(get(&p).is_none(), "an edit is seen at once");
        let (_, f, m) = file(dir.path(), "a.css", b"body { }");
        assert!(keep_settled(&p, &f, &m, 1, ALL));
        std::fs::remove_file(&p).unwrap();
        assert!(get(&p).is_none(), "so is a removal");
    }

    #[test]
    fn a_chmod_or_a_replacement_of_the_same_size_is_seen() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (p, f, m) = file(dir.path(), "a.js", b"one");
        assert!(keep_settled(&p, &f, &m, 1, ALL));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
        assert!(get(&p).is_none(), "made unreadable");

        let (p, f, m) = file(dir.path(), "b.js", b"two");
        assert!(keep_settled(&p, &f, &m, 1, ALL));
        let (q, _, _) = file(dir.path(), "b.js.new", b"TWO");
        std::fs::rename(&q, &p).unwrap();
        assert!(get(&p).is_none(), "another inode under the same name");
    }

    #[test]
    fn fresh_large_and_non_regular_files_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (p, f, m) = file(dir.path(), "new.js", b"let a;");
        assert!(keep_at(&p, &f, &m, SystemTime::now(), 1, ALL).is_none());
        assert!(get(&p).is_none());
        let big = vec![7; MAX_LEN as usize + 1];
        let (p, f, m) = file(dir.path(), "big", &big);
        assert!(!keep_settled(&p, &f, &m, 1, ALL));
        let d = File::open(dir.path()).unwrap();
        let dm = d.metadata().unwrap();
        assert!(!keep_settled(dir.path(), &d, &dm, 1, ALL));
    }

    #[test]
    fn a_full_store_of_names_alike_keeps_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<_> = (0..FILES)
            .map(|i| {
                let (p, f, m) = file(dir.path(), &format!("app{i}.js"), b"x");
                assert!(keep_settled(&p, &f, &m, 1, ALL), "{i}");
                p
            })
            .collect();
        assert!(names.iter().all(|p| get_at(p, 2).is_some()));
        // Full, and every file in use: the next one is not kept.
        let (p, f, m) = file(dir.path(), "one-more.js", b"y");
        assert!(!keep_settled(&p, &f, &m, 3, ALL));
        // Once one has gone unused for COLD_MS, it makes way.
        for p in &names[1..] {
            get_at(p, 2 + COLD_MS).unwrap();
        }
        assert!(keep_settled(&p, &f, &m, 2 + COLD_MS, ALL));
        assert!(
            get_at(&names[0], 2 + COLD_MS).is_none(),
            "the cold one left"
        );
        assert!(get_at(&names[1], 2 + COLD_MS).is_some());
    }

    #[test]
    fn a_file_unused_for_a_minute_is_let_go_and_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (p, f, m) = file(dir.path(), "old.css", b"a { }");
        let (q, qf, qm) = file(dir.path(), "new.css", b"b { }");
        drop((f, qf));
        let t0 = 1_000_000;
        let f = File::open(&p).unwrap();
        assert!(keep_settled(&p, &f, &m, t0, ALL));
        drop(f);
        let qf = File::open(&q).unwrap();
        assert!(keep_settled(&q, &qf, &qm, t0, ALL));
        drop(qf);
        assert!(get_at(&p, t0 + IDLE_MS - 1).is_some(), "in use: kept");
        // A request for another file, a minute after the first was last
        // used: the first is let go, and its descriptor closed.
        assert!(get_at(&q, t0 + IDLE_MS + SWEEP_MS).is_none());
        assert!(get_at(&p, t0 + IDLE_MS + SWEEP_MS).is_some(), "used since");
        let fds = |path: &Path| {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l == path)
                .count()
        };
        assert_eq!(fds(&q), 0, "the idle file is closed");
        assert_eq!(fds(&p), 1, "the one in use keeps its one descriptor");
    }

    #[test]
    fn what_is_kept_stays_within_the_budget() {
        assert_eq!(
            budget(1),
            4 << 20,
            "one worker: the file count is the bound"
        );
        assert_eq!(budget(2), 4 << 20);
        assert_eq!(budget(64), 128 << 10, "many workers share 8 MiB");
        let dir = tempfile::tempdir().unwrap();
        let (p, f, m) = file(dir.path(), "a", &[1; 600]);
        assert!(keep_settled(&p, &f, &m, 1, 1000));
        let (q, qf, qm) = file(dir.path(), "b", &[2; 600]);
        assert!(!keep_settled(&q, &qf, &qm, 2, 1000), "over budget");
        assert!(get(&q).is_none());
        assert!(get(&p).is_some(), "what was kept stays");
        // Freed on a change: room again.
        std::fs::write(&p, b"changed").unwrap();
        assert!(get(&p).is_none());
        assert!(keep_settled(&q, &qf, &qm, 3, 1000));
    }
}
