//! Request bodies read whole into an unnamed temporary file in
//! `server.body_temp_dir`, as nginx's `client_body_temp_path`: those too
//! large for `server.max_body_in_memory`, and those that find the memory
//! budget spent (buffer.rs). The file has no name, so nothing is left
//! behind by a crash.
//!
//! Two process-wide bounds hold however many connections and streams ask:
//! at most `max_connections` bodies in files (each is a descriptor) and at
//! most `max_spilled` bytes of them on disk. Past either, 503.

use super::buffer::Share;
use crate::error::ProxyError;
use crate::state::ServerSettings;
use crate::upstream::h1::SendBody;
use bytes::BytesMut;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Request bodies in temporary files at present, in the whole process.
static IN_FILES: AtomicUsize = AtomicUsize::new(0);
/// Their bytes, declared or written.
static SPILLED: AtomicU64 = AtomicU64::new(0);
/// The same of answers read ahead of their clients (`upstream::ahead`),
/// counted apart: a slow download must not make an upload fail.
static ANSWERS_IN_FILES: AtomicUsize = AtomicUsize::new(0);
static ANSWERS_SPILLED: AtomicU64 = AtomicU64::new(0);

/// Bytes in temporary files now, of request bodies and of answers read
/// ahead, in the whole process (a metric).
pub(crate) fn on_disk() -> (u64, u64) {
    (
        SPILLED.load(Ordering::Relaxed),
        ANSWERS_SPILLED.load(Ordering::Relaxed),
    )
}

/// A place among the bodies in files and the body's bytes on disk, given
/// back when dropped (with the file). There are at most `max_connections`
/// places: one HTTP/2 connection could otherwise claim a descriptor per
/// stream by declaring large bodies it never sends, until the process is
/// out of descriptors for everyone.
pub struct FileSlot {
    count: &'static AtomicUsize,
    disk: Share,
}

impl FileSlot {
    /// A place under `limit` in `count` (`IN_FILES`; a test's own count in
    /// tests, which run at once), its bytes counted in `bytes`.
    fn take(
        count: &'static AtomicUsize,
        limit: usize,
        bytes: &'static AtomicU64,
    ) -> Option<FileSlot> {
        if count.fetch_add(1, Ordering::Relaxed) >= limit {
            count.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(FileSlot {
            count,
            disk: Share::new(bytes),
        })
    }
}

impl FileSlot {
    /// A place for an answer read ahead of its client, one of `limit`.
    pub(crate) fn for_answer(limit: usize) -> Option<FileSlot> {
        FileSlot::take(&ANSWERS_IN_FILES, limit, &ANSWERS_SPILLED)
    }

    /// Room for `n` more bytes on disk, within `limit` for all the files
    /// of its kind.
    pub(crate) fn grow_disk(&mut self, n: u64, limit: u64) -> bool {
        self.disk.grow(n, limit)
    }

    /// Bytes of this file counted on disk.
    pub(crate) fn disk_held(&self) -> u64 {
        self.disk.held()
    }

    /// The file is empty again.
    pub(crate) fn release_disk(&mut self) {
        self.disk.shrink(self.disk.held());
    }
}

impl Drop for FileSlot {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a spilling body gathers before one write to its file: the writes
/// go to tokio's blocking pool (a write may wait for the disk), and one
/// hand-off per MiB costs little where one per network read (8 to 64 KiB)
/// cost 40 % of a 4 MiB upload's rate (256 KiB: 9 % less than 1 MiB).
pub(super) const STAGE: usize = 1 << 20;

/// A body being written to its temporary file: `STAGE` bytes at a time,
/// each write running while the next bytes arrive.
pub(super) struct Spill {
    file: Arc<std::fs::File>,
    /// Where it is (`server.body_temp_dir`), for the log line of a failed write.
    dir: PathBuf,
    slot: FileSlot,
    max_spilled: u64,
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
    /// A file for a body. Its bytes count against `max_spilled` as they
    /// arrive, not by its declared length: a client that declares a large
    /// body and sends nothing holds no disk (only one of the places).
    pub(super) fn create(server: &ServerSettings) -> Result<Spill, ProxyError> {
        let Some(slot) = FileSlot::take(&IN_FILES, server.max_connections, &SPILLED) else {
            tracing::warn!(
                max_connections = server.max_connections,
                "as many request bodies in temporary files as max_connections; refusing with 503"
            );
            return Err(ProxyError::BodyStore);
        };
        let dir = &server.body_temp_dir;
        let file = tempfile::tempfile_in(dir).map_err(|e| store_failed(dir, &e))?;
        let mut share = Share::memory();
        let stage = if share.grow(2 * STAGE as u64, server.max_buffered) {
            STAGE
        } else {
            0
        };
        Ok(Spill {
            file: Arc::new(file),
            dir: dir.clone(),
            slot,
            max_spilled: server.max_spilled,
            staged: BytesMut::new(),
            _stage_share: share,
            stage,
            len: 0,
            writing: None,
        })
    }

