//! An upstream response body, decoded from the connection as the client asks
//! for it. The connection goes back to the pool the moment the body's last
//! byte is taken (when the server allows reuse); a body dropped before its
//! end closes it, since unread bytes would corrupt the next exchange.

use super::h1::{Conn, Framing};
use super::pool::InflightGuard;
use crate::body::BoxError;
use crate::http::decode::{ChunkError, Decoder, Step};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

pub struct UpstreamBody {
    conn: Option<Conn>,
    decoder: Decoder,
    keep_alive: bool,
    guard: Option<InflightGuard>,
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("upstream closed the connection before the body ended")]
    Truncated,
    #[error("from upstream: {0}")]
    Chunked(#[from] ChunkError),
    #[error("reading the upstream body: {0}")]
    Io(#[from] std::io::Error),
}

impl UpstreamBody {
    pub fn new(conn: Conn, framing: Framing, keep_alive: bool, guard: InflightGuard) -> Self {
        let decoder = match framing {
            Framing::Empty => Decoder::done(),
            Framing::Length(n) => Decoder::length(n),
            Framing::Chunked => Decoder::chunked(),
            Framing::UntilClose => Decoder::until_close(),
        };
        let mut body = UpstreamBody {
            conn: Some(conn),
            decoder,
            keep_alive: keep_alive && framing != Framing::UntilClose,
            guard: Some(guard),
        };
        if body.decoder.is_done() {
            body.finish();
        }
        body
    }

    /// The body ended: the connection is reusable if the server allows it
    /// and sent nothing past the body.
    fn finish(&mut self) {
        self.decoder.finish();
        let guard = self.guard.take();
        if let (Some(conn), Some(guard)) = (self.conn.take(), guard) {
            if self.keep_alive && conn.buf.is_empty() {
                guard.server().pool.put(conn);
            }
        }
    }

    fn fail(&mut self) {
        self.decoder.finish();
        self.conn = None;
        self.guard = None;
    }

    fn step(&mut self, data: bool) -> Result<Step, BodyError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Step::Done);
        };
        Ok(self.decoder.step(&mut conn.buf, data)?)
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
                Poll::Ready(Ok(0)) if this.decoder.is_until_close() => {
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
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        self.decoder
            .remaining()
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}
