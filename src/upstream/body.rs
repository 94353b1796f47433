//! An upstream response body, decoded from the connection as the client asks
//! for it, or, read ahead of a slow client (`ahead.rs`), as fast as the
//! server sends it. The connection goes back to the pool the moment the
//! body's last byte is taken (when the server allows reuse); a body dropped
//! before its end closes it, since unread bytes would corrupt the next
//! exchange.

use super::h1::{Conn, Framing};
use super::pool::InflightGuard;
use crate::body::BoxError;
use crate::http::decode::{ChunkError, Decoder, Step};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

pub struct UpstreamBody {
    mode: Mode,
    /// Read ahead once the client falls behind (`client_stalled`).
    armed: Option<Box<super::ahead::Limits>>,
}

enum Mode {
    Direct(Direct),
    Ahead(super::ahead::Reader),
    /// Only for the moment `client_stalled` moves the body to its pump.
    Moving,
}

/// The body decoded straight from the connection, as it is polled.
pub(super) struct Direct {
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
        UpstreamBody {
            mode: Mode::Direct(Direct::new(conn, framing, keep_alive, guard)),
            armed: None,
        }
    }

    /// Whether the body needs no reading ahead: all of it is in the buffer
    /// already, or it is read ahead already.
    pub fn is_whole(&self) -> bool {
        match &self.mode {
            Mode::Direct(d) => d.is_whole(),
            _ => true,
        }
    }

    /// Read the rest of the body ahead of the client (`ahead.rs`), within
    /// `limits`: at once with `now`, else from the moment the client is
    /// found slower than the server (`client_stalled`). Until then it is
    /// decoded as the client takes it, which costs half the CPU of a
    /// hand-off between two tasks. A body already whole in the buffer
    /// stays as it is (`client_stalled` checks).
    pub fn read_ahead(&mut self, limits: super::ahead::Limits, now: bool) {
        if matches!(self.mode, Mode::Direct(_)) {
            self.armed = Some(Box::new(limits));
            if now {
                self.client_stalled();
            }
        }
    }

    /// The client connection could not take the last piece at once: it is
    /// slower than the server, which from now on is read ahead of it, if
    /// the body was armed for that.
    pub fn client_stalled(&mut self) {
        if self.armed.is_none() {
            return;
        }
        // Armed only while direct; a body read whole meanwhile needs none.
        if !matches!(&self.mode, Mode::Direct(d) if !d.is_whole()) {
            self.armed = None;
            return;
        }
        let (Some(limits), Mode::Direct(d)) = (
            self.armed.take(),
            std::mem::replace(&mut self.mode, Mode::Moving),
        ) else {
            unreachable!("checked just above");
        };
        self.mode = Mode::Ahead(super::ahead::start(d, *limits));
    }

    /// Whether the rest is read ahead.
    #[cfg(test)]
    pub fn is_ahead(&self) -> bool {
        matches!(self.mode, Mode::Ahead(_))
    }
}

impl Direct {
    fn new(conn: Conn, framing: Framing, keep_alive: bool, guard: InflightGuard) -> Self {
        let decoder = match framing {
            Framing::Empty => Decoder::done(),
            Framing::Length(n) => Decoder::length(n),
            Framing::Chunked => Decoder::chunked(),
            Framing::UntilClose => Decoder::until_close(),
        };
        let mut body = Direct {
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

    /// Whether every byte still to come is in the buffer already. A chunked
    /// body is taken as whole when the buffer ends as its last chunk does
    /// (trailers aside): a wrong guess only leaves it unread ahead.
    fn is_whole(&self) -> bool {
        let Some(conn) = &self.conn else {
            return true;
        };
        match self.decoder.remaining() {
            Some(n) => conn.buf.len() as u64 >= n,
            None => !self.decoder.is_until_close() && conn.buf.ends_with(b"0\r\n\r\n"),
        }
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
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().mode {
            Mode::Direct(d) => Pin::new(d).poll_frame(cx),
            Mode::Ahead(r) => Pin::new(r).poll_frame(cx),
            Mode::Moving => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.mode {
            Mode::Direct(d) => d.is_end_stream(),
            Mode::Ahead(r) => r.is_end_stream(),
            Mode::Moving => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.mode {
            Mode::Direct(d) => d.size_hint(),
            Mode::Ahead(r) => r.size_hint(),
            Mode::Moving => SizeHint::with_exact(0),
        }
    }
}

impl Body for Direct {
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
