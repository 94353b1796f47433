//! A route's `compress`: an upstream's answer gzipped for a client that
//! accepts gzip, as nginx's `gzip on` (with `gzip_vary`) or Caddy's
//! `encode gzip` would. Only text-like types are compressed, never an
//! answer that is already encoded, a range, a stream of events, or one the
//! upstream marked `no-transform`.

use crate::body::BoxError;
use crate::handler::{has_token, Resp};
use crate::upstream::body::UpstreamBody;
use bytes::Bytes;
use gzip::Gzip;
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use http_body::{Body, Frame};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Smaller answers are sent as they are: gzip's header and trailer alone
/// are 18 bytes, and a small answer fits one packet either way.
pub const MIN_LENGTH: u64 = 256;

/// Whether the request lets its answer be gzipped: not HEAD (its fields
/// would have to say what a GET's body would be), and gzip accepted.
pub fn wanted(parts: &http::request::Parts) -> bool {
    use crate::handler::static_files::{accepted_codings, Coding};
    parts.method != Method::HEAD
        && accepted_codings(parts.headers.get(header::ACCEPT_ENCODING))
            .contains(&Some(Coding::Gzip))
}

/// Gzip `resp` (an upstream's answer to a request `wanted` approved) when
/// its status, type, coding and length allow; its fields then say so.
pub fn apply(resp: &mut Resp) {
    let st = resp.status();
    if st.is_informational()
        || st == StatusCode::NO_CONTENT
        || st == StatusCode::PARTIAL_CONTENT
        || st == StatusCode::NOT_MODIFIED
        || resp
            .body()
            .size_hint()
            .exact()
            .is_some_and(|n| n < MIN_LENGTH)
    {
        return;
    }
    let Some(fields) = resp.body().fields() else {
        return;
    };
    let mut compressible = false;
    let mut etag = None;
    let mut vary = Vec::new();
    let mut ranges = false;
    for (name, value) in fields.iter() {
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("content-encoding") || is("content-range") {
            return;
        } else if is("cache-control") {
            if has_token(value, b"no-transform") {
                return;
            }
        } else if is("content-type") {
            compressible = compressible_type(value);
        } else if is("etag") {
            etag = Some(value.to_vec());
        } else if is("vary") {
            vary.push(value.to_vec());
        } else if is("accept-ranges") {
            ranges = true;
        }
    }
    if !compressible || !resp.body_mut().gzip() {
        return;
    }
    let h = resp.headers_mut();
    h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    if let Some(v) = merged_vary(&vary) {
        h.insert(header::VARY, v);
    }
    // The compressed bytes are not the upstream's: a strong validator
    // would promise byte-for-byte sameness (nginx weakens it too).
    if let Some(v) = etag
        .filter(|e| !e.starts_with(b"W/"))
        .and_then(|e| HeaderValue::from_bytes(&[b"W/", &e[..]].concat()).ok())
    {
        h.insert(header::ETAG, v);
    }
    // Ranges of the upstream's bytes are not ranges of these.
    if ranges {
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("none"));
    }
}

/// Text, and the structured text types that compress as well: JSON,
/// JavaScript, XML and SVG. Not `text/event-stream`: gzip holds bytes back
/// until it has more, and an event must arrive when it is sent.
fn compressible_type(value: &[u8]) -> bool {
    let Ok(v) = std::str::from_utf8(value) else {
        return false;
    };
    let essence = v
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "text/event-stream" {
        return false;
    }
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/javascript"
                | "application/x-javascript"
                | "application/ecmascript"
                | "application/xml"
                | "application/wasm"
        )
}

/// The upstream's Vary with Accept-Encoding in it; `None` when it is there
/// already (or `*`, which covers it).
fn merged_vary(vary: &[Vec<u8>]) -> Option<HeaderValue> {
    if vary
        .iter()
        .any(|v| has_token(v, b"accept-encoding") || has_token(v, b"*"))
    {
        return None;
    }
    let mut out = Vec::new();
    for v in vary.iter().filter(|v| !v.trim_ascii().is_empty()) {
        out.extend_from_slice(v.trim_ascii());
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(b"Accept-Encoding");
    HeaderValue::from_bytes(&out).ok()
}

/// The upstream's body through a gzip encoder. What the encoder holds is
/// flushed out (a sync flush) whenever the upstream has nothing more ready,
/// so a response that streams (a long poll, a slow page) streams
/// compressed; while more is ready, it is compressed on without a flush,
/// which would cost ratio and time at each of the body's reads.
pub struct GzipBody {
    inner: UpstreamBody,
    enc: Gzip,
    /// Input written since the last flush.
    unflushed: bool,
    /// The upstream's trailers, held until the gzip trailer is out.
    trailers: Option<http::HeaderMap>,
}

/// Compressed output handed on without waiting for a flush once it is this
/// large.
const OUT_CHUNK: usize = 16 * 1024;

impl GzipBody {
    pub fn new(inner: UpstreamBody) -> Self {
        GzipBody {
            inner,
            enc: Gzip::new(),
            unflushed: false,
            trailers: None,
        }
    }

    pub fn is_end_stream(&self) -> bool {
        self.enc.is_finished() && self.trailers.is_none()
    }

    pub fn inner_mut(&mut self) -> &mut UpstreamBody {
        &mut self.inner
    }
}

impl Body for GzipBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.enc.is_finished() {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => {
                    if this.unflushed {
                        this.unflushed = false;
                        this.enc.flush()?;
                        let out = this.enc.take();
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out.into()))));
                        }
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(f))) => f,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    let tail = this.enc.finish()?;
                    return Poll::Ready(Some(Ok(Frame::data(tail.into()))));
                }
            };
            match frame.into_data() {
                Ok(data) => {
                    this.enc.write(&data)?;
                    this.unflushed = true;
                    if this.enc.pending() >= OUT_CHUNK {
                        return Poll::Ready(Some(Ok(Frame::data(this.enc.take().into()))));
                    }
                }
                Err(frame) => {
                    this.trailers = frame.into_trailers().ok();
                    let tail = this.enc.finish()?;
                    return Poll::Ready(Some(Ok(Frame::data(tail.into()))));
                }
            }
        }
    }
}

mod gzip;
#[cfg(test)]
mod tests;
