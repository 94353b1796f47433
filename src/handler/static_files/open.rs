//! Finding the file a request names: the path under the root, a
//! directory's index file, a fresh precompressed variant. Every open is
//! checked against the root, so a symlink cannot lead out of it unless the
//! route says `follow_symlinks = true`.
//!
//! These calls run on the request's thread, as nginx runs them on its event
//! loop: for the files a site serves, the directory entries and inodes are
//! in memory and each call takes microseconds, far less than a hand-off to
//! another thread. Reading the data is what can wait on a disk, and that is
//! kept off this thread (see body.rs).

use super::cond::Coding;
use super::path::RelPath;
use super::Site;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct Opened {
    pub content: Content,
    pub meta: Metadata,
    /// The name the content type comes from: the file asked for, its index
    /// file, or the fallback, never the `.br`/`.gz` variant.
    pub type_path: PathBuf,
    pub coding: Option<Coding>,
}

/// Where the bytes come from.
pub enum Content {
    File(File),
    /// A small file kept by this worker (hot.rs): its bytes, and the file
    /// still open, for connections that send files themselves.
    Kept(bytes::Bytes, std::sync::Arc<File>),
}

// Returned once per request and consumed at once: boxing the big variant
// would only add an allocation to the hot path.
#[allow(clippy::large_enum_variant)]
pub enum Found {
    File(Opened),
    /// A directory asked for without its trailing slash.
    AddSlash,
    Missing,
}

/// The request's file, a directory's index, or nothing.
pub fn find(site: &Site, rel: RelPath, accept: [Option<Coding>; 2]) -> io::Result<Found> {
    // Already under the root (`path::sanitize_under`); the root itself,
    // with no slash added, when a file is the root.
    let path = rel.path;
    let Some((file, meta)) = open_checked(site, &path)? else {
        return Ok(Found::Missing);
    };
    if !meta.is_dir() {
        // `a.css/` names a directory; the file system would say ENOTDIR,
        // and nginx answers 404. Serving the file would give one file
        // many URLs, and relative links in it a wrong base.
        if rel.trailing_slash {
            return Ok(Found::Missing);
        }
        return file_found(site, path, file, meta, accept);
    }
    if !rel.trailing_slash {
        return Ok(Found::AddSlash);
    }
    drop(file);
    for name in &site.index {
        let p = path.join(name);
        if let Some((file, meta)) = open_checked(site, &p)? {
            if meta.is_file() {
                return file_found(site, p, file, meta, accept);
            }
        }
    }
    // No index: no listing either.
    Ok(Found::Missing)
}

/// A file by its path relative to the root, with no directory handling
/// (the fallback).
pub fn find_file(site: &Site, rel: &Path, accept: [Option<Coding>; 2]) -> io::Result<Found> {
    let path = site.root.join(rel);
    match open_checked(site, &path)? {
        Some((file, meta)) => file_found(site, path, file, meta, accept),
        None => Ok(Found::Missing),
    }
}

fn file_found(
    site: &Site,
    path: PathBuf,
    file: Content,
    meta: Metadata,
    accept: [Option<Coding>; 2],
) -> io::Result<Found> {
    // Sockets, FIFOs, devices: never served.
    if !meta.is_file() {
        return Ok(Found::Missing);
    }
    if site.precompressed && !super::mime::already_compressed(&path) {
        for coding in accept.into_iter().flatten() {
            let mut name = path.clone().into_os_string();
            name.push(coding.suffix());
            if let Some((vf, vm)) = open_checked(site, Path::new(&name))? {
                // A variant older than its original is left over from an
                // earlier build: the plain file is the truth.
                if vm.is_file() && vm.modified().ok() >= meta.modified().ok() {
                    return Ok(Found::File(Opened {
                        content: vf,
                        meta: vm,
                        type_path: path,
                        coding: Some(coding),
                    }));
                }
            }
        }
    }
    Ok(Found::File(Opened {
        content: file,
        meta,
        type_path: path,
        coding: None,
    }))
}

