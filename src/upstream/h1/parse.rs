//! Reading a response head: status, end-to-end headers, how the body is
//! framed and whether the connection may be reused; and which headers are
//! hop-by-hop, for requests and responses alike.

use super::{Framing, Head, ProtoError, MAX_HEAD, MAX_HEADERS};
use crate::http::decode::{HeadFraming, Length};
use crate::http::raw;
use bytes::{Buf, BytesMut};
use http::header::{self, HeaderMap, HeaderName};
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
        // The same bound whether the head came in one read or in many.
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => {
            return Err(ProtoError::Invalid("response head too large"))
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(ProtoError::Invalid("response head too large"))
        }
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
    // First what the fields say about framing and the connection, then the
    // block of those passed on (see `http::raw`): no header map is built.
    let mut facts = HeadFraming::default();
    for h in res.headers.iter() {
        facts.note(h.name, h.value);
    }
    let HeadFraming {
        conn,
        length,
        chunked,
    } = facts;
    let mut keep_alive = match version {
        Version::HTTP_10 => conn.keep_alive && !conn.close,
        _ => !conn.close,
    };
    let bodiless = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        Framing::Empty
    } else if let Some(only_chunked) = chunked {
        if !only_chunked {
            return Err(ProtoError::Invalid("unsupported Transfer-Encoding"));
        }
        // Framed two ways (with a length too), or by a coding HTTP/1.0 does
        // not have: read by the chunks, but what follows them could be
        // where the server thinks the next answer starts (RFC 9112 §6.1:
        // close after such a message).
        if !matches!(length, Length::Absent) || version == Version::HTTP_10 {
            keep_alive = false;
        }
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
    // The values of Connection that name other fields make them hop-by-hop.
    let listed: Vec<&[u8]> = if conn.others && !upgrade {
        res.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .collect()
    } else {
        Vec::new()
    };
    let mut fields = raw::Builder::with_capacity(len);
    let mut read_ahead = true;
    for h in res.headers.iter() {
        let n = h.name;
        if n.len() == X_ACCEL_BUFFERING.len() && n.eq_ignore_ascii_case(X_ACCEL_BUFFERING) {
            read_ahead &= !h.value.trim_ascii().eq_ignore_ascii_case(b"no");
            continue;
        }
        // Hop-by-hop fields end here, except on a 101 (they are its
        // point). The length is the client connection's to state, from the
        // body, unless the answer has none (HEAD, 304: it is the GET's);
        // with chunked it must not reach the client at all (RFC 9112
        // §6.3: Transfer-Encoding overrides Content-Length).
        let drop = (!upgrade
            && (is_hop_by_hop_name(n)
                || listed.iter().any(|t| t.eq_ignore_ascii_case(n.as_bytes()))))
            || (!bodiless && n.eq_ignore_ascii_case("content-length"));
        if !drop {
            fields.push(n, h.value);
        }
    }
    buf.advance(len);
    Ok(Some(Head {
        status,
        version,
        fields: fields.finish(),
        framing,
        keep_alive,
        read_ahead,
    }))
}

/// nginx's field by which an app asks that an answer go at its client's
/// pace (events, progress), kept from the client as nginx keeps it.
const X_ACCEL_BUFFERING: &str = "x-accel-buffering";

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

/// Remove the fixed set of hop-by-hop headers only: for a request, whose
/// Connection-named fields the HTTP/1 server took out as it read the head
/// (`http::h1::request`), before the proxy added its own.
pub fn strip_fixed_hop_by_hop(h: &mut HeaderMap) {
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
}

/// Fields that concern one connection only, never passed on.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    // An h2c upgrade's settings (RFC 7540 §3.2.1): for this hop only.
    "http2-settings",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
];

/// Whether a name, as it came (any case), is hop-by-hop.
fn is_hop_by_hop_name(n: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(n))
}

pub fn is_hop_by_hop(n: &HeaderName) -> bool {
    // Header names are lower-case already.
    HOP_BY_HOP.contains(&n.as_str())
}
