//! The file watcher. It watches directories, not files: editors replace a
//! file by renaming a new one over it (vim, `sed -i`, config management),
//! and Kubernetes swaps a `..data` symlink to a new directory, so a watch on
//! the file's inode would go deaf after the first change. Events are
//! filtered by name (the watched file, a symlink on its way, or a directory
//! above it), debounced, and a reload happens only when the content of a
//! watched file differs from what was last seen.

use super::ReloadOutcome;
use crate::server::Server;
use crate::state::Snapshot;
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Quiet time after the last relevant event before reloading: long enough
/// for an editor's write-rename-chmod sequence to finish.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// A directory that never stops changing still gets a reload this often.
const MAX_DELAY: Duration = Duration::from_secs(2);
/// Symlink hops followed from a watched name (the kernel's own limit is 40).
const MAX_HOPS: usize = 40;

/// Stops the watcher when dropped.
pub struct WatchHandle {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start watching the server's config file and the files it names. Runs for
/// the server's life; while the live config says `server.watch = false`
/// nothing is watched (SIGHUP still reloads), and a reload that turns it on
/// starts the watches. Watches are in place when this returns, so a change
/// made right after is seen. Must run inside a tokio runtime.
pub fn watch(server: Arc<Server>) -> notify::Result<WatchHandle> {
    let (tx, rx) = mpsc::channel(1024);
    let overflow = Arc::new(AtomicBool::new(false));
    let flag = overflow.clone();
    let watcher = notify::recommended_watcher(move |ev: notify::Result<Event>| {
        // A full queue (a storm of writes in a watched directory) must not
        // lose the one event that matters: remember it and check anyway.
        if tx.try_send(ev).is_err() {
            flag.store(true, Ordering::Relaxed);
        }
    })?;
    let mut w = DirWatcher {
        watcher,
        dirs: BTreeSet::new(),
        names: Vec::new(),
        files: Vec::new(),
        retry: false,
    };
    // Subscribe before syncing: a reload from here on is seen by the task.
    let outcomes = server.subscribe_reloads();
    w.sync(&server);
    let seen = fingerprint(&w.files);
    let task = tokio::spawn(run(server, w, rx, outcomes, overflow, seen));
    Ok(WatchHandle { task })
}

struct DirWatcher {
    watcher: RecommendedWatcher,
    dirs: BTreeSet<PathBuf>,
    /// Paths whose events concern a watched file (see `WatchSet`).
    names: Vec<PathBuf>,
    /// The files whose content decides whether to reload.
    files: Vec<PathBuf>,
    /// The last reload failed. A failed config may name a file that is not
    /// there yet (a certificate named before it was copied), and its names
    /// are unknown since it did not compile: while this is set, a file or
    /// directory appearing in a watched directory retries the reload.
    retry: bool,
}

impl DirWatcher {
    /// Watch what the live config names, and nothing else.
    fn sync(&mut self, server: &Server) {
        let snap = server.state().load();
        let set = match server.config_path() {
            Some(p) if snap.server.watch => WatchSet::of(&watched_files(p, &snap)),
            _ => WatchSet::default(),
        };
        for gone in self.dirs.difference(&set.dirs) {
            let _ = self.watcher.unwatch(gone);
        }
        // Always (re-)add: a directory reached through a swapped symlink may
        // be a new inode under the same name; inotify updates an existing
        // watch in place.
        let mut dirs = BTreeSet::new();
        for d in &set.dirs {
            match self.watcher.watch(d, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    dirs.insert(d.clone());
                }
                Err(e) => tracing::warn!(dir = %d.display(), error = %e, "cannot watch directory"),
            }
        }
        self.dirs = dirs;
        self.names = set.names;
        self.files = set.files;
    }

