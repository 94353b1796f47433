//! Message bodies framed by Content-Length or chunked coding (RFC 9112 §6,
//! §7.1), decoded from a connection's read buffer. Shared by the client
//! connection (request bodies) and the upstream client (response bodies).

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// A chunk-size line or a trailer field longer than this is not HTTP.
const MAX_LINE: usize = 4096;
/// All trailer fields together (dropped: they are not forwarded).
const MAX_TRAILERS: usize = 16 * 1024;

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

#[derive(Debug, Clone, Copy)]
pub struct Decoder {
    state: State,
    trailer_bytes: usize,
}

pub enum Step {
    Data(Bytes),
    /// Nothing more can be decoded from the bytes at hand.
    NeedMore,
    Done,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid chunked body: {0}")]
pub struct ChunkError(pub &'static str);

impl Decoder {
    pub fn length(n: u64) -> Self {
        Self::new(if n == 0 {
            State::Done
        } else {
            State::Length(n)
        })
    }
    pub fn chunked() -> Self {
        Self::new(State::ChunkSize)
    }
    pub fn until_close() -> Self {
        Self::new(State::UntilClose)
    }
    pub fn done() -> Self {
        Self::new(State::Done)
    }
    fn new(state: State) -> Self {
        Decoder {
            state,
            trailer_bytes: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }
    pub fn is_until_close(&self) -> bool {
        self.state == State::UntilClose
    }
    pub fn finish(&mut self) {
        self.state = State::Done;
    }
    /// The bytes still to come, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Done => Some(0),
            State::Length(n) => Some(n),
            _ => None,
        }
    }

    /// The bytes certain to come still: the rest of a length, or of the
    /// chunk under way (its size line is a promise too).
    pub fn at_least(&self) -> u64 {
        match self.state {
            State::Length(n) | State::ChunkData(n) => n,
            _ => 0,
        }
    }

    /// Advance on the bytes in `buf`. With `data` false, stops before handing
    /// out body bytes: used to notice the end without waiting for more.
    pub fn step(&mut self, buf: &mut BytesMut, data: bool) -> Result<Step, ChunkError> {
        loop {
            match self.state {
                State::Done => return Ok(Step::Done),
                State::Length(0) => {
                    self.state = State::Done;
                    return Ok(Step::Done);
                }
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
                        // httparse takes any byte in an extension. A bare
                        // LF there ends the line for a server that reads
                        // lines by LF, which would then see other chunks
                        // than we do: refused, as any control byte.
                        if buf[..used - 2].iter().any(|&b| is_ctl(b)) {
                            return Err(ChunkError("control byte in a chunk extension"));
                        }
                        buf.advance(used);
                        self.state = if size == 0 {
                            State::Trailers
                        } else {
                            State::ChunkData(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_LINE => {
                        return Err(ChunkError("chunk size line too long"))
                    }
                    Ok(httparse::Status::Partial) => return Ok(Step::NeedMore),
                    Err(_) => return Err(ChunkError("bad chunk size")),
                },
                State::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ChunkError("chunk not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
                        if buf.len() > MAX_LINE {
                            return Err(ChunkError("trailer line too long"));
                        }
                        return Ok(Step::NeedMore);
                    };
                    if eol > 0 && !is_field_line(&buf[..eol]) {
                        // Trailers are dropped, but held to the head's rules
                        // (no obs-fold, a name and a colon): a server that
                        // reads them differently must not find a request
                        // in them.
                        return Err(ChunkError("bad trailer field"));
                    }
                    buf.advance(eol + 2);
                    if eol == 0 {
                        self.state = State::Done;
                        return Ok(Step::Done);
                    }
                    self.trailer_bytes += eol + 2;
                    if self.trailer_bytes > MAX_TRAILERS {
                        return Err(ChunkError("trailers too large"));
                    }
                }
            }
        }
    }
}

/// A control byte other than HTAB (CR and LF included).
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// `name: value` that the `http` crate takes as a field, as the head's
/// fields are: a token for a name and no control byte in the value, so
/// not a continuation (obs-fold) and no bare LF inside.
fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    HeaderName::from_bytes(&line[..colon]).is_ok()
        && HeaderValue::from_bytes(&line[colon + 1..]).is_ok()
}

/// What a head's fields say about the body's framing and the connection,
/// gathered the same way from requests and from upstream answers.
#[derive(Default)]
pub struct HeadFraming {
    pub conn: Tokens,
    pub length: Length,
    /// Transfer-Encoding: `Some(true)` when it is exactly one `chunked`
    /// (like nginx, anything else is refused rather than passed on).
    pub chunked: Option<bool>,
}

