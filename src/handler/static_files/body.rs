//! A file's bytes as a response body, one chunk at a time.
//!
//! Reads are positional (`pread`), so the body needs no seek state. A chunk
//! already in the page cache is read on the request's own thread with
//! `RWF_NOWAIT`, which fails instead of waiting for the disk; only a chunk
//! that would wait goes to tokio's blocking pool. So a hot static file costs
//! no thread hand-off, and a cold one never stalls the runtime on a read.
//! The file handle lives in the body (or, during a pool read, in that
//! read's closure, which hands it back): dropping the body closes it.

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use std::fs::File;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::task::JoinHandle;

use super::read::{all_cached, read_blocking, read_cached};

/// Largest chunk read and sent at once: the memory one download holds.
pub const CHUNK: usize = 64 << 10;

pub struct FileBody {
    state: State,
    pos: u64,
    remaining: u64,
    /// Off only in tests, to drive the blocking-pool path.
    try_cache: bool,
    /// The file's version (resident.rs) when the body is the whole file.
    whole: Option<u64>,
    /// All of the body's bytes, when this worker keeps them (hot.rs): sent
    /// from here by a connection that cannot send the file itself.
    kept: Option<Bytes>,
}

enum State {
    Idle(Arc<File>),
    Reading(JoinHandle<(Arc<File>, io::Result<BytesMut>)>),
    Done,
}

impl FileBody {
    /// `len` bytes from `start`.
    pub fn new(file: File, start: u64, len: u64) -> Self {
        Self::shared(Arc::new(file), start, len)
    }

    /// `len` bytes from `start` of a file that stays open elsewhere too
    /// (hot.rs keeps it).
    pub fn shared(file: Arc<File>, start: u64, len: u64) -> Self {
        FileBody {
            state: if len == 0 {
                State::Done
            } else {
                State::Idle(file)
            },
            pos: start,
            remaining: len,
            try_cache: true,
            whole: None,
            kept: None,
        }
    }

    /// The body's bytes are these, already in memory: a connection that
    /// cannot send the file itself takes them instead of reading it.
    pub fn with_bytes(mut self, bytes: Bytes) -> Self {
        debug_assert_eq!(bytes.len() as u64, self.remaining);
        self.kept = Some(bytes);
        self
    }

    /// The body is all of the file `version` (resident.rs): whether it is
    /// in the page cache may be known from a moment ago.
    pub fn whole_file(mut self, version: u64) -> Self {
        self.whole = Some(version);
        self
    }

    #[cfg(test)]
    pub fn pool_only(mut self) -> Self {
        self.try_cache = false;
        self
    }

