//! HTTP/1.1 to an upstream, driven in the task of the request it carries.
//!
//! hyper's client runs each upstream connection as a task of its own and
//! talks to it through channels: a request goes in through one, the response
//! head comes back through a oneshot and its body through another, so every
//! exchange costs several task wake-ups besides the proxying itself. Here the
//! request's own task writes the head, streams the body and reads the answer
//! on the socket directly, and the response body (`body.rs`) decodes straight
//! from the socket as the client connection asks for it. The codec is small:
//! heads are parsed by `httparse` (hyper's own parser), bodies are framed by
//! Content-Length, chunked, or the connection's end (RFC 9112 §6).

use super::connect::Stream;
use crate::body::BoxError;
use crate::http::IdleTimer;
use crate::upstream::pool::RequestBody;
use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode, Version};
use http_body_util::BodyExt;
use std::future::{poll_fn, Future};
use std::io::{self, Write};
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The most a response head may take; a bigger one is a broken upstream.
const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in a response head (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// A body this small is written together with the head, in one syscall.
const INLINE_BODY: usize = 16 * 1024;

/// One connection to a server, with what was read but not yet consumed.
pub struct Conn {
    pub io: Stream,
    pub buf: BytesMut,
    wbuf: Vec<u8>,
    read_size: usize,
    /// Bounds the wait for the answer; in the pool's `IdleSet`.
    answer_timer: IdleTimer,
    /// Requests sent on this connection (`keepalive_requests`).
    pub requests: u32,
}

/// What to send after the head.
pub enum SendBody {
    None,
    /// Read whole beforehand; can be sent again.
    Full(Bytes),
    /// Read whole beforehand into an unnamed temporary file, `len` bytes
    /// long; can be sent again (reads are positional). Closing it frees
    /// the disk space.
    File {
        file: std::sync::Arc<std::fs::File>,
        len: u64,
        /// Its place among the bodies in files, held as long as the file.
        _slot: crate::handler::upstream::FileSlot,
    },
    /// Streamed from the client; consumed once polled.
    Stream(RequestBody),
}

impl SendBody {
    /// The length of a body read whole (0 for none); `None` for a body
    /// still to be streamed.
    pub fn whole_len(&self) -> Option<u64> {
        match self {
            SendBody::None => Some(0),
            SendBody::Full(b) => Some(b.len() as u64),
            SendBody::File { len, .. } => Some(*len),
            SendBody::Stream(_) => None,
        }
    }
}

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    /// Passed on as they came, less hop-by-hop fields (`http::raw`).
    pub fields: crate::http::RawFields,
    pub framing: Framing,
    /// The connection may carry another request once the body has ended.
    pub keep_alive: bool,
    /// The body may be read ahead of a slow client: false when the server
    /// said `X-Accel-Buffering: no` (nginx's field, for the proxy alone:
    /// it is not among `fields`).
    pub read_ahead: bool,
}

/// Why an exchange failed, and how far it got: what decides whether the
/// request may be tried again.
#[derive(Debug)]
pub struct Error {
    pub error: ProtoError,
    /// The server may have received the whole request head (and so may
    /// have acted on it).
    pub sent: bool,
    /// The request body was polled: it cannot be sent again.
    pub body_used: bool,
    /// Some byte of a response arrived.
    pub answered: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("upstream closed the connection before answering")]
    Closed,
    #[error("upstream timed out")]
    Timeout,
    #[error("invalid response from upstream: {0}")]
    Invalid(&'static str),
    #[error("request body larger than max_body")]
    BodyTooLarge,
    #[error("request body could not be read: {0}")]
    Client(BoxError),
    /// The body's temporary file could not be read: not the server's fault.
    #[error("request body could not be read back from its temporary file: {0}")]
    Spill(io::Error),
}

impl Conn {
    pub fn new(io: Stream, answer_timer: IdleTimer) -> Self {
        Conn {
            io,
            buf: BytesMut::new(),
            wbuf: Vec::new(),
            read_size: crate::http::decode::MIN_READ,
            answer_timer,
            requests: 0,
        }
    }

    /// Has the server closed this idle connection, or sent something
    /// unasked? Costs no syscall unless the socket was reported readable.
    pub fn is_stale(&mut self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        self.io.is_stale()
    }

