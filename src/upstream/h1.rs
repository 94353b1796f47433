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
use crate::upstream::pool::RequestBody;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use http_body_util::BodyExt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

/// The most a response head may take; a bigger one is a broken upstream.
const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in a response head (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// Reads start this big and double, up to `MAX_READ`, while they fill the
/// buffer: small answers cost little memory, big downloads few syscalls.
const MIN_READ: usize = 8 * 1024;
const MAX_READ: usize = 64 * 1024;
/// A body this small is written together with the head, in one syscall.
const INLINE_BODY: usize = 16 * 1024;

/// One connection to a server, with what was read but not yet consumed.
pub struct Conn {
    pub io: Stream,
    pub buf: BytesMut,
    wbuf: Vec<u8>,
    read_size: usize,
}

/// What to send after the head.
pub enum SendBody {
    None,
    /// Read whole beforehand; can be sent again.
    Full(Bytes),
    /// Streamed from the client; consumed once polled.
    Stream(RequestBody),
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
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The connection may carry another request once the body has ended.
    pub keep_alive: bool,
}

/// Why an exchange failed, and how far it got: what decides whether the
/// request may be tried again.
#[derive(Debug)]
pub struct Error {
    pub error: ProtoError,
    /// Some byte of the request may have reached the server.
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
    #[error("invalid response from upstream: {0}")]
    Invalid(&'static str),
    #[error("request body larger than max_body")]
    BodyTooLarge,
    #[error("request body could not be read: {0}")]
    Client(BoxError),
}

impl Conn {
    pub fn new(io: Stream) -> Self {
        Conn {
            io,
            buf: BytesMut::new(),
            wbuf: Vec::new(),
            read_size: MIN_READ,
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
        if self.buf.capacity() - self.buf.len() < MIN_READ / 4 {
            self.buf.reserve(self.read_size);
        }
        let spare = self.buf.capacity() - self.buf.len();
        let mut rb = ReadBuf::uninit(self.buf.spare_capacity_mut());
        match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                // SAFETY: poll_read initialised the first n bytes of the
                // spare capacity it was given.
                unsafe { self.buf.set_len(self.buf.len() + n) };
                if n == spare && self.read_size < MAX_READ {
                    self.read_size *= 2;
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Send a request and read its response head. `parts` is only read, so
    /// the same request can be sent again when this fails early.
    pub async fn exchange(
        &mut self,
        parts: &http::request::Parts,
        body: &mut SendBody,
    ) -> Result<Head, Error> {
        let chunked = encode_head(&mut self.wbuf, parts, body);
        if let SendBody::Full(b) = body {
            if b.len() <= INLINE_BODY {
                self.wbuf.extend_from_slice(b);
            }
        }
        let fail = |error, sent, body_used| Error {
            error,
            sent,
            body_used,
            answered: false,
        };
        if let Err(e) = self.io.write_all(&self.wbuf).await {
            return Err(fail(e.into(), true, false));
        }
        let mut body_used = false;
        let sent_body = match body {
            SendBody::None => Ok(()),
            SendBody::Full(b) if b.len() <= INLINE_BODY => Ok(()),
            SendBody::Full(b) => self.io.write_all(b).await.map_err(ProtoError::from),
            SendBody::Stream(b) => {
                body_used = true;
                self.stream_body(b, chunked).await
            }
        };
        match sent_body {
            Ok(()) => {}
            Err(e @ (ProtoError::BodyTooLarge | ProtoError::Client(_))) => {
                return Err(fail(e, true, true))
            }
            // The server may have answered early (a 413, say) and closed:
            // its answer is worth more than the write error.
            Err(e) => {
                return match self.read_head(&parts.method).await {
                    Ok(mut head) => {
                        head.keep_alive = false;
                        Ok(head)
                    }
                    Err(_) => Err(fail(e, true, body_used)),
                }
            }
        }
        self.read_head(&parts.method)
            .await
            .map_err(|(error, answered)| Error {
                error,
                sent: true,
                body_used,
                answered,
            })
    }

    async fn stream_body(
        &mut self,
        body: &mut RequestBody,
        chunked: bool,
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
                self.wbuf
                    .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                self.wbuf.extend_from_slice(&data);
                self.wbuf.extend_from_slice(b"\r\n");
                self.io.write_all(&self.wbuf).await?;
            } else {
                self.io.write_all(&data).await?;
            }
        }
        if chunked {
            self.io.write_all(b"0\r\n\r\n").await?;
        }
        Ok(())
    }

    /// Read up to the final response head, skipping interim 1xx answers
    /// other than 101. The error says whether any byte had arrived.
    async fn read_head(&mut self, method: &Method) -> Result<Head, (ProtoError, bool)> {
        let mut answered = false;
        loop {
            if !self.buf.is_empty() {
                answered = true;
                match parse_head(&mut self.buf, method) {
                    Ok(Some(head))
                        if head.status.is_informational()
                            && head.status != StatusCode::SWITCHING_PROTOCOLS =>
                    {
                        continue
                    }
                    Ok(Some(head)) => return Ok(head),
                    Ok(None) if self.buf.len() >= MAX_HEAD => {
                        return Err((ProtoError::Invalid("response head too large"), true))
                    }
                    Ok(None) => {}
                    Err(e) => return Err((e, true)),
                }
            }
            match self.fill().await {
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
}

/// Write the request line and headers into `out`, with the body's framing.
/// Returns whether the body is to be sent chunked.
fn encode_head(out: &mut Vec<u8>, parts: &http::request::Parts, body: &SendBody) -> bool {
    out.clear();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        // The client's `Expect: 100-continue` was answered on our side.
        if name == header::EXPECT {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let has_length = parts.headers.contains_key(header::CONTENT_LENGTH);
    let chunked = matches!(body, SendBody::Stream(_)) && !has_length;
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    } else if !has_length && matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
        let len = match body {
            SendBody::Full(b) => b.len(),
            _ => 0,
        };
        out.extend_from_slice(format!("content-length: {len}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    chunked
}

/// Parse a response head at the start of `buf` and consume it; `None` while
/// it is incomplete.
fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, ProtoError> {
    // Uninitialised: zeroing 100 slots cost more than the whole parse.
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ProtoError::Invalid("too many header fields"))
        }
        Err(_) => return Err(ProtoError::Invalid("malformed head")),
    };
    let status = res
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(ProtoError::Invalid("bad status code"))?;
    let version = if res.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let upgrade = status == StatusCode::SWITCHING_PROTOCOLS;
    // Header values become slices of one copy of the head, not a copy each.
    let bytes = Bytes::copy_from_slice(&buf[..len]);
    let base = buf.as_ptr() as usize;
    let mut headers = HeaderMap::with_capacity(res.headers.len());
    let mut conn = Tokens::default();
    let mut length = Length::Absent;
    let mut chunked = None;
    for h in res.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| ProtoError::Invalid("bad header name"))?;
        let at = h.value.as_ptr() as usize - base;
        let value = HeaderValue::from_maybe_shared(bytes.slice(at..at + h.value.len()))
            .map_err(|_| ProtoError::Invalid("bad header value"))?;
        if name == header::CONNECTION {
            conn.add(h.value);
        }
        if name == header::CONTENT_LENGTH {
            length = length.add(h.value);
        } else if name == header::TRANSFER_ENCODING {
            // Only chunked is ever used; like nginx, anything else (gzip as
            // a transfer coding, or chunked twice) is an error rather than
            // bytes the client could not decode.
            let only_chunked = h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
            chunked = Some(only_chunked && chunked.is_none());
        }
        // Hop-by-hop headers end here, except on a 101 (they are its point).
        if upgrade || !is_hop_by_hop(&name) {
            headers.append(name, value);
        }
    }
    if conn.others && !upgrade {
        // Headers the Connection header names are hop-by-hop too.
        for h in res.headers.iter() {
            if h.name.eq_ignore_ascii_case("connection") {
                for t in h.value.split(|&b| b == b',') {
                    if let Ok(n) = HeaderName::from_bytes(t.trim_ascii()) {
                        headers.remove(n);
                    }
                }
            }
        }
    }
    buf.advance(len);

    let mut keep_alive = match version {
        Version::HTTP_10 => conn.keep_alive && !conn.close,
        _ => !conn.close,
    };
    let framing = if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else if let Some(only_chunked) = chunked {
        if !only_chunked {
            return Err(ProtoError::Invalid("unsupported Transfer-Encoding"));
        }
        // Transfer-Encoding overrides any Content-Length (RFC 9112 §6.3),
        // which must not reach the client then.
        headers.remove(header::CONTENT_LENGTH);
        Framing::Chunked
    } else {
        match length {
            Length::Absent => {
                keep_alive = false;
                Framing::UntilClose
            }
            Length::Is(0) => Framing::Empty,
            Length::Is(n) => Framing::Length(n),
            Length::Bad => return Err(ProtoError::Invalid("bad Content-Length")),
        }
    };
    Ok(Some(Head {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }))
}

/// The Connection header's tokens that matter here.
#[derive(Default)]
struct Tokens {
    close: bool,
    keep_alive: bool,
    /// Tokens naming other headers.
    others: bool,
}

impl Tokens {
    fn add(&mut self, value: &[u8]) {
        for t in value.split(|&b| b == b',') {
            let t = t.trim_ascii();
            let close = t.eq_ignore_ascii_case(b"close");
            let keep_alive = t.eq_ignore_ascii_case(b"keep-alive");
            self.close |= close;
            self.keep_alive |= keep_alive;
            self.others |= !(close || keep_alive || t.is_empty());
        }
    }
}

/// Content-Length fields: all must agree on one number of digits.
#[derive(Clone, Copy)]
enum Length {
    Absent,
    Is(u64),
    Bad,
}

impl Length {
    fn add(self, value: &[u8]) -> Length {
        let mut acc = self;
        for part in value.split(|&b| b == b',') {
            let part = part.trim_ascii();
            let n = if !part.is_empty() && part.len() <= 19 && part.iter().all(u8::is_ascii_digit) {
                part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'))
            } else {
                return Length::Bad;
            };
            acc = match acc {
                Length::Absent => Length::Is(n),
                Length::Is(m) if m == n => Length::Is(m),
                _ => return Length::Bad,
            };
        }
        acc
    }
}

/// Remove hop-by-hop headers: the fixed set and whatever Connection names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most requests carry none: one pass over the names costs less than a
    // hashed lookup for each of the nine. When some are there (nginx and
    // gunicorn answer with `Connection: keep-alive`), only the names present
    // are looked up again to be removed.
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
    let listed: Vec<&str> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .collect();
    let doomed: Vec<HeaderName> = h
        .keys()
        .filter(|n| is_hop_by_hop(n) || listed.iter().any(|t| t.eq_ignore_ascii_case(n.as_str())))
        .cloned()
        .collect();
    for n in doomed {
        h.remove(n);
    }
}

pub fn is_hop_by_hop(n: &HeaderName) -> bool {
    n == header::CONNECTION
        || n == KEEP_ALIVE
        || n == header::TE
        || n == header::TRAILER
        || n == header::TRANSFER_ENCODING
        || n == header::UPGRADE
        || n == header::PROXY_AUTHENTICATE
        || n == header::PROXY_AUTHORIZATION
        || n == PROXY_CONNECTION
}

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

#[cfg(test)]
mod tests;
