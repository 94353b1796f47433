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
use std::fs::{File, Metadata};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Larger files go out by `sendfile` from the page cache.
pub const MAX_LEN: u64 = 32 * 1024;
/// Per worker: at most `SLOTS * MAX_LEN` (4 MiB) of file bytes.
const SLOTS: usize = 128;
/// For the whole process, shared out among the workers, so that a server
/// with many threads does not keep many copies of a large share.
const TOTAL: usize = 8 << 20;
const SETTLED: Duration = Duration::from_secs(2);

struct Kept {
    path: PathBuf,
    state: State,
    bytes: Bytes,
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

struct Store {
    slots: Vec<Option<Kept>>,
    /// Bytes kept in `slots`.
    bytes: usize,
}

impl Store {
    fn put(&mut self, i: usize, kept: Option<Kept>) {
        let len = |k: &Option<Kept>| k.as_ref().map_or(0, |k| k.bytes.len());
        self.bytes = self.bytes - len(&self.slots[i]) + len(&kept);
        self.slots[i] = kept;
    }
}

thread_local! {
    static KEPT: RefCell<Store> = RefCell::new(Store {
        slots: (0..SLOTS).map(|_| None).collect(),
        bytes: 0,
    });
}

/// What one worker may keep when `workers` run.
fn budget(workers: usize) -> usize {
    (TOTAL / workers.max(1)).min(SLOTS * MAX_LEN as usize)
}

fn slot(path: &Path) -> usize {
    use std::os::unix::ffi::OsStrExt;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.as_os_str().as_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's last byte barely reaches the high bits: names that differ only
    // at the end (`a.js`, `b.js`) would share a slot without this mixing
    // (murmur3's finaliser).
    h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    h = (h ^ (h >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    (h ^ (h >> 33)) as usize % SLOTS
}

/// The kept bytes of the file at `path`, with its metadata, if this worker
/// keeps them and the file has not changed. No system call when it keeps
/// nothing for this path.
pub fn get(path: &Path) -> Option<(Bytes, Metadata)> {
    let i = slot(path);
    let state = KEPT.with_borrow(|k| {
        k.slots[i]
            .as_ref()
            .filter(|e| e.path.as_path() == path)
            .map(|e| e.state)
    })?;
    // Not following a final symlink: the kept bytes came from a regular
    // file reached without one.
    let meta = std::fs::symlink_metadata(path).ok()?;
    if State::of(&meta) != state {
        KEPT.with_borrow_mut(|k| k.put(i, None));
        return None;
    }
    let bytes = KEPT.with_borrow(|k| k.slots[i].as_ref().map(|e| e.bytes.clone()))?;
    // The state compares a hash of the length among others; ranges are
    // cut from these bytes by the metadata's length, so make sure.
    (bytes.len() as u64 == meta.len()).then_some((bytes, meta))
}

/// Keep the bytes of `file`, just opened at `path` with no symlink on the
/// way, when it is small, settled and all in the page cache (the read must
/// not wait for the disk on a worker's thread). Returns them when kept.
pub fn keep(path: &Path, file: &File, meta: &Metadata) -> Option<Bytes> {
    keep_at(path, file, meta, now(), budget(crate::workers::count()))
}

fn keep_at(
    path: &Path,
    file: &File,
    meta: &Metadata,
    now: SystemTime,
    budget: usize,
) -> Option<Bytes> {
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
    let i = slot(path);
    // Full: the file is served from disk, and what is kept stays.
    let room = KEPT.with_borrow(|k| {
        let freed = k.slots[i].as_ref().map_or(0, |e| e.bytes.len());
        k.bytes - freed + len as usize <= budget
    });
    if !room {
        return None;
    }
    let mut buf = BytesMut::with_capacity(len as usize);
    // A file that shrank since its stat fails the read: not kept.
    if !super::body::read_cached(file, 0, &mut buf, len as usize).ok()? {
        return None;
    }
    let bytes = buf.freeze();
    let kept = Kept {
        path: path.to_path_buf(),
        state: State::of(meta),
        bytes: bytes.clone(),
    };
    KEPT.with_borrow_mut(|k| k.put(i, Some(kept)));
    Some(bytes)
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

    #[test]
    fn a_settled_small_file_is_kept_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (p, f, m) = file(dir.path(), "a.css", b"body { }");
        assert_eq!(keep_at(&p, &f, &m, later(), ALL).unwrap(), "body { }");
        let (bytes, meta) = get(&p).unwrap();
        assert_eq!((&bytes[..], meta.len()), (&b"body { }"[..], 8));

        std::fs::write(&p, b"body { color: red }").unwrap();
        assert!(get(&p).is_none(), "an edit is seen at once");
        let (_, f, m) = file(dir.path(), "a.css", b"body { }");
        keep_at(&p, &f, &m, later(), ALL).unwrap();
        std::fs::remove_file(&p).unwrap();
        assert!(get(&p).is_none(), "so is a removal");
    }

    #[test]
    fn a_chmod_or_a_replacement_of_the_same_size_is_seen() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (p, f, m) = file(dir.path(), "a.js", b"one");
        keep_at(&p, &f, &m, later(), ALL).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
        assert!(get(&p).is_none(), "made unreadable");

        let (p, f, m) = file(dir.path(), "b.js", b"two");
        keep_at(&p, &f, &m, later(), ALL).unwrap();
        let (q, _, _) = file(dir.path(), "b.js.new", b"TWO");
        std::fs::rename(&q, &p).unwrap();
        assert!(get(&p).is_none(), "another inode under the same name");
    }

    #[test]
    fn fresh_large_and_non_regular_files_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (p, f, m) = file(dir.path(), "new.js", b"let a;");
        assert!(
            keep_at(&p, &f, &m, SystemTime::now(), ALL).is_none(),
            "fresh"
        );
        assert!(get(&p).is_none());
        let big = vec![7; MAX_LEN as usize + 1];
        let (p, f, m) = file(dir.path(), "big", &big);
        assert!(keep_at(&p, &f, &m, later(), ALL).is_none());
        let d = File::open(dir.path()).unwrap();
        let dm = d.metadata().unwrap();
        assert!(keep_at(dir.path(), &d, &dm, later(), ALL).is_none());
    }

    #[test]
    fn names_that_differ_at_the_end_spread_over_the_slots() {
        let used: std::collections::HashSet<usize> = (0..64)
            .map(|i| slot(Path::new(&format!("/srv/static/app{i}.js"))))
            .collect();
        assert!(used.len() > 40, "64 names in {} slots", used.len());
    }

    #[test]
    fn what_is_kept_stays_within_the_budget() {
        assert_eq!(budget(1), 4 << 20, "one worker: the slots are the bound");
        assert_eq!(budget(2), 4 << 20);
        assert_eq!(budget(64), 128 << 10, "many workers share 8 MiB");
        let dir = tempfile::tempdir().unwrap();
        let (p, f, m) = file(dir.path(), "a", &[1; 600]);
        assert!(keep_at(&p, &f, &m, later(), 1000).is_some());
        // In a slot of its own, so only the budget stands in the way.
        let (q, f, m) = file(dir.path(), "b", &[2; 600]);
        assert_ne!(slot(&p), slot(&q));
        assert!(keep_at(&q, &f, &m, later(), 1000).is_none(), "over budget");
        assert!(get(&q).is_none());
        assert!(get(&p).is_some(), "what was kept stays");
        // Freed on a change: room again.
        std::fs::write(&p, b"changed").unwrap();
        assert!(get(&p).is_none());
        assert!(keep_at(&q, &f, &m, later(), 1000).is_some());
    }
}