    /// Read more into `buf`. `Ok(0)` is the end of the stream.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        crate::http::decode::poll_fill(&mut self.io, &mut self.buf, &mut self.read_size, cx)
    }

    /// Send a request and read its response head. `parts` is only read, so
    /// the same request can be sent again when this fails early.
    ///
    /// `timeout` bounds each step that waits on the server: one write of the
    /// head or of a piece of the body, and the wait for the answer after the
    /// body. Not the whole exchange: a large upload from a slow client may
    /// take longer than `timeout` while the server keeps up with it (its
    /// pauses are the client body's `idle_timeout`).
    pub async fn exchange(
        &mut self,
        parts: &http::request::Parts,
        body: &mut SendBody,
        timeout: Duration,
    ) -> Result<Head, Error> {
        self.requests = self.requests.saturating_add(1);
        let chunked = encode_head(&mut self.wbuf, parts, body);
        let mut inline = false;
        if let SendBody::Full(b) = body {
            if b.len() <= INLINE_BODY {
                self.wbuf.extend_from_slice(b);
                inline = true;
            }
        }
        let fail = |error, sent, body_used| Error {
            error,
            sent,
            body_used,
            answered: false,
        };
        if let Err(e) = within(timeout, self.io.write_all(&self.wbuf)).await {
            // A head that did not go out whole is no request the server
            // could act on; with a body behind it, the head may have.
            return Err(fail(e, inline, false));
        }
        let mut body_used = false;
        let sent_body = match body {
            SendBody::None => Ok(()),
            SendBody::Full(b) if b.len() <= INLINE_BODY => Ok(()),
            SendBody::Full(b) => within(timeout, self.io.write_all(b)).await,
            SendBody::File { file, len, .. } => self.send_file(file, *len, timeout).await,
            SendBody::Stream(b) => {
                body_used = true;
                self.stream_body(b, chunked, timeout).await
            }
        };
        match sent_body {
            Ok(()) => {}
            Err(e @ (ProtoError::BodyTooLarge | ProtoError::Client(_) | ProtoError::Spill(_))) => {
                return Err(fail(e, true, true))
            }
            // The server may have answered early (a 413, say) and closed:
            // its answer is worth more than the write error.
            Err(e) => {
                return match self.answer(&parts.method, timeout).await {
                    Ok(mut head) => {
                        head.keep_alive = false;
                        Ok(head)
                    }
                    Err(_) => Err(fail(e, true, body_used)),
                };
            }
        }
        self.answer(&parts.method, timeout)
            .await
            .map_err(|(error, answered)| Error {
                error,
                sent: true,
                body_used,
                answered,
            })
    }

    /// The response head, within `timeout` from now. A timeout counts as no
    /// answer, as a request that could be sent again elsewhere would be.
    async fn answer(
        &mut self,
        method: &Method,
        timeout: Duration,
    ) -> Result<Head, (ProtoError, bool)> {
        let since = crate::upstream::now_ms();
        let Conn {
            io,
            buf,
            read_size,
            answer_timer,
            ..
        } = self;
        let mut read = pin!(read_head(io, buf, read_size, method));
        let mut armed = false;
        // The read first: an answer already there never arms the timer.
        let result = poll_fn(|cx| match read.as_mut().poll(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => {
                armed = true;
                answer_timer
                    .poll(since, timeout, cx)
                    .map(|()| Err((ProtoError::Timeout, false)))
            }
        })
        .await;
        // Only a wait that armed its slot leaves a waker there.
        if armed {
            answer_timer.disarm();
        }
        result
    }

    /// A body from its temporary file, a chunk at a time; a chunk in the
    /// page cache (as one just written is) is read without a thread
    /// hand-off.
    async fn send_file(
        &mut self,
        file: &std::sync::Arc<std::fs::File>,
        len: u64,
        timeout: Duration,
    ) -> Result<(), ProtoError> {
        let mut body = crate::handler::static_files::FileBody::shared(file.clone(), 0, len);
        while let Some(chunk) = poll_fn(|cx| body.poll_chunk(cx)).await {
            let chunk = chunk.map_err(ProtoError::Spill)?;
            within(timeout, self.io.write_all(&chunk)).await?;
        }
        Ok(())
    }

    async fn stream_body(
        &mut self,
        body: &mut RequestBody,
        chunked: bool,
        timeout: Duration,
    ) -> Result<(), ProtoError> {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                if e.is::<super::pool::BodyTooLarge>() {
                    ProtoError::BodyTooLarge
                } else {
                    ProtoError::Client(e)
                }
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            if chunked {
                self.wbuf.clear();
                // Writing into a Vec cannot fail.
                let _ = write!(self.wbuf, "{:x}\r\n", data.len());
                self.wbuf.extend_from_slice(&data);
                self.wbuf.extend_from_slice(b"\r\n");
                within(timeout, self.io.write_all(&self.wbuf)).await?;
            } else {
                within(timeout, self.io.write_all(&data)).await?;
            }
        }
        if chunked {
            within(timeout, self.io.write_all(b"0\r\n\r\n")).await?;
        }
        Ok(())
    }
}

/// Read up to the final response head, skipping interim 1xx answers other
/// than 101. The error says whether any byte had arrived. Takes `Conn`'s
/// fields apart so that its timer can be polled beside it.
async fn read_head(
    io: &mut Stream,
    buf: &mut BytesMut,
    read_size: &mut usize,
    method: &Method,
) -> Result<Head, (ProtoError, bool)> {
    let mut answered = false;
    loop {
        if !buf.is_empty() {
            answered = true;
            match parse_head(buf, method) {
                Ok(Some(head))
                    if head.status.is_informational()
                        && head.status != StatusCode::SWITCHING_PROTOCOLS =>
                {
                    continue
                }
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(e) => return Err((e, true)),
            }
        }
        let filled = poll_fn(|cx| crate::http::decode::poll_fill(io, buf, read_size, cx)).await;
        match filled {
            Ok(0) if answered => {
                return Err((
                    ProtoError::Invalid("connection closed inside the head"),
                    true,
                ))
            }
            Ok(0) => return Err((ProtoError::Closed, false)),
            Ok(_) => {}
            Err(e) => return Err((e.into(), answered)),
        }
    }
}

/// A write to the server, which must make progress within `timeout`. A
/// write that completes at once never touches the timer wheel (tokio polls
/// the write before the timer).
async fn within(
    timeout: Duration,
    write: impl Future<Output = io::Result<()>>,
) -> Result<(), ProtoError> {
    match tokio::time::timeout(timeout, write).await {
        Ok(r) => r.map_err(ProtoError::from),
        Err(_) => Err(ProtoError::Timeout),
    }
}

mod encode;
mod parse;
#[cfg(test)]
mod tests;

use encode::encode_head;
use parse::parse_head;
pub use parse::{is_hop_by_hop, strip_fixed_hop_by_hop, strip_hop_by_hop};