    /// The next chunk, or None at the end.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        // Kept bytes stand for the whole body: only while none of it went.
        if let Some(b) = self.kept.take() {
            if b.len() as u64 == self.remaining {
                self.sent(self.remaining);
                return Poll::Ready(Some(Ok(b)));
            }
        }
        loop {
            match std::mem::replace(&mut self.state, State::Done) {
                State::Done => return Poll::Ready(None),
                State::Idle(file) => {
                    let want = self.remaining.min(CHUNK as u64) as usize;
                    let mut buf = BytesMut::with_capacity(want);
                    let cached = if self.try_cache {
                        read_cached(&file, self.pos, &mut buf, want)
                    } else {
                        Ok(false)
                    };
                    match cached {
                        Ok(true) => return Poll::Ready(Some(Ok(self.advance(file, buf)))),
                        Ok(false) => {
                            let pos = self.pos;
                            self.state = State::Reading(tokio::task::spawn_blocking(move || {
                                let r = read_blocking(&file, pos, &mut buf, want).map(|()| buf);
                                (file, r)
                            }));
                        }
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    }
                }
                State::Reading(mut h) => {
                    let res = Pin::new(&mut h).poll(cx);
                    let Poll::Ready(res) = res else {
                        self.state = State::Reading(h);
                        return Poll::Pending;
                    };
                    return Poll::Ready(Some(match res {
                        Ok((file, Ok(buf))) => Ok(self.advance(file, buf)),
                        Ok((_, Err(e))) => Err(e),
                        Err(e) => Err(io::Error::other(e)),
                    }));
                }
            }
        }
    }

    /// For a zero-copy send: the file, the offset and the length of the
    /// next stretch, if the whole stretch is in the page cache (so sending
    /// it cannot wait for the disk on the runtime's thread). `None`: read
    /// the next chunk with `poll_chunk` instead.
    pub fn cached_stretch(&self, max: u64) -> Option<(&File, u64, u64)> {
        let State::Idle(file) = &self.state else {
            return None;
        };
        let len = self.remaining.min(max);
        if !self.try_cache || len == 0 {
            return None;
        }
        let cached = match self.whole {
            Some(v) if self.pos == 0 && len == self.remaining => {
                super::resident::all_cached(v, || all_cached(file, 0, len))
            }
            _ => all_cached(file, self.pos, len),
        };
        cached.then_some((file, self.pos, len))
    }

    /// `n` bytes of the file went out without passing through here.
    pub fn sent(&mut self, n: u64) {
        self.pos += n;
        self.remaining -= n.min(self.remaining);
        if self.remaining == 0 {
            self.state = State::Done;
        }
    }

    fn advance(&mut self, file: Arc<File>, buf: BytesMut) -> Bytes {
        self.pos += buf.len() as u64;
        self.remaining -= buf.len() as u64;
        if self.remaining > 0 {
            self.state = State::Idle(file);
        }
        buf.freeze()
    }
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Poll::Ready(ready!(self.poll_chunk(cx)).map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::static_files::read::tests::file;

    #[tokio::test]
    async fn kept_bytes_stand_for_the_body_only_while_none_of_it_went() {
        use std::future::poll_fn;
        let (_d, f, data) = file(1000);
        let f = Arc::new(f);
        // Untouched: the kept bytes are the body, in one piece.
        let mut body =
            FileBody::shared(f.clone(), 0, 1000).with_bytes(Bytes::copy_from_slice(&data));
        let got = poll_fn(|cx| body.poll_chunk(cx)).await.unwrap().unwrap();
        assert!(got[..] == data[..]);
        assert!(poll_fn(|cx| body.poll_chunk(cx)).await.is_none());
        // Part sent from the file (by sendfile): the rest comes from the
        // file, not the kept bytes again.
        let mut body =
            FileBody::shared(f.clone(), 0, 1000).with_bytes(Bytes::copy_from_slice(&data));
        body.sent(300);
        let mut rest = Vec::new();
        while let Some(chunk) = poll_fn(|cx| body.poll_chunk(cx)).await {
            rest.extend_from_slice(&chunk.unwrap());
        }
        assert!(rest[..] == data[300..]);
        // The store's descriptor is still open for the next answer.
        assert_eq!(Arc::strong_count(&f), 1);
    }

    #[test]
    fn a_cached_stretch_is_offered_only_while_idle_and_in_bounds() {
        let (_d, f, _) = file(3 * CHUNK);
        let mut body = FileBody::new(f, 100, (2 * CHUNK) as u64);
        // Just written: in the page cache wherever the kernel can tell.
        if let Some((_, off, len)) = body.cached_stretch(1 << 30) {
            assert_eq!((off, len), (100, (2 * CHUNK) as u64));
            assert_eq!(body.cached_stretch(10).map(|s| s.2), Some(10));
            body.sent(len - 5);
            assert_eq!(
                body.cached_stretch(1 << 30).map(|s| (s.1, s.2)),
                Some((100 + len - 5, 5))
            );
            body.sent(5);
            assert!(http_body::Body::is_end_stream(&body));
            assert!(body.cached_stretch(1 << 30).is_none());
        }
        // The pool-only body never takes the zero-copy path.
        let (_d, f, _) = file(CHUNK);
        assert!(FileBody::new(f, 0, 10)
            .pool_only()
            .cached_stretch(10)
            .is_none());
    }

    #[tokio::test]
    async fn pool_reads_stream_the_whole_file() {
        use http_body_util::BodyExt;
        let (_d, f, data) = file(3 * CHUNK + 7);
        let body = FileBody::new(f, 5, (3 * CHUNK + 2) as u64).pool_only();
        let got = body.collect().await.unwrap().to_bytes();
        assert!(got[..] == data[5..]);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn dropping_the_body_mid_read_closes_the_file() {
        use http_body_util::BodyExt;
        let (d, f, _) = file(4 * CHUNK);
        let p = std::fs::canonicalize(d.path().join("f")).unwrap();
        let handles = || {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| *l == p)
                .count()
        };
        drop(f);
        let mut body = FileBody::new(File::open(&p).unwrap(), 0, (4 * CHUNK) as u64).pool_only();
        body.frame().await.unwrap().unwrap();
        // Start the next pool read, then drop the body while it may run.
        let waker = std::task::Waker::noop();
        let _ = body.poll_chunk(&mut Context::from_waker(waker));
        drop(body);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while handles() > 0 {
            assert!(std::time::Instant::now() < deadline, "file handle leaked");
            tokio::task::yield_now().await;
        }
    }
}