/// Open for reading and stat; None when there is nothing servable there.
fn open_checked(site: &Site, path: &Path) -> io::Result<Option<(Content, Metadata)>> {
    let fast = if site.follow_symlinks || !site.plain_root {
        None
    } else {
        // Kept bytes come only from opens that refuse symlinks: the same
        // sites, and no other, may be served from them.
        if let Some((bytes, file, meta)) = super::hot::get(path) {
            return Ok(Some((Content::Kept(bytes, file), meta)));
        }
        open_without_symlinks(path)
    };
    let (file, proven_inside) = match fast {
        Some(Ok(f)) => (f, true),
        Some(Err(e)) if is_missing(&e) => return Ok(None),
        Some(Err(e)) => return Err(e),
        None => {
            let mut opts = OpenOptions::new();
            opts.read(true);
            // A FIFO would block the open until a writer came; non-blocking,
            // it opens at once and is then refused as not a regular file.
            // Regular file reads ignore the flag.
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NONBLOCK);
            match opts.open(path) {
                Ok(f) => (f, false),
                Err(e) if is_missing(&e) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    };
    let meta = file.metadata()?;
    if !site.follow_symlinks && !proven_inside && !inside_root(site, &file, path)? {
        tracing::debug!(path = %path.display(), "refused: resolves outside the static root");
        return Ok(None);
    }
    if proven_inside {
        if let Some((bytes, file)) = super::hot::keep(path, &file, &meta) {
            return Ok(Some((Content::Kept(bytes, file), meta)));
        }
    }
    Ok(Some((Content::File(file), meta)))
}

/// The common case in one system call: `openat2` refusing every symlink on
/// the way. The root's own path has none (`plain_root`) and the rest is
/// plain names, so a file opened this way is under the root, and the
/// /proc look-up of `inside_root` (which costs more than the open) is not
/// needed. None: a symlink is on the way (ELOOP) or the kernel lacks
/// openat2; the checked open decides.
#[cfg(target_os = "linux")]
fn open_without_symlinks(path: &Path) -> Option<io::Result<File>> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    /// linux/openat2.h `struct open_how` (libc's is non-exhaustive).
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    static UNAVAILABLE: AtomicBool = AtomicBool::new(false);
    if UNAVAILABLE.load(Ordering::Relaxed) {
        return None;
    }
    // The NUL-terminated name on the stack when it fits: a `CString` was
    // one allocation per request. A NUL inside the name fails either way
    // (None: the checked open refuses it too).
    let bytes = path.as_os_str().as_bytes();
    let mut stack = [0u8; 512];
    let heap;
    let c: &std::ffi::CStr = if bytes.len() < stack.len() {
        stack[..bytes.len()].copy_from_slice(bytes);
        std::ffi::CStr::from_bytes_with_nul(&stack[..=bytes.len()]).ok()?
    } else {
        heap = std::ffi::CString::new(bytes).ok()?;
        &heap
    };
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_NO_SYMLINKS,
    };
    // SAFETY: `c` is a NUL-terminated path and `how` an open_how of the
    // size passed; both outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd >= 0 {
        // SAFETY: a descriptor just opened, owned by nothing else.
        return Some(Ok(unsafe { File::from_raw_fd(fd as libc::c_int) }));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR) => Some(Err(e)),
        // No openat2 (before Linux 5.6), or a seccomp filter refusing it.
        Some(libc::ENOSYS | libc::EPERM | libc::EINVAL) => {
            UNAVAILABLE.store(true, Ordering::Relaxed);
            None
        }
        _ => None,
    }
}

#[cfg(not(target_os = "linux"))]
fn open_without_symlinks(_: &Path) -> Option<io::Result<File>> {
    None
}

/// Errors that mean "no such file here" rather than a broken server.
fn is_missing(e: &io::Error) -> bool {
    #[cfg(unix)]
    if let Some(code) = e.raw_os_error() {
        return matches!(
            code,
            libc::ENOENT | libc::ENOTDIR | libc::EACCES | libc::ELOOP | libc::ENAMETOOLONG
        );
    }
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidInput
    )
}

/// Whether what was opened really lies under the root. The opened file's
/// own path (from /proc on Linux) is used, not the name, so nothing can be
/// swapped between the check and the read.
fn inside_root(site: &Site, file: &File, path: &Path) -> io::Result<bool> {
    let real = match real_path(file, path) {
        Ok(p) => p,
        Err(e) if is_missing(&e) => return Ok(false),
        Err(e) => return Err(e),
    };
    if real.starts_with(&**site.real_root.load()) {
        return Ok(true);
    }
    // The root itself may have moved, as when a deploy flips a `current`
    // symlink: look again before refusing, and remember the new place.
    let now = match std::fs::canonicalize(&site.root) {
        Ok(p) => p,
        Err(e) if is_missing(&e) => return Ok(false),
        Err(e) => return Err(e),
    };
    let ok = real.starts_with(&now);
    site.real_root.store(Arc::new(now));
    Ok(ok)
}

#[cfg(target_os = "linux")]
fn real_path(file: &File, path: &Path) -> io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .or_else(|_| std::fs::canonicalize(path))
}

#[cfg(not(target_os = "linux"))]
fn real_path(_: &File, path: &Path) -> io::Result<PathBuf> {
    std::fs::canonicalize(path)
}
