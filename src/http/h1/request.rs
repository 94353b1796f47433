//! Reading a request head: method, target, headers, and what the framing
//! and Connection fields say about the body and the connection.

use crate::http::decode::{fields, Decoder, Fields, HeadFraming, Length};
use bytes::{Buf, BytesMut};
use http::header;
use http::{Method, StatusCode, Uri, Version};

/// The most header fields in a request head (hyper's limit too).
const MAX_HEADERS: usize = 100;

pub struct Head {
    pub parts: http::request::Parts,
    pub body: Decoder,
    /// The client allows another request on this connection.
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// `Connection: upgrade` with an `Upgrade` field (HTTP/1.1).
    pub upgrade: bool,
}

/// Why a head is refused; the connection is closed after the answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Reject(pub StatusCode, pub &'static str);

fn bad(why: &'static str) -> Reject {
    Reject(StatusCode::BAD_REQUEST, why)
}

/// Parse a request head at the start of `buf` and consume it; `None` while
/// it is incomplete (and within `max`).
pub fn parse(buf: &mut BytesMut, max: usize) -> Result<Option<Head>, Reject> {
    const TOO_LARGE: Reject = Reject(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "request header fields too large\n",
    );
    // Uninitialised: zeroing 100 slots costs more than the parse.
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .allow_multiple_spaces_in_request_line_delimiters(false)
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots);
    // Over the limit with the request line itself unfinished: the target
    // is what is too long (414, as nginx answers), not the fields.
    let too_large = |buf: &[u8]| {
        if buf.contains(&b'\n') {
            TOO_LARGE
        } else {
            Reject(StatusCode::URI_TOO_LONG, "request URI too long\n")
        }
    };
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) if n <= max => n,
        Ok(httparse::Status::Complete(_)) => return Err(too_large(&buf[..max])),
        Ok(httparse::Status::Partial) if buf.len() > max => return Err(too_large(&buf[..max])),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(TOO_LARGE),
        Err(httparse::Error::Version) => {
            return Err(Reject(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "http version not supported\n",
            ))
        }
        Err(_) => return Err(bad("bad request\n")),
    };
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // httparse only returns a complete head with method and path.
    let method = req.method.unwrap_or_default();
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| bad("bad method\n"))?;
    if method == Method::CONNECT {
        // A reverse proxy is no tunnel (nginx refuses it too).
        return Err(Reject(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n",
        ));
    }
    // Room for what the proxy adds (X-Forwarded-*, X-Request-Id).
    let mut hosts = 0;
    let mut host_ok = true;
    let mut lengths = 0;
    let mut expect_continue = false;
    let f = fields(req.headers, buf, len, 6, |name, value| {
        if name == header::HOST {
            hosts += 1;
            host_ok &= crate::router::valid_host(value);
        } else if name == header::CONTENT_LENGTH {
            // Two fields, or one holding a list: both count.
            lengths += 1 + value.iter().filter(|&&b| b == b',').count();
        } else if name == header::EXPECT {
            expect_continue = value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
        true
    })
    .map_err(|_| bad("bad header field\n"))?;
    let target = req.path.unwrap_or_default();
    let uri = Uri::from_maybe_shared(f.share(target.as_bytes()))
        .map_err(|_| bad("bad request target\n"))?;
    target_form(&uri)?;
    let Fields {
        mut headers,
        framing: HeadFraming {
            conn,
            length,
            chunked,
        },
        ..
    } = f;

    // RFC 9112 §3.2: one Host, and HTTP/1.1 must send it (nginx agrees).
    if hosts > 1 || (hosts == 0 && version == Version::HTTP_11) {
        return Err(bad("missing or duplicate Host header\n"));
    }
    if !host_ok {
        return Err(bad("bad Host header\n"));
    }
    let body = match (chunked, length) {
        // Both framings at once is how requests are smuggled past proxies.
        (Some(_), Length::Is(_) | Length::Bad) => {
            return Err(bad("both Content-Length and Transfer-Encoding\n"))
        }
        (Some(_), _) if version == Version::HTTP_10 => {
            return Err(bad("Transfer-Encoding in HTTP/1.0\n"))
        }
        (Some(true), _) => Decoder::chunked(),
        (Some(false), _) => {
            return Err(Reject(
                StatusCode::NOT_IMPLEMENTED,
                "transfer coding not implemented\n",
            ))
        }
        (None, Length::Is(n)) => {
            if lengths > 1 {
                // `5, 5` or two fields of 5 agree, so they are allowed
                // (RFC 9112 §6.3); one value goes on, and the limits
                // read that one.
                headers.insert(header::CONTENT_LENGTH, n.into());
            }
            Decoder::length(n)
        }
        (None, Length::Bad) => return Err(bad("bad Content-Length\n")),
        (None, Length::Absent) => Decoder::done(),
    };
    if conn.others {
        drop_connection_listed(&mut headers);
    }
    let keep_alive = match version {
        Version::HTTP_10 => conn.keep_alive && !conn.close,
        _ => !conn.close,
    };
    // Only WebSocket is joined end to end: an `h2c` upgrade would open an
    // HTTP/2 connection to the upstream that routes and policies never see.
    // Any other Upgrade goes on as a plain request, the field dropped.
    let upgrade = version == Version::HTTP_11
        && conn.upgrade
        && headers.get(header::UPGRADE).is_some_and(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|p| p.trim_ascii().eq_ignore_ascii_case(b"websocket"))
        });
    // Consumed only when accepted: a refused head stays for the log line.
    buf.advance(len);
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(Head {
        expect_continue: expect_continue && version == Version::HTTP_11 && !body.is_done(),
        parts,
        body,
        keep_alive,
        upgrade,
    }))
}

/// Origin-form (`/path`) is what a client sends to a server; absolute-form
/// (`http://host/path`) is allowed too (RFC 9112 §3.2.2), its host then
/// counts instead of Host's. Authority-form is CONNECT's only, and CONNECT
/// is refused. A target with userinfo (`http://user@host/`) is refused:
/// it would have to be dropped or passed on, and either can surprise.
fn target_form(uri: &Uri) -> Result<(), Reject> {
    match (uri.scheme_str(), uri.authority()) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(bad("authority-form target without CONNECT\n")),
        (Some(s), Some(a))
            if (s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"))
                && !a.as_str().contains('@')
                && crate::router::valid_host(a.as_str().as_bytes()) =>
        {
            Ok(())
        }
        _ => Err(bad("bad request target\n")),
    }
}

/// The fields that Connection names concern this hop only (RFC 9110
/// §7.6.1) and are dropped here, before the proxy adds fields of its own
/// that a client must not be able to name away. Host, Content-Length and
/// Upgrade stay: a client cannot make those hop-by-hop, and dropping one
/// would take away the upstream's Host or the body's length.
fn drop_connection_listed(h: &mut http::HeaderMap) {
    let listed: Vec<http::HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|t| http::HeaderName::from_bytes(t.trim_ascii()).ok())
        .filter(|n| ![header::HOST, header::CONTENT_LENGTH, header::UPGRADE].contains(n))
        .collect();
    for n in listed {
        h.remove(n);
    }
}
