//! The request head as the upstream reads it: the request line, the
//! client's fields as forwarded, and this hop's framing.

use super::SendBody;
use http::{header, Method};

/// Write the request line and headers into `out`, with the body's framing.
/// Returns whether the body is to be sent chunked.
pub(super) fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::request::Parts,
    body: &SendBody,
) -> bool {
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
        crate::http::raw::push_content_length(out, body.whole_len().unwrap_or(0));
    }
    out.extend_from_slice(b"\r\n");
    chunked
}
