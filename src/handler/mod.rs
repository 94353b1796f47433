//! What a route does with a request once it is allowed through.

pub mod compress;
pub mod error_page;
pub mod static_files;
pub mod upstream;

use crate::body::ProxyBody;
use crate::router::Route;
use http::header::{CONTENT_TYPE, LOCATION, VARY};
use http::{HeaderValue, Response, StatusCode};

pub type Resp = Response<ProxyBody>;

/// Is `token` one of the comma-separated items of a field's value?
pub(crate) fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// A route's `Vary` joins the answer's rather than replacing it, unlike its
/// other `headers`: an item dropped from Vary lets a cache hand one
/// client's variant to another (the app's `Cookie`, gzip's or
/// `precompressed`'s `Accept-Encoding`).
pub fn add_vary(resp: &mut Resp, add: &HeaderValue) {
    let set: Vec<&[u8]> = resp
        .headers()
        .get_all(VARY)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    // Set here by the proxy (which merged the app's), else the app's own.
    let have: Vec<&[u8]> = if set.is_empty() {
        resp.body()
            .fields()
            .into_iter()
            .flat_map(|f| f.iter())
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"vary"))
            .map(|(_, v)| v)
            .collect()
    } else {
        set
    };
    let mut out = add.as_bytes().trim_ascii().to_vec();
    for item in have.iter().flat_map(|v| v.split(|&b| b == b',')) {
        let item = item.trim_ascii();
        if !item.is_empty() && !has_token(&out, item) {
            out.extend_from_slice(b", ");
            out.extend_from_slice(item);
        }
    }
    // Every piece was a valid field value already.
    if let Ok(v) = HeaderValue::from_bytes(&out) {
        resp.headers_mut().insert(VARY, v);
    }
}

pub fn text(status: StatusCode, body: &'static str) -> Resp {
    let mut r = Response::new(ProxyBody::full(body));
    *r.status_mut() = status;
    // Only the proxy's own answers get `error_pages` (a box, on errors alone).
    r.extensions_mut().insert(error_page::Own);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub fn respond(status: StatusCode, body: &bytes::Bytes, ct: &HeaderValue, head: bool) -> Resp {
    let len = body.len();
    let mut r = Response::new(if head {
        ProxyBody::empty()
    } else {
        ProxyBody::full(body.clone())
    });
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, ct.clone());
    if head {
        r.headers_mut()
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    r
}

/// A configured redirect. `{uri}` in the target stands for the request's path
/// and query, `{rest}` for the path after the route prefix.
pub fn redirect(to: &str, status: StatusCode, route: &Route, uri: &http::Uri) -> Resp {
    let target = if to.contains('{') {
        let pq = uri.path_and_query().map_or("/", |p| p.as_str());
        to.replace("{uri}", pq)
            .replace("{rest}", route.rest(uri.path()))
    } else {
        to.to_string()
    };
    location(status, &target)
}

pub fn location(status: StatusCode, target: &str) -> Resp {
    let mut r = Response::new(ProxyBody::empty());
    *r.status_mut() = status;
    match HeaderValue::from_str(target) {
        Ok(v) => {
            r.headers_mut().insert(LOCATION, v);
        }
        // Only reachable with a request URI that is not a valid header value,
        // which hyper has already refused; answer plainly rather than panic.
        Err(_) => *r.status_mut() = StatusCode::BAD_REQUEST,
    }
    r
}

/// `redirect_https = true` listeners: every request to the same host and path
/// over HTTPS, on the TLS listener's port when it is not 443 (the port the
/// client used for plain HTTP is dropped).
pub fn redirect_https(parts: &http::request::Parts, https_port: Option<u16>) -> Resp {
    let host = crate::router::request_host(parts);
    if !redirectable_host(host) {
        return text(StatusCode::BAD_REQUEST, "missing or invalid Host header\n");
    }
    // `OPTIONS *` has no path to keep.
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| p.starts_with('/'))
        .unwrap_or("/");
    let target = match https_port {
        Some(443) | None => format!("https://{host}{pq}"),
        Some(p) => format!("https://{host}:{p}{pq}"),
    };
    location(StatusCode::PERMANENT_REDIRECT, &target)
}

/// A host name or IP literal, nothing that could change where the URL points
/// (`evil.com/`, `a@b`, `x#`).
fn redirectable_host(host: &str) -> bool {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

/// A `metrics` route's page (GET or HEAD), never stored by a cache.
pub fn metrics(
    state: &crate::state::State,
    snap: &crate::state::Snapshot,
    parts: &http::request::Parts,
) -> Result<Resp, crate::error::ProxyError> {
    let head = parts.method == http::Method::HEAD;
    if parts.method != http::Method::GET && !head {
        return Err(crate::error::ProxyError::MethodNotAllowed);
    }
    let body = bytes::Bytes::from(crate::metrics::render(state, snap));
    let ct = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    let mut r = respond(StatusCode::OK, &body, &ct, head);
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_vary(values: &[&'static str]) -> Resp {
        let mut r = text(StatusCode::OK, "x");
        for v in values {
            r.headers_mut().append(VARY, HeaderValue::from_static(v));
        }
        r
    }

    #[test]
    fn a_route_vary_adds_to_the_answers_once() {
        let cases: [(&[&'static str], &str, &str); 5] = [
            (&[], "Origin", "Origin"),
            (
                &["Cookie, Accept-Encoding"],
                "Origin",
                "Origin, Cookie, Accept-Encoding",
            ),
            // Two fields are one list; an item already named is not repeated.
            (
                &["Cookie", "accept-encoding"],
                " Accept-Encoding ",
                "Accept-Encoding, Cookie",
            ),
            (&["cookie"], "Cookie", "Cookie"),
            (&[" , Cookie,"], "Origin", "Origin, Cookie"),
        ];
        for (have, add, want) in cases {
            let mut r = with_vary(have);
            add_vary(&mut r, &HeaderValue::from_static(add));
            let got: Vec<_> = r.headers().get_all(VARY).iter().collect();
            assert_eq!(got, [want], "{have:?} + {add:?}");
        }
    }
}
