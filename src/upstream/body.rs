//! An upstream response body, decoded from the connection as the client asks
//! for it. The connection goes back to the pool the moment the body's last
//! byte is taken (when the server allows reuse); a body dropped before its
//! end closes it, since unread bytes would corrupt the next exchange.

use super::h1::{Conn, Framing};
use super::pool::InflightGuard;
use crate::body::BoxError;
use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A chunk-size line or a trailer field longer than this is not HTTP.
const MAX_LINE: usize = 4096;
/// All trailer fields together (dropped: they are not forwarded).
const MAX_TRAILERS: usize = 16 * 1024;

pub struct UpstreamBody {
    conn: Option<Conn>,
    state: State,
    keep_alive: bool,
    guard: Option<InflightGuard>,
    trailer_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    UntilClose,
    Done,
}

enum Step {
    Data(Bytes),
    NeedMore,
    Done,
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("upstream closed the connection before the body ended")]
    Truncated,
    #[error("invalid chunked body from upstream: {0}")]
    Chunked(&'static str),
    #[error("reading the upstream body: {0}")]
    Io(#[from] std::io::Error),
}

impl UpstreamBody {
    pub fn new(conn: Conn, framing: Framing, keep_alive: bool, guard: InflightGuard) -> Self {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        let mut body = UpstreamBody {
            conn: Some(conn),
            state,
            keep_alive: keep_alive && framing != Framing::UntilClose,
            guard: Some(guard),
            trailer_bytes: 0,
        };
        if body.state == State::Done {
            body.finish();
        }
        body
    }

    /// The body ended: the connection is reusable if the server allows it
    /// and sent nothing past the body.
    fn finish(&mut self) {
        self.state = State::Done;
        let guard = self.guard.take();
        if let (Some(conn), Some(guard)) = (self.conn.take(), guard) {
            if self.keep_alive && conn.buf.is_empty() {
                guard.server().pool.put(conn);
            }
        }
    }

    fn fail(&mut self) {
        self.state = State::Done;
        self.conn = None;
        self.guard = None;
    }

    /// Advance on the bytes already read. With `data` false, stops before
    /// handing out body bytes: used to notice the end without waiting.
    fn step(&mut self, data: bool) -> Result<Step, BodyError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Step::Done);
        };
        let buf = &mut conn.buf;
        loop {
            match self.state {
                State::Done | State::Length(0) => return Ok(Step::Done),
                State::Length(_) | State::ChunkData(_) | State::UntilClose
                    if buf.is_empty() || !data =>
                {
                    return Ok(Step::NeedMore);
                }
                State::Length(rem) => {
                    let n = rem.min(buf.len() as u64);
                    self.state = State::Length(rem - n);
                    return Ok(Step::Data(buf.split_to(n as usize).freeze()));
                }
                State::ChunkData(rem) => {
                    let n = rem.min(buf.len() as u64);
                    self.state = if rem == n {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(rem - n)
                    };
                    return Ok(Step::Data(buf.split_to(n as usize).freeze()));
                }
                State::UntilClose => return Ok(Step::Data(buf.split().freeze())),
                State::ChunkSize => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        self.state = if size == 0 {
                            State::Trailers
                        } else {
                            State::ChunkData(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_LINE => {
                        return Err(BodyError::Chunked("chunk size line too long"))
                    }
                    Ok(httparse::Status::Partial) => return Ok(Step::NeedMore),
                    Err(_) => return Err(BodyError::Chunked("bad chunk size")),
                },
                State::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BodyError::Chunked("chunk not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
                        if buf.len() > MAX_LINE {
                            return Err(BodyError::Chunked("trailer line too long"));
                        }
                        return Ok(Step::NeedMore);
                    };
                    buf.advance(eol + 2);
                    if eol == 0 {
                        return Ok(Step::Done);
                    }
                    self.trailer_bytes += eol + 2;
                    if self.trailer_bytes > MAX_TRAILERS {
                        return Err(BodyError::Chunked("trailers too large"));
                    }
                }
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match this.step(true) {
                Ok(Step::Data(d)) => {
                    // The end may already be buffered (a chunked body's last
                    // chunk, or the length reached): say so now, so the
                    // client connection need not ask again.
                    match this.step(false) {
                        Ok(Step::Done) => this.finish(),
                        Ok(_) => {}
                        Err(e) => {
                            this.fail();
                            return Poll::Ready(Some(Err(e.into())));
                        }
                    }
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Ok(Step::Done) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {}
                Err(e) => {
                    this.fail();
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match conn.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if this.state == State::UntilClose => {
                    this.keep_alive = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    this.fail();
                    return Poll::Ready(Some(Err(BodyError::Truncated.into())));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.fail();
                    return Poll::Ready(Some(Err(BodyError::Io(e).into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