    fn relevant(&self, ev: &Event) -> Trigger {
        if ev.need_rescan()
            || (changes(&ev.kind) && ev.paths.iter().any(|p| concerns(&self.names, p)))
        {
            Trigger::Content
        } else if self.retry && appears(&ev.kind) {
            Trigger::Appeared
        } else {
            Trigger::None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    None,
    /// A watched file may have changed: reload if its content did.
    Content,
    /// Something appeared while the config is broken: retry in any case.
    Appeared,
}

async fn run(
    server: Arc<Server>,
    mut w: DirWatcher,
    mut rx: mpsc::Receiver<notify::Result<Event>>,
    mut outcomes: tokio::sync::watch::Receiver<ReloadOutcome>,
    overflow: Arc<AtomicBool>,
    mut seen: u64,
) {
    loop {
        let mut force = tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { return };
                match is_relevant(&w, &ev, &overflow) {
                    Trigger::None => continue,
                    t => t == Trigger::Appeared,
                }
            }
            // A reload by SIGHUP may name other files, or turn watching on.
            r = outcomes.changed() => {
                if r.is_err() {
                    return;
                }
                w.retry = last_failed(&outcomes);
                resync(&mut w, &server, &mut seen);
                continue;
            }
        };
        // Debounce: wait for DEBOUNCE without a relevant event, at most MAX_DELAY.
        let first = Instant::now();
        let mut quiet_at = first + DEBOUNCE;
        loop {
            tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else { return };
                    let t = is_relevant(&w, &ev, &overflow);
                    if t != Trigger::None {
                        force |= t == Trigger::Appeared;
                        quiet_at = (Instant::now() + DEBOUNCE).min(first + MAX_DELAY);
                    }
                }
                _ = tokio::time::sleep_until(quiet_at) => break,
            }
        }
        let now = fingerprint(&w.files);
        if now != seen || force {
            seen = now;
            let _ = server.reload_by("file change").await;
            // The outcome re-syncs below; mark it seen so the select above
            // does not do it twice.
            outcomes.borrow_and_update();
            w.retry = last_failed(&outcomes);
        }
        // Re-sync even without a reload: a symlink swap moves the directory
        // that holds the real file.
        resync(&mut w, &server, &mut seen);
    }
}

/// Re-sync the watches with the live config. `seen` is kept while the set
/// of files is the same, so a write that raced with a reload still differs
/// from it and is reloaded.
fn resync(w: &mut DirWatcher, server: &Server, seen: &mut u64) {
    let before = std::mem::take(&mut w.files);
    w.sync(server);
    if w.files != before {
        *seen = fingerprint(&w.files);
    }
}

fn last_failed(outcomes: &tokio::sync::watch::Receiver<ReloadOutcome>) -> bool {
    matches!(outcomes.borrow().result, Some(Err(_)))
}

fn is_relevant(w: &DirWatcher, ev: &notify::Result<Event>, overflow: &AtomicBool) -> Trigger {
    if overflow.swap(false, Ordering::Relaxed) {
        return Trigger::Content;
    }
    match ev {
        Ok(ev) => w.relevant(ev),
        // An error (e.g. the kernel's queue overflowed): check the files.
        Err(_) => Trigger::Content,
    }
}

/// The config file itself plus every file the config names.
fn watched_files(config: &Path, snap: &Snapshot) -> Vec<PathBuf> {
    let mut v = vec![config.to_path_buf()];
    v.extend(snap.files.iter().cloned());
    v
}

/// What to watch for a set of files.
#[derive(Debug, Default, PartialEq)]
struct WatchSet {
    /// Directories to watch (canonical: inotify follows symlinks when adding
    /// a watch, and events carry the path as it was added).
    dirs: BTreeSet<PathBuf>,
    /// Every name a watched file goes by: as written, each symlink on the
    /// way to the real file, each with its directory as given and resolved.
    names: Vec<PathBuf>,
    files: Vec<PathBuf>,
}

impl WatchSet {
    fn of(files: &[PathBuf]) -> Self {
        let mut set = WatchSet::default();
        for f in files {
            let mut cur = std::path::absolute(f).unwrap_or_else(|_| f.clone());
            set.files.push(cur.clone());
            for _ in 0..MAX_HOPS {
                set.names.push(cur.clone());
                if let (Some(dir), Some(name)) = (cur.parent(), cur.file_name()) {
                    // A directory not there (yet) is not watched; the
                    // compile reports the missing file.
                    if let Ok(real) = dir.canonicalize() {
                        set.names.push(real.join(name));
                        set.dirs.insert(real);
                    }
                }
                match std::fs::read_link(&cur) {
                    Ok(target) => {
                        cur = match cur.parent() {
                            Some(dir) if target.is_relative() => dir.join(target),
                            _ => target,
                        };
                    }
                    Err(_) => break,
                }
            }
        }
        set.names.sort();
        set.names.dedup();
        set
    }
}

/// Can an event of this kind change a file? Opening, reading and closing
/// after reading cannot (and our own compile does exactly that).
fn changes(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Did a file or directory appear (created, or renamed into place)? Not a
/// write to an existing file: an access log beside the config must not
/// retry a broken config on every line.
fn appears(kind: &EventKind) -> bool {
    use notify::event::{ModifyKind, RenameMode};
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
    )
}

/// Does an event on `path` concern a watched file? It does when it is one of
/// the file's names, or a directory (or directory symlink, like Kubernetes'
/// `..data`) that one of the names goes through.
fn concerns(names: &[PathBuf], path: &Path) -> bool {
    names.iter().any(|n| n.starts_with(path))
}

/// A hash of the watched files' contents (a missing file counts as such).
fn fingerprint(files: &[PathBuf]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        match std::fs::read(f) {
            Ok(bytes) => bytes.hash(&mut h),
            Err(e) => e.kind().hash(&mut h),
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests;
