//! A gzip stream (RFC 1952) around raw deflate, with the deflate states
//! kept per thread for the next answer. Setting one up zeroes its window,
//! its chain table and its 128 KiB hash table, and a reset zeroes the
//! hash table again: for a 2 KiB answer that was most of the work
//! (`memset`, 7 % of the process under load).

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use std::cell::RefCell;
use std::io;

/// zlib-rs's level 2 is what zlib's level 1 (nginx's default
/// `gzip_comp_level`) is: most of the saving for a fraction of the CPU of
/// the higher levels. zlib-rs's level 1 is a quicker, looser strategy. On a
/// 30 KiB admin page: 4,261 bytes in 60 µs here, 5,501 bytes in 62 µs at
/// level 1, 3,525 bytes in 146 µs at level 6; nginx sends 4,399.
const LEVEL: u32 = 2;

/// Deflate states kept per worker thread, each about 330 KiB: enough for
/// the answers one worker compresses at once under a steady load; more at
/// once are made and dropped.
const SPARE: usize = 4;

thread_local! {
    static STATES: RefCell<Vec<Compress>> = const { RefCell::new(Vec::new()) };
}

/// The gzip header: deflate, no name, no time, from a Unix system.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

pub struct Gzip {
    /// `None` once finished (and given back).
    z: Option<Compress>,
    crc: Crc,
    out: Vec<u8>,
}

impl Gzip {
    pub fn new() -> Self {
        let z = STATES
            .with(|s| s.borrow_mut().pop())
            .unwrap_or_else(|| Compress::new(Compression::new(LEVEL), false));
        Gzip {
            z: Some(z),
            crc: Crc::new(),
            out: HEADER.to_vec(),
        }
    }

    /// Compress `input` on, without flushing: what comes out may wait in
    /// the encoder for more.
    pub fn write(&mut self, input: &[u8]) -> io::Result<()> {
        self.crc.update(input);
        self.deflate(input, FlushCompress::None)
    }

    /// Everything written so far, out (a sync flush).
    pub fn flush(&mut self) -> io::Result<()> {
        self.deflate(&[], FlushCompress::Sync)
    }

    /// The compressed bytes made so far.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// The end of the stream and its trailer; the state goes back to the
    /// thread's spares.
    pub fn finish(&mut self) -> io::Result<Vec<u8>> {
        if self.z.is_none() {
            return Ok(Vec::new());
        }
        self.deflate(&[], FlushCompress::Finish)?;
        self.out.extend_from_slice(&self.crc.sum().to_le_bytes());
        self.out.extend_from_slice(&self.crc.amount().to_le_bytes());
        self.give_back();
        Ok(self.take())
    }

    pub fn is_finished(&self) -> bool {
        self.z.is_none()
    }

    fn deflate(&mut self, mut input: &[u8], flush: FlushCompress) -> io::Result<()> {
        let Some(z) = self.z.as_mut() else {
            return Err(io::Error::other("gzip stream already finished"));
        };
        loop {
            if self.out.capacity() - self.out.len() < 512 {
                self.out.reserve(input.len() / 2 + 4096);
            }
            let before = z.total_in();
            let status = z
                .compress_vec(input, &mut self.out, flush)
                .map_err(io::Error::other)?;
            input = &input[(z.total_in() - before) as usize..];
            let done = match flush {
                FlushCompress::Finish => status == Status::StreamEnd,
                // Room left over means the encoder had no more to give.
                _ => input.is_empty() && self.out.len() < self.out.capacity(),
            };
            if done {
                return Ok(());
            }
        }
    }

    fn give_back(&mut self) {
        if let Some(mut z) = self.z.take() {
            z.reset();
            STATES.with(|s| {
                let mut s = s.borrow_mut();
                if s.len() < SPARE {
                    s.push(z);
                }
            });
        }
    }
}

/// An answer cut short (the client went away, the upstream failed) gives
/// its state back too.
impl Drop for Gzip {
    fn drop(&mut self) {
        self.give_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(b)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn pieces_flushed_or_not_make_one_stream_and_states_are_reused() {
        let text: Vec<u8> = (0..5000)
            .flat_map(|i| format!("<td>{}</td>", i % 97).into_bytes())
            .collect();
        for round in 0..3 {
            let mut g = Gzip::new();
            let mut out = Vec::new();
            for (i, piece) in text.chunks(7000).enumerate() {
                g.write(piece).unwrap();
                if i % 2 == 0 {
                    g.flush().unwrap();
                    out.extend(g.take());
                }
            }
            out.extend(g.finish().unwrap());
            assert!(out.len() * 4 < text.len(), "round {round}: {}", out.len());
            assert_eq!(gunzip(&out), text, "round {round}");
            assert!(STATES.with(|s| s.borrow().len()) >= 1);
        }
        // An empty stream is a valid one.
        let mut g = Gzip::new();
        assert_eq!(gunzip(&g.finish().unwrap()), b"");
        assert!(g.is_finished());
        assert!(g.write(b"x").is_err());
    }

    #[test]
    fn a_state_given_back_mid_stream_starts_clean() {
        let mut cut = Gzip::new();
        cut.write(&[b'a'; 10_000]).unwrap();
        drop(cut);
        let mut g = Gzip::new();
        g.write(b"hello").unwrap();
        assert_eq!(gunzip(&g.finish().unwrap()), b"hello");
    }
}