impl HeadFraming {
    /// Note a field if it is Connection, Content-Length or
    /// Transfer-Encoding (its name in any case).
    #[inline]
    pub fn note(&mut self, name: &str, value: &[u8]) {
        // By length first: most fields are none of the three.
        match name.len() {
            10 if name.eq_ignore_ascii_case("connection") => self.conn.add(value),
            14 if name.eq_ignore_ascii_case("content-length") => {
                self.length = self.length.with(value)
            }
            17 if name.eq_ignore_ascii_case("transfer-encoding") => {
                let only_chunked = value.trim_ascii().eq_ignore_ascii_case(b"chunked");
                self.chunked = Some(only_chunked && self.chunked.is_none());
            }
            _ => {}
        }
    }
}

/// A parsed head's fields as a header map, with what they say about the
/// body's framing and the connection, gathered in the same pass.
pub struct Fields {
    pub headers: HeaderMap,
    pub framing: HeadFraming,
    /// The copy of the head the values point into, and where the parsed
    /// buffer started, for slicing more of it (a request's target).
    head: Bytes,
    base: usize,
}

impl Fields {
    /// `s`, a slice of the parsed buffer, as a slice of the head's copy.
    pub fn share(&self, s: &[u8]) -> Bytes {
        let at = s.as_ptr() as usize - self.base;
        self.head.slice(at..at + s.len())
    }
}

/// Build the header map of a head httparse parsed from `buf[..len]`. Names
/// and values become slices of one copy of the head, not a copy each.
/// `room` is capacity for fields added later (a map that grows rehashes
/// every entry); `keep` sees every field and says whether it goes in the
/// map. The error is which part was invalid.
pub fn fields(
    parsed: &[httparse::Header<'_>],
    buf: &[u8],
    len: usize,
    room: usize,
    mut keep: impl FnMut(&HeaderName, &[u8]) -> bool,
) -> Result<Fields, &'static str> {
    let mut f = Fields {
        headers: HeaderMap::with_capacity(parsed.len() + room),
        framing: HeadFraming::default(),
        head: Bytes::copy_from_slice(&buf[..len]),
        base: buf.as_ptr() as usize,
    };
    for h in parsed {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| "bad header name")?;
        let value =
            HeaderValue::from_maybe_shared(f.share(h.value)).map_err(|_| "bad header value")?;
        f.framing.note(h.name, h.value);
        if keep(&name, h.value) {
            f.headers.append(name, value);
        }
    }
    Ok(f)
}

/// The Connection header's tokens that matter here.
#[derive(Default)]
pub struct Tokens {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// Tokens naming other headers.
    pub others: bool,
}

impl Tokens {
    pub fn add(&mut self, value: &[u8]) {
        for t in value.split(|&b| b == b',') {
            let t = t.trim_ascii();
            let close = t.eq_ignore_ascii_case(b"close");
            let keep_alive = t.eq_ignore_ascii_case(b"keep-alive");
            self.close |= close;
            self.keep_alive |= keep_alive;
            self.upgrade |= t.eq_ignore_ascii_case(b"upgrade");
            self.others |= !(close || keep_alive || t.is_empty());
        }
    }
}

/// Content-Length fields: all must agree on one number of digits.
#[derive(Clone, Copy, Default)]
pub enum Length {
    #[default]
    Absent,
    Is(u64),
    Bad,
}

impl Length {
    pub fn with(self, value: &[u8]) -> Length {
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

/// Reads start this big and double, up to `MAX_READ`, while they fill the
/// buffer: small messages cost little memory, big bodies few syscalls.
pub const MIN_READ: usize = 8 * 1024;
const MAX_READ: usize = 64 * 1024;

/// Read more into `buf`, growing reads while they fill it. `Ok(0)` is the
/// end of the stream.
pub fn poll_fill<R: AsyncRead + Unpin + ?Sized>(
    io: &mut R,
    buf: &mut BytesMut,
    read_size: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < MIN_READ / 4 {
        buf.reserve(*read_size);
    }
    let spare = buf.capacity() - buf.len();
    let mut rb = ReadBuf::uninit(buf.spare_capacity_mut());
    match Pin::new(io).poll_read(cx, &mut rb) {
        Poll::Ready(Ok(())) => {
            let n = rb.filled().len();
            // SAFETY: poll_read initialised the first n bytes of the spare
            // capacity it was given.
            unsafe { buf.set_len(buf.len() + n) };
            if n == spare && *read_size < MAX_READ {
                *read_size *= 2;
            }
            Poll::Ready(Ok(n))
        }
        other => other.map_ok(|()| 0),
    }
}
