//! The HTTP/2 connection's byte stream, as hyper reads it: counted for the
//! closing rule (has the client sent anything since GOAWAY?) and weighed,
//! frame by frame, against a flood of frames that ask for nothing.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Control bytes a client may send beyond its useful ones. Frames that
/// need no answer (WINDOW_UPDATE, PRIORITY, unknown types, SETTINGS with
/// nothing new) cost the proxy a parse each, and no limit in the HTTP/2
/// layer counts them: four connections of WINDOW_UPDATE +1 took both
/// cores. Real clients send a few control bytes per request, or per 16-32
/// KiB of a download's window: far below one useful byte each. nginx's
/// rule is the same in kind (1 MiB, and 1/8 of all bytes read as payload).
pub const FLOOD_ALLOWANCE: u64 = 1 << 20;

/// What the connection's reads and answers add up to, shared with the
/// connection's task.
#[derive(Default)]
pub struct Counts {
    /// Reads that brought bytes.
    pub reads: AtomicU64,
    /// Response data handed to hyper: a client's WINDOW_UPDATEs answer it.
    pub served: AtomicU64,
    /// The client flooded the connection with control frames.
    pub flooded: AtomicBool,
}

/// The client's bytes, told apart by frame type as they stream past:
/// DATA, HEADERS and CONTINUATION are requests (useful); the preface and
/// every other frame are control.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Meter {
    /// Preface bytes seen, up to its 24.
    preface: u8,
    head: [u8; 9],
    head_len: u8,
    /// Payload bytes of the current frame still to come.
    left: u32,
    left_useful: bool,
    pub control: u64,
    pub useful: u64,
}

const PREFACE_LEN: u8 = 24;

impl Meter {
    pub fn feed(&mut self, mut buf: &[u8]) {
        if self.preface < PREFACE_LEN {
            let n = buf.len().min(usize::from(PREFACE_LEN - self.preface));
            self.preface += n as u8;
            self.control += n as u64;
            buf = &buf[n..];
        }
        while !buf.is_empty() {
            if self.left > 0 {
                let n = buf.len().min(self.left as usize);
                self.left -= n as u32;
                self.count(self.left_useful, n);
                buf = &buf[n..];
                continue;
            }
            let at = usize::from(self.head_len);
            let n = buf.len().min(9 - at);
            self.head[at..at + n].copy_from_slice(&buf[..n]);
            self.head_len += n as u8;
            buf = &buf[n..];
            if self.head_len == 9 {
                self.head_len = 0;
                let h = self.head;
                self.left = u32::from_be_bytes([0, h[0], h[1], h[2]]);
                // DATA, HEADERS, CONTINUATION.
                self.left_useful = matches!(h[3], 0x0 | 0x1 | 0x9);
                self.count(self.left_useful, 9);
            }
        }
    }

    fn count(&mut self, useful: bool, n: usize) {
        if useful {
            self.useful += n as u64;
        } else {
            self.control += n as u64;
        }
    }

    /// More control than the allowance and everything useful together:
    /// what was read, and the response data that was served.
    pub fn flooded(&self, served: u64) -> bool {
        self.control > FLOOD_ALLOWANCE + self.useful + served
    }
}

pub struct MeteredIo<T> {
    inner: T,
    conn: Arc<super::Shared>,
    meter: Meter,
}

impl<T> MeteredIo<T> {
    pub fn new(inner: T, conn: Arc<super::Shared>) -> Self {
        MeteredIo {
            inner,
            conn,
            meter: Meter::default(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for MeteredIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let this = &mut *self;
            let counts = &this.conn.counts;
            counts.reads.fetch_add(1, Ordering::Relaxed);
            this.meter.feed(&buf.filled()[before..]);
            if this.meter.flooded(counts.served.load(Ordering::Relaxed)) {
                counts.flooded.store(true, Ordering::Relaxed);
                return Poll::Ready(Err(io::Error::other("control frame flood")));
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for MeteredIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ty: u8, payload_len: usize) -> Vec<u8> {
        let l = (payload_len as u32).to_be_bytes();
        let mut f = vec![l[1], l[2], l[3], ty, 0, 0, 0, 0, 1];
        f.resize(9 + payload_len, 0xAA);
        f
    }

    #[test]
    fn frames_are_told_apart_however_the_reads_split_them() {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        for (ty, len) in [
            (4, 0),
            (1, 5),
            (9, 3),
            (0, 100),
            (8, 4),
            (6, 8),
            (2, 5),
            (0xEE, 7),
        ] {
            bytes.extend(frame(ty, len));
        }
        // Preface; SETTINGS; WINDOW_UPDATE, PING, PRIORITY, an unknown type.
        let control = 24 + 9 + 13 + 17 + 14 + 16;
        let useful = 14 + 12 + 109;
        let mut whole = Meter::default();
        whole.feed(&bytes);
        assert_eq!((whole.control, whole.useful), (control, useful));
        for a in 0..bytes.len() {
            for b in a..bytes.len() {
                let mut m = Meter::default();
                m.feed(&bytes[..a]);
                m.feed(&bytes[a..b]);
                m.feed(&bytes[b..]);
                assert_eq!(m, whole, "split at {a} and {b}");
            }
        }
    }

    #[test]
    fn control_past_the_allowance_and_the_useful_bytes_is_a_flood() {
        let mut m = Meter::default();
        m.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        let update = frame(8, 4);
        let mut sent = 24;
        while sent <= FLOOD_ALLOWANCE {
            assert!(!m.flooded(0), "flagged at {sent} bytes");
            m.feed(&update);
            sent += 13;
        }
        assert!(m.flooded(0));
        // The same updates, for a download as large: not a flood.
        assert!(!m.flooded(sent));
        // Nor after requests of as many bytes.
        m.feed(&frame(0, sent as usize));
        assert!(!m.flooded(0));
    }
}
