//! A stretch of a file into a buffer: from the page cache on the request's
//! own thread when all of it is there, or waiting for the disk on tokio's
//! blocking pool.

use bytes::BytesMut;
use std::fs::File;
use std::io;

/// A file that shrank under us cannot give the length already promised.
fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being sent")
}

/// Fill `buf` up to `want` bytes from the page cache only. Ok(false): some
/// of it would have to wait for the disk (or the system cannot tell).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(super) fn read_cached(
    file: &File,
    pos: u64,
    buf: &mut BytesMut,
    want: usize,
) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    while buf.len() < want {
        let have = buf.len();
        let spare = &mut buf.spare_capacity_mut()[..want - have];
        let iov = libc::iovec {
            iov_base: spare.as_mut_ptr().cast(),
            iov_len: spare.len(),
        };
        let off = pos + have as u64;
        // SAFETY: `iov` describes `spare`, capacity owned by `buf` that
        // stays alive and unaliased for the call; the kernel writes at most
        // `iov_len` bytes into it and reports how many.
        let n = unsafe {
            libc::preadv2(
                file.as_raw_fd(),
                &iov,
                1,
                off as libc::off_t,
                libc::RWF_NOWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                // EAGAIN: not cached. The others: the kernel or the
                // filesystem does not do RWF_NOWAIT; the pool will read.
                Some(libc::EAGAIN | libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) => Ok(false),
                Some(libc::EINTR) => continue,
                _ => Err(e),
            };
        }
        if n == 0 {
            return Err(truncated());
        }
        // SAFETY: the kernel initialised the first `n` spare bytes.
        unsafe { buf.set_len(have + n as usize) };
    }
    Ok(true)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(super) fn read_cached(_: &File, _: u64, _: &mut BytesMut, _: usize) -> io::Result<bool> {
    Ok(false)
}

/// Is every page of `len` bytes from `pos` in the page cache? Asks the
/// kernel's `cachestat` (Linux 6.5); where it cannot tell, no.
#[cfg(target_os = "linux")]
pub(super) fn all_cached(file: &File, pos: u64, len: u64) -> bool {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    // The same number on every architecture (the generic syscall table).
    const SYS_CACHESTAT: libc::c_long = 451;
    const PAGE: u64 = 4096;
    let range = Range { off: pos, len };
    let mut st = Stat::default();
    // SAFETY: cachestat reads `range` and writes one `Stat`, both ours and
    // laid out as the kernel's structs; the fd is open for the call.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut st as *mut Stat,
            0u32,
        )
    };
    // Pages the range touches (it may start and end inside one).
    let pages = (pos + len).div_ceil(PAGE) - pos / PAGE;
    r == 0 && st.nr_cache >= pages
}

#[cfg(not(target_os = "linux"))]
pub(super) fn all_cached(_: &File, _: u64, _: u64) -> bool {
    false
}

/// Fill `buf` up to `want` bytes, waiting for the disk. Runs on the pool.
pub(super) fn read_blocking(
    file: &File,
    pos: u64,
    buf: &mut BytesMut,
    want: usize,
) -> io::Result<()> {
    let have = buf.len();
    buf.resize(want, 0);
    match read_exact_at(file, &mut buf[have..], pos + have as u64) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(truncated()),
        r => r,
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, pos)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut pos: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, pos)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                pos += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::handler::static_files::body::CHUNK;

    pub(in crate::handler::static_files) fn file(len: usize) -> (tempfile::TempDir, File, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let p = dir.path().join("f");
        std::fs::write(&p, &data).unwrap();
        (dir, File::open(&p).unwrap(), data)
    }

    #[test]
    fn cached_and_pool_reads_agree_with_the_file() {
        let (_d, f, data) = file(100_000);
        let mut b = BytesMut::with_capacity(CHUNK);
        // Just written, so cached on Linux; elsewhere (or on a filesystem
        // without RWF_NOWAIT) the pool read below does the work.
        if read_cached(&f, 10, &mut b, CHUNK).unwrap() {
            assert!(b[..] == data[10..10 + CHUNK]);
        }
        // The pool completes a buffer the cached read left half full.
        let mut half = BytesMut::from(&data[10..1000]);
        read_blocking(&f, 10, &mut half, CHUNK).unwrap();
        assert!(half[..] == data[10..10 + CHUNK]);
    }

    #[test]
    fn a_file_that_shrank_is_an_error_not_a_short_body() {
        let (_d, f, _) = file(1000);
        let mut b = BytesMut::with_capacity(2000);
        assert!(read_cached(&f, 0, &mut b, 2000).is_err() || b.is_empty());
        let mut b = BytesMut::new();
        let e = read_blocking(&f, 0, &mut b, 2000).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
