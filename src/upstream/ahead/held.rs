//! What an answer read ahead holds until its client takes it: pieces in
//! memory and stretches of a temporary file, in order.

use super::{blocks, Limits};
use crate::body::BoxError;
use crate::handler::upstream::{FileSlot, Share};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::os::unix::fs::FileExt;
use std::task::Waker;

/// The most read back from the file at a time.
const FILE_CHUNK: usize = 128 * 1024;

/// A piece read and not yet sent, in order.
pub(super) enum Seg {
    Mem(Bytes),
    /// `len` bytes of the file from `at`.
    File {
        at: u64,
        len: u64,
    },
}

pub(super) enum Spool {
    /// No byte had to go to a file yet.
    None,
    Open {
        file: std::fs::File,
        /// Its place among the answers in files, and its bytes on disk.
        slot: FileSlot,
        /// Where the next bytes go: the file starts again at 0 each time
        /// the client has caught up with it.
        end: u64,
    },
    /// A file could not be made or written: memory and the client's pace
    /// only.
    Off,
}

pub(super) struct State {
    pub(super) segs: VecDeque<Seg>,
    /// The `Mem` pieces' bytes, from the memory budget.
    pub(super) mem: Share,
    pub(super) spool: Spool,
    /// Set by the pump when the app's body ended, well or not.
    pub(super) end: Option<Result<(), BoxError>>,
    pub(super) reader: Option<Waker>,
    pub(super) pump: Option<Waker>,
    /// The pump holds a piece there was no room for.
    pub(super) pump_waits: bool,
    pub(super) reader_gone: bool,
}

impl State {
    pub(super) fn new() -> State {
        State {
            segs: VecDeque::new(),
            mem: Share::memory(),
            spool: Spool::None,
            end: None,
            reader: None,
            pump: None,
            pump_waits: false,
            reader_gone: false,
        }
    }

    /// Keep `d` after what is held: in memory while there is room, else in
    /// the file; back when there is room for neither.
    pub(super) fn store(&mut self, d: Bytes, limits: &Limits) -> Result<(), Bytes> {
        let n = d.len() as u64;
        // With nothing held, a piece always goes: it is in memory anyway,
        // and so the body moves at least at the client's pace.
        let in_memory = if self.segs.is_empty() {
            self.mem.force(n);
            true
        } else {
            self.mem.held() + n <= limits.in_memory && self.mem.grow(n, limits.memory)
        };
        if in_memory {
            self.segs.push_back(Seg::Mem(blocks::own(d)));
            Ok(())
        } else if self.write(&d, limits) {
            Ok(())
        } else {
            Err(d)
        }
    }

    /// Append `d` to the file, made on first use; false when there is no
    /// file or no room in it.
    fn write(&mut self, d: &[u8], limits: &Limits) -> bool {
        let n = d.len() as u64;
        if n > limits.in_file {
            return false;
        }
        if matches!(self.spool, Spool::None) {
            self.spool = match open(limits) {
                Some((file, slot)) => Spool::Open { file, slot, end: 0 },
                None => Spool::Off,
            };
        }
        let Spool::Open { file, slot, end } = &mut self.spool else {
            return false;
        };
        if slot.disk_held() + n > limits.in_file || !slot.grow_disk(n, limits.on_disk) {
            return false;
        }
        if let Err(e) = file.write_all_at(d, *end) {
            tracing::warn!(
                body_temp_dir = %limits.dir.display(),
                error = %e,
                "an answer read ahead of its client could not be written to its temporary file; it goes at the client's pace"
            );
            self.spool = Spool::Off;
            return false;
        }
        let at = *end;
        *end += n;
        match self.segs.back_mut() {
            Some(Seg::File { at: a, len }) if *a + *len == at => *len += n,
            _ => self.segs.push_back(Seg::File { at, len: n }),
        }
        true
    }

    /// The next piece for the client.
    pub(super) fn take(&mut self) -> Option<std::io::Result<Bytes>> {
        let seg = self.segs.front_mut()?;
        let d = match seg {
            Seg::Mem(_) => {
                let Some(Seg::Mem(d)) = self.segs.pop_front() else {
                    unreachable!("the front was a Mem piece");
                };
                self.mem.shrink(d.len() as u64);
                d
            }
            Seg::File { at, len } => {
                let Spool::Open { file, .. } = &self.spool else {
                    unreachable!("a File piece is only made with an open file");
                };
                let n = (*len).min(FILE_CHUNK as u64) as usize;
                let mut buf = BytesMut::zeroed(n);
                if let Err(e) = file.read_exact_at(&mut buf, *at) {
                    return Some(Err(e));
                }
                *at += n as u64;
                *len -= n as u64;
                if *len == 0 {
                    self.segs.pop_front();
                    self.rewind();
                }
                buf.freeze()
            }
        };
        Some(Ok(d))
    }

    /// Once the client has caught up with the file, it starts again from
    /// its beginning and gives its disk space back.
    fn rewind(&mut self) {
        if self.segs.iter().any(|s| matches!(s, Seg::File { .. })) {
            return;
        }
        if let Spool::Open { file, slot, end } = &mut self.spool {
            *end = 0;
            slot.release_disk();
            // Frees the blocks; a failure only keeps them until the file
            // is closed.
            let _ = file.set_len(0);
        }
    }
}

fn open(limits: &Limits) -> Option<(std::fs::File, FileSlot)> {
    let Some(slot) = FileSlot::for_answer(limits.files) else {
        tracing::debug!(
            max_connections = limits.files,
            "as many answers in temporary files as max_connections; this one goes at its client's pace"
        );
        return None;
    };
    match tempfile::tempfile_in(&limits.dir) {
        Ok(f) => Some((f, slot)),
        Err(e) => {
            tracing::warn!(
                body_temp_dir = %limits.dir.display(),
                error = %e,
                "no temporary file for an answer read ahead of its client; it goes at the client's pace"
            );
            None
        }
    }
}