    /// Room on disk for the body to be `total` bytes long.
    fn claim(&mut self, total: u64) -> Result<(), ProxyError> {
        let disk = &mut self.slot.disk;
        if total > disk.held() && !disk.grow(total - disk.held(), self.max_spilled) {
            tracing::warn!(
                max_spilled = self.max_spilled,
                "request bodies in temporary files at max_spilled; refusing with 503"
            );
            return Err(ProxyError::BodyStore);
        }
        Ok(())
    }

    pub(super) async fn write(&mut self, mut data: &[u8]) -> Result<(), ProxyError> {
        self.claim(self.total() + data.len() as u64)?;
        while !data.is_empty() {
            if self.staged.capacity() == 0 {
                self.staged.reserve(self.stage);
            }
            let room = self.stage.saturating_sub(self.staged.len());
            if room == 0 {
                // No stage at all: this piece is its own write.
                let piece = BytesMut::from(data);
                data = &[];
                self.hand_off(piece).await?;
                continue;
            }
            let n = room.min(data.len());
            self.staged.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.staged.len() == self.stage {
                let full = self.staged.split();
                self.hand_off(full).await?;
            }
        }
        Ok(())
    }

    /// Write `bytes` held elsewhere (a body that turned out too big for
    /// memory) as they are, without a copy into the stage.
    pub(super) async fn write_held(&mut self, bytes: BytesMut) -> Result<(), ProxyError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.claim(self.total() + bytes.len() as u64)?;
        self.hand_off(bytes).await
    }

    /// Start writing `bytes` at the end of what was handed off before, once
    /// the write before it is done (one at a time per body).
    async fn hand_off(&mut self, bytes: BytesMut) -> Result<(), ProxyError> {
        self.wait().await?;
        let (file, at) = (self.file.clone(), self.len);
        self.len += bytes.len() as u64;
        self.writing = Some(tokio::task::spawn_blocking(move || {
            std::os::unix::fs::FileExt::write_all_at(&*file, &bytes, at)
        }));
        Ok(())
    }

    async fn wait(&mut self) -> Result<(), ProxyError> {
        if let Some(w) = self.writing.take() {
            w.await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .map_err(|e| store_failed(&self.dir, &e))?;
        }
        Ok(())
    }

    pub(super) async fn finish(mut self) -> Result<SendBody, ProxyError> {
        if !self.staged.is_empty() {
            let rest = self.staged.split();
            self.hand_off(rest).await?;
        }
        self.wait().await?;
        Ok(SendBody::File {
            file: self.file,
            len: self.len,
            _slot: self.slot,
        })
    }

    /// Bytes of the body so far, written or not.
    pub(super) fn total(&self) -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_in_files_are_limited_in_number_and_give_their_place_back() {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        static BYTES: AtomicU64 = AtomicU64::new(0);
        let a = FileSlot::take(&COUNT, 2, &BYTES).unwrap();
        let b = FileSlot::take(&COUNT, 2, &BYTES).unwrap();
        assert!(
            FileSlot::take(&COUNT, 2, &BYTES).is_none(),
            "a third past a limit of 2"
        );
        drop(a);
        let c = FileSlot::take(&COUNT, 2, &BYTES).expect("the place given back");
        drop((b, c));
        assert_eq!(COUNT.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_bytes_of_bodies_in_files_stay_within_their_budget() {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        static BYTES: AtomicU64 = AtomicU64::new(0);
        let mut a = FileSlot::take(&COUNT, 10, &BYTES).unwrap();
        let mut b = FileSlot::take(&COUNT, 10, &BYTES).unwrap();
        assert!(a.disk.grow(600, 1000));
        assert!(!b.disk.grow(500, 1000), "600 + 500 past 1000");
        assert!(b.disk.grow(400, 1000));
        drop(a);
        assert!(b.disk.grow(600, 1000), "the first file's bytes given back");
        drop(b);
        assert_eq!(BYTES.load(Ordering::Relaxed), 0);
    }
}
