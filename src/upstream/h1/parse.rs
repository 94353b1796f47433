//! Reading a response head: status, end-to-end headers, how the body is
//! framed and whether the connection may be reused; and which headers are
//! hop-by-hop, for requests and responses alike.

use super::{Framing, Head, ProtoError, MAX_HEADERS};
use crate::http::decode::{fields, Fields, Length};
use bytes::{Buf, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

/// Parse a response head at the start of `buf` and consume it; `None` while
/// it is incomplete.
pub(super) fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, ProtoError> {
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
    // Room for the fields added on the way out (X-Request-Id, HSTS, a
    // route's headers). Hop-by-hop headers end here, except on a 101 (they
    // are its point).
    let Fields {
        mut headers,
        conn,
        length,
        chunked,
        ..
    } = fields(res.headers, buf, len, 4, |name, _| {
        upgrade || !is_hop_by_hop(name)
    })
    .map_err(ProtoError::Invalid)?;
    if conn.others && !upgrade {
        // Headers the Connection header names are hop-by-hop too: put it
        // back and let the rule shared with requests remove them with it.
        for h in res.headers.iter() {
            if h.name.eq_ignore_ascii_case("connection") {
                if let Ok(v) = HeaderValue::from_bytes(h.value) {
                    headers.append(header::CONNECTION, v);
                }
            }
        }
        strip_hop_by_hop(&mut headers);
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
