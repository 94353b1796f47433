//! Request bodies read whole before the upstream is asked (`buffer_requests`,
//! `buffer_chunked`): WSGI servers hand a chunked body to the app as empty,
//! and a slow upload streamed through would hold an app worker.
//!
//! A body up to `server.max_body_in_memory` is kept in memory, while all such
//! bodies together stay within `server.max_buffered`, whatever the number of
//! connections and streams. A larger body, or one that finds the budget
//! spent, goes to an unnamed temporary file in `server.body_temp_dir`, as
//! nginx's `client_body_temp_path`: memory stays bounded and the request is
//! still served. The file has no name, so nothing is left behind by a crash.

use crate::body::BoxError;
use crate::error::ProxyError;
use crate::state::ServerSettings;
use crate::upstream::h1::SendBody;
use bytes::{Bytes, BytesMut};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Bytes of request bodies read whole into memory and not yet done with, in
/// the whole process.
static BUFFERED: AtomicU64 = AtomicU64::new(0);

/// A share of `BUFFERED`, given back when dropped: while a body is read, and
/// then with the bytes themselves, so that it goes back when their last
/// copy (a retry keeps one) is dropped.
struct Share(u64);

impl Share {
    fn grow(&mut self, n: u64, limit: u64) -> bool {
        if BUFFERED.fetch_add(n, Ordering::Relaxed) + n > limit {
            BUFFERED.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        self.0 += n;
        true
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        BUFFERED.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// The owner of a whole body's bytes (`Bytes::from_owner`).
struct Held {
    bytes: Bytes,
    _share: Share,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Request bodies in temporary files at present, in the whole process.
static IN_FILES: AtomicUsize = AtomicUsize::new(0);

/// A place among the bodies in files, given back when dropped (with the
/// file). There are at most `max_connections` places: a file is a
/// descriptor, and one HTTP/2 connection could otherwise claim one per
/// stream by declaring large bodies it never sends, until the process is
/// out of descriptors for everyone.
pub struct FileSlot(&'static AtomicUsize);

impl FileSlot {
    /// A place under `limit` in `count` (`IN_FILES`; a test's own count
    /// in tests, which run at once).
    fn take(count: &'static AtomicUsize, limit: usize) -> Option<FileSlot> {
        if count.fetch_add(1, Ordering::Relaxed) >= limit {
            count.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(FileSlot(count))
    }
}

impl Drop for FileSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a spilling body gathers before one write to its file: the writes
/// go to tokio's blocking pool (a write may wait for the disk), and one
/// hand-off per MiB costs little where one per network read (8 to 64 KiB)
/// cost 40 % of a 4 MiB upload's rate (256 KiB: 9 % less than 1 MiB).
const STAGE: usize = 1 << 20;

/// A body being written to its temporary file: `STAGE` bytes at a time,
/// each write running while the next bytes arrive.
struct Spill {
    file: std::sync::Arc<std::fs::File>,
    slot: FileSlot,
    /// Bytes not yet handed to a write.
    staged: BytesMut,
    /// Room for `staged` and the write before it, from the memory budget;
    /// without it, each piece is written as it comes.
    _stage_share: Share,
    stage: usize,
    /// Bytes handed to writes so far: where the next one starts.
    len: u64,
    writing: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Spill {
    fn create(server: &ServerSettings) -> Result<Spill, ProxyError> {
        let Some(slot) = FileSlot::take(&IN_FILES, server.max_connections) else {
            tracing::warn!(
                max_connections = server.max_connections,
                "as many request bodies in temporary files as max_connections; refusing with 503"
            );
            return Err(ProxyError::BodyStore);
        };
        let dir = &server.body_temp_dir;
        let file = tempfile::tempfile_in(dir).map_err(|e| store_failed(dir, &e))?;
        let mut share = Share(0);
        let stage = if share.grow(2 * STAGE as u64, server.max_buffered) {
            STAGE
        } else {
            0
        };
        Ok(Spill {
            file: std::sync::Arc::new(file),
            slot,
            staged: BytesMut::new(),
            _stage_share: share,
            stage,
            len: 0,
            writing: None,
        })
    }

    async fn write(&mut self, mut data: &[u8], dir: &Path) -> Result<(), ProxyError> {
        while !data.is_empty() {
            if self.staged.capacity() == 0 {
                self.staged.reserve(self.stage);
            }
            let room = self.stage.saturating_sub(self.staged.len());
            if room == 0 {
                // No stage at all: this piece is its own write.
                let piece = BytesMut::from(data);
                data = &[];
                self.hand_off(piece, dir).await?;
                continue;
            }
            let n = room.min(data.len());
            self.staged.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.staged.len() == self.stage {
                let full = self.staged.split();
                self.hand_off(full, dir).await?;
            }
        }
        Ok(())
    }

    /// Start writing `bytes` at the end of what was handed off before, once
    /// the write before it is done (one at a time per body).
    async fn hand_off(&mut self, bytes: BytesMut, dir: &Path) -> Result<(), ProxyError> {
        self.wait(dir).await?;
        let (file, at) = (self.file.clone(), self.len);
        self.len += bytes.len() as u64;
        self.writing = Some(tokio::task::spawn_blocking(move || {
            std::os::unix::fs::FileExt::write_all_at(&*file, &bytes, at)
        }));
        Ok(())
    }

    async fn wait(&mut self, dir: &Path) -> Result<(), ProxyError> {
        if let Some(w) = self.writing.take() {
            w.await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .map_err(|e| store_failed(dir, &e))?;
        }
        Ok(())
    }

    async fn finish(mut self, dir: &Path) -> Result<SendBody, ProxyError> {
        if !self.staged.is_empty() {
            let rest = self.staged.split();
            self.hand_off(rest, dir).await?;
        }
        self.wait(dir).await?;
        let len = self.len;
        // The last write is done, and only writes held other handles.
        let file = std::sync::Arc::try_unwrap(self.file)
            .map_err(|_| store_failed(dir, &std::io::Error::other("file still in use")))?;
        Ok(SendBody::File {
            file,
            len,
            _slot: self.slot,
        })
    }

    /// Bytes of the body so far, written or not.
    fn total(&self) -> u64 {
        self.len + self.staged.len() as u64
    }
}

fn store_failed(dir: &Path, e: &std::io::Error) -> ProxyError {
    tracing::warn!(
        body_temp_dir = %dir.display(),
        error = %e,
        "request body could not be written to a temporary file; refusing with 503"
    );
    ProxyError::BodyStore
}

/// The whole body, up to `max_body` (else 413), in memory or in a temporary
/// file (see the module's comment).
pub(super) async fn read_whole<B>(
    mut body: B,
    server: &ServerSettings,
) -> Result<SendBody, ProxyError>
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Unpin,
{
    use http_body_util::BodyExt;
    let (max, dir) = (server.max_body, server.body_temp_dir.as_path());
    let keep = server.max_body_in_memory;
    let mut share = Share(0);
    let mut whole = BytesMut::new();
    let mut spill = None;
    // A declared length (past max_body it was answered 413 before) decides
    // at once: taken from the budget, with a buffer made that size (no copy
    // as it grows, and no room promised that the budget does not have), or
    // straight to a file.
    match http_body::Body::size_hint(&body).exact() {
        Some(n) if n > max => {}
        Some(n) if n <= keep && share.grow(n, server.max_buffered) => {
            whole.reserve(n as usize);
        }
        Some(_) => spill = Some(Spill::create(server)?),
        None => {}
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| super::client_body_error(&e))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers: not forwarded
        };
        if let Some(s) = &mut spill {
            if s.total() + data.len() as u64 > max {
                return Err(ProxyError::BodyTooLarge);
            }
            s.write(&data, dir).await?;
            continue;
        }
        let total = whole.len() as u64 + data.len() as u64;
        if total > max {
            return Err(ProxyError::BodyTooLarge);
        }
        if total > share.0 && (total > keep || !share.grow(total - share.0, server.max_buffered)) {
            // Too big for memory after all (a body without a length), or
            // the budget is spent: what came so far goes to the file first.
            // The held bytes themselves are the first write: no copy.
            let held = std::mem::take(&mut whole);
            share = Share(0);
            let mut s = Spill::create(server)?;
            s.hand_off(held, dir).await?;
            s.write(&data, dir).await?;
            spill = Some(s);
            continue;
        }
        whole.extend_from_slice(&data);
    }
    match spill {
        Some(s) => s.finish(dir).await,
        None => Ok(SendBody::Full(Bytes::from_owner(Held {
            bytes: whole.freeze(),
            _share: share,
        }))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;
    use http_body_util::{BodyExt, Full, StreamBody};

    fn server(extra: &str) -> ServerSettings {
        let toml = format!("[server]\n{extra}\n[[listen]]\naddr = \"127.0.0.1:8080\"\n");
        let src = crate::config::Source {
            path: None,
            base_dir: std::env::temp_dir(),
        };
        let snap = crate::config::load_str(&toml, &src, None).unwrap_or_else(|e| panic!("{e}"));
        snap.server.clone()
    }

    /// A body with a Content-Length.
    fn sized(b: &[u8]) -> impl http_body::Body<Data = Bytes, Error = BoxError> + Unpin {
        Full::new(Bytes::copy_from_slice(b)).map_err(|e| match e {})
    }

    /// A body without one, in these pieces.
    fn lengthless(
        pieces: &[&[u8]],
    ) -> impl http_body::Body<Data = Bytes, Error = BoxError> + Unpin {
        let frames: Vec<Result<_, BoxError>> = pieces
            .iter()
            .map(|p| Ok(Frame::data(Bytes::copy_from_slice(p))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    /// Where the body ended up, and its bytes.
    fn contents(b: &SendBody) -> (&'static str, Vec<u8>) {
        match b {
            SendBody::Full(b) => ("memory", b.to_vec()),
            SendBody::File { file, len, .. } => {
                let mut v = vec![0; *len as usize];
                std::os::unix::fs::FileExt::read_exact_at(file, &mut v, 0).unwrap();
                // Nothing past len either.
                let mut more = [0u8; 1];
                let n = std::os::unix::fs::FileExt::read_at(file, &mut more, *len).unwrap();
                assert_eq!(n, 0, "the file is longer than the body");
                ("file", v)
            }
            _ => panic!("neither in memory nor in a file"),
        }
    }

    #[tokio::test]
    async fn a_small_body_stays_in_memory() {
        let s = server("max_body_in_memory = \"1KiB\"");
        let b = read_whole(sized(b"hello"), &s).await.unwrap();
        assert_eq!(contents(&b), ("memory", b"hello".to_vec()));
        let b = read_whole(lengthless(&[b"he", b"llo"]), &s).await.unwrap();
        assert_eq!(contents(&b), ("memory", b"hello".to_vec()));
    }

    #[tokio::test]
    async fn a_body_over_max_body_in_memory_goes_to_a_file() {
        let s = server("max_body_in_memory = \"1KiB\"");
        // More than two stages' worth, so written in several writes.
        let big: Vec<u8> = (0..(2 * STAGE + 5000) as u32)
            .map(|i| (i % 251) as u8)
            .collect();
        // Known from its length at once...
        let b = read_whole(sized(&big), &s).await.unwrap();
        assert_eq!(contents(&b), ("file", big.clone()));
        // ...or found out on the way: what was held goes to the file first;
        // pieces that straddle a stage's end are split across writes.
        let mut pieces: Vec<&[u8]> = vec![&big[..700], &big[700..1024]];
        pieces.extend(big[1024..].chunks(7777));
        let b = read_whole(lengthless(&pieces), &s).await.unwrap();
        assert_eq!(contents(&b), ("file", big.clone()));
    }

    #[tokio::test]
    async fn a_spent_memory_budget_sends_bodies_to_files() {
        // No budget at all: every body is a file, none refused.
        let s = server("max_buffered = \"0\"");
        assert_eq!(s.max_body_in_memory, 0);
        let b = read_whole(sized(b"small"), &s).await.unwrap();
        assert_eq!(contents(&b), ("file", b"small".to_vec()));
        let b = read_whole(lengthless(&[b"sm", b"all"]), &s).await.unwrap();
        assert_eq!(contents(&b), ("file", b"small".to_vec()));
    }

    #[tokio::test]
    async fn max_body_holds_wherever_the_body_is_kept() {
        let s = server("max_body = \"2KiB\"\nmax_body_in_memory = \"1KiB\"");
        let big = vec![b'x'; 3000];
        for body in [
            read_whole(sized(&big), &s).await,
            read_whole(lengthless(&[&big[..500], &big[500..]]), &s).await,
            read_whole(lengthless(&[&big[..1500], &big[1500..]]), &s).await,
        ] {
            assert!(matches!(body, Err(ProxyError::BodyTooLarge)));
        }
    }

    #[test]
    fn bodies_in_files_are_limited_in_number_and_give_their_place_back() {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let a = FileSlot::take(&COUNT, 2).unwrap();
        let b = FileSlot::take(&COUNT, 2).unwrap();
        assert!(
            FileSlot::take(&COUNT, 2).is_none(),
            "a third past a limit of 2"
        );
        drop(a);
        let c = FileSlot::take(&COUNT, 2).expect("the place given back");
        drop((b, c));
        assert_eq!(COUNT.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_temp_dir_gone_is_a_503_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let s = server(&format!(
            "max_body_in_memory = \"4\"\nbody_temp_dir = \"{}\"",
            dir.path().display()
        ));
        drop(dir);
        let Err(e) = read_whole(sized(b"too big for memory"), &s).await else {
            panic!("kept with no directory to keep it in");
        };
        assert!(matches!(e, ProxyError::BodyStore), "{e}");
        assert_eq!(e.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        // A small one does not need the directory.
        let b = read_whole(sized(b"ok"), &s).await.unwrap();
        assert_eq!(contents(&b), ("memory", b"ok".to_vec()));
    }
}
