//! What a route does with a request once it is allowed through.

pub mod compress;
pub mod static_files;
pub mod upstream;

use crate::body::ProxyBody;
use crate::router::Route;
use http::header::{CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Response, StatusCode};

pub type Resp = Response<ProxyBody>;

pub fn text(status: StatusCode, body: &'static str) -> Resp {
    let mut r = Response::new(ProxyBody::full(body));
    *r.status_mut() = status;
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
