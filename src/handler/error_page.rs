//! `error_pages`: the proxy's own error answers (404 without a route, 413,
//! 429, 502 when the app is down, 503, 504, a refused token's 401...) with
//! a page of the site's instead of a line of text, as nginx's `error_page`
//! or Caddy's `handle_errors`. The app's own error answers pass untouched,
//! as in nginx without `proxy_intercept_errors`: Django renders its own.

use super::Resp;
use crate::body::ProxyBody;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use std::collections::BTreeMap;

/// Marks an answer the proxy made itself (`handler::text`), so that a page
/// replaces it but never an app's answer of the same status.
#[derive(Clone, Copy)]
pub struct Own;

#[derive(Debug, Clone)]
pub struct Page {
    pub body: Bytes,
    pub content_type: HeaderValue,
    /// Where it was read from, for `portcullis check`.
    pub path: std::path::PathBuf,
}

/// Pages by status: a route's own over the server's.
#[derive(Debug, Clone, Default)]
pub struct ErrorPages(pub BTreeMap<u16, Page>);

impl ErrorPages {
    /// The page for an answer the proxy made, if there is one: its body
    /// and type replace the text; every other field (`Retry-After`,
    /// `WWW-Authenticate`, `Allow`) stays.
    pub fn apply(&self, resp: &mut Resp) {
        if resp.extensions().get::<Own>().is_none() {
            return;
        }
        let Some(page) = self.0.get(&resp.status().as_u16()) else {
            return;
        };
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, page.content_type.clone());
        // Set here, not left to the body: a HEAD answer carries the
        // length a GET's would, and the connection drops its body.
        h.insert(CONTENT_LENGTH, HeaderValue::from(page.body.len()));
        *resp.body_mut() = ProxyBody::full(page.body.clone());
    }
}

/// The proxy's own answer to a HEAD request: the length a GET's body would
/// have, and no body. HTTP/1 drops a HEAD answer's body as it writes, but
/// HTTP/2 sends what it is given, and DATA on a HEAD answer is a protocol
/// error to the client.
pub fn for_head(resp: &mut Resp) {
    if resp.extensions().get::<Own>().is_none() {
        return;
    }
    if let Some(n) = http_body::Body::size_hint(resp.body()).exact() {
        resp.headers_mut()
            .entry(CONTENT_LENGTH)
            .or_insert_with(|| HeaderValue::from(n));
    }
    *resp.body_mut() = ProxyBody::empty();
}

/// By the file's extension: a page is HTML, JSON for an API's clients, or
/// plain text.
pub fn content_type(path: &std::path::Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use http_body::Body;

    fn pages() -> ErrorPages {
        let page = Page {
            body: Bytes::from_static(b"<h1>Back soon</h1>"),
            content_type: HeaderValue::from_static("text/html; charset=utf-8"),
            path: "502.html".into(),
        };
        ErrorPages(BTreeMap::from([(502, page)]))
    }

    #[test]
    fn a_page_replaces_the_proxys_own_answer_of_its_status_only() {
        let p = pages();
        let mut own = super::super::text(StatusCode::BAD_GATEWAY, "bad gateway\n");
        own.headers_mut()
            .insert("retry-after", HeaderValue::from_static("5"));
        p.apply(&mut own);
        assert_eq!(own.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(own.headers()["retry-after"], "5", "other fields stay");
        assert_eq!(own.body().size_hint().exact(), Some(18));

        // Another status, or an app's 502: as they were.
        let mut other = super::super::text(StatusCode::GATEWAY_TIMEOUT, "gateway timeout\n");
        p.apply(&mut other);
        assert_eq!(other.body().size_hint().exact(), Some(16));
        let mut app = Resp::new(ProxyBody::full("the app's own"));
        *app.status_mut() = StatusCode::BAD_GATEWAY;
        p.apply(&mut app);
        assert_eq!(app.body().size_hint().exact(), Some(13));
        assert!(!app.headers().contains_key(CONTENT_TYPE));
    }

    #[test]
    fn types_by_extension() {
        let t = |p: &str| content_type(std::path::Path::new(p));
        assert_eq!(t("errors/502.HTML"), Some("text/html; charset=utf-8"));
        assert_eq!(t("429.json"), Some("application/json"));
        assert_eq!(t("502"), None);
        assert_eq!(t("502.php"), None);
    }
}
