//! The one response body type the server sends. An enum rather than a boxed
//! trait object so the common cases (a fixed body, an upstream's streamed
//! body) cost no allocation; the access log line is written when the body is
//! finished or dropped, so it carries the real byte count and duration.

use crate::access_log::Entry;
use crate::handler::static_files::FileBody;
use crate::http::RawFields;
use crate::upstream::body::UpstreamBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub struct ProxyBody {
    kind: Kind,
    log: Option<Box<Entry>>,
    /// An upstream answer's header fields, passed on as they came; the
    /// response's own header map holds only what the proxy sets.
    fields: Option<RawFields>,
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
    /// A static file: a plain-TCP connection may send it without copying.
    File(FileBody),
    /// An upstream's body, gzipped on the way (a route's `compress`).
    /// Boxed: inline, the encoder would make every body larger.
    Gzip(Box<crate::handler::compress::GzipBody>),
}

impl ProxyBody {
    pub fn empty() -> Self {
        Self {
            kind: Kind::Empty,
            log: None,
            fields: None,
        }
    }
    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        let kind = if b.is_empty() {
            Kind::Empty
        } else {
            Kind::Full(Some(b))
        };
        Self {
            kind,
            log: None,
            fields: None,
        }
    }
    pub fn upstream(b: UpstreamBody) -> Self {
        Self {
            kind: Kind::Upstream(b),
            log: None,
            fields: None,
        }
    }
    pub fn file(f: FileBody) -> Self {
        Self {
            kind: Kind::File(f),
            log: None,
            fields: None,
        }
    }
    /// Gzip an upstream's body as it streams; other bodies stay as they
    /// are. False when there was nothing to compress.
    pub fn gzip(&mut self) -> bool {
        match std::mem::replace(&mut self.kind, Kind::Empty) {
            Kind::Upstream(b) => {
                self.kind = Kind::Gzip(Box::new(crate::handler::compress::GzipBody::new(b)));
                true
            }
            other => {
                self.kind = other;
                false
            }
        }
    }
    /// The client could not take the last piece at once: an upstream's
    /// body is read ahead of it from now on (`UpstreamBody::client_stalled`).
    pub fn client_stalled(&mut self) {
        match &mut self.kind {
            Kind::Upstream(b) => b.client_stalled(),
            Kind::Gzip(g) => g.inner_mut().client_stalled(),
            _ => {}
        }
    }
    /// The file behind this body, for a connection that sends it itself.
    pub fn as_file(&mut self) -> Option<&mut FileBody> {
        match &mut self.kind {
            Kind::File(f) => Some(f),
            _ => None,
        }
    }
    /// Bytes the connection sent on this body's behalf (from `as_file`).
    pub fn count_sent(&mut self, n: u64) {
        if let Some(e) = self.log.as_mut() {
            e.bytes += n;
        }
    }
    /// Attach the access-log entry; it is emitted when the body ends.
    pub fn set_log(&mut self, entry: Box<Entry>) {
        self.log = Some(entry);
    }
    pub fn set_fields(&mut self, f: RawFields) {
        self.fields = Some(f);
    }
    pub fn fields(&self) -> Option<&RawFields> {
        self.fields.as_ref()
    }
    pub fn take_fields(&mut self) -> Option<RawFields> {
        self.fields.take()
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let res = match &mut this.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(b) => Pin::new(b).poll_frame(cx),
            Kind::File(f) => Pin::new(f).poll_frame(cx).map_err(Into::into),
            Kind::Gzip(g) => Pin::new(&mut **g).poll_frame(cx),
        };
        if let (Some(entry), Poll::Ready(Some(Ok(frame)))) = (this.log.as_mut(), &res) {
            if let Some(d) = frame.data_ref() {
                entry.bytes += d.len() as u64;
            }
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(b) => b.is_none(),
            Kind::Upstream(b) => b.is_end_stream(),
            Kind::File(f) => f.is_end_stream(),
            Kind::Gzip(g) => g.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(b) => b.size_hint(),
            Kind::File(f) => f.size_hint(),
            // Known only once it is all compressed.
            Kind::Gzip(_) => SizeHint::default(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Some(entry) = self.log.take() {
            entry.emit();
        }
    }
}

/// A request's body as the handlers see it, whichever protocol carried it.
pub enum ReqBody {
    Empty,
    H1(crate::http::H1Body),
    H2(crate::http::H2Body),
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::H1(b) => Pin::new(b).poll_frame(cx),
            ReqBody::H2(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::H1(b) => b.is_end_stream(),
            ReqBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::H1(b) => b.size_hint(),
            ReqBody::H2(b) => b.size_hint(),
        }
    }
}
