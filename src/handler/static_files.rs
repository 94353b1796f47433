//! Static files: the `static` route action.
//!
//! The file is the request path minus the route prefix, under the root
//! (nginx's `alias`). The flow: method check, path made safe (path.rs), the
//! file or index or precompressed variant found and opened (open.rs),
//! conditional and range headers weighed (cond.rs), then the response with
//! its type (mime.rs) and a body streamed from the open file (body.rs).
//!
//! Why not tower-http's `ServeDir`: it has no ETag, so no `If-None-Match`
//! and no ETag `If-Range`; it redirects directories with 307, knows only
//! `index.html`, follows symlinks anywhere, serves a `.br` older than its
//! original, and hops to the blocking pool for every stat, open and read.
//! Adding those around it would stat each file twice. The parsing that is
//! easy to get wrong comes from crates instead: HTTP dates (`httpdate`),
//! percent-decoding (`percent-encoding`), the long tail of types
//! (`mime_guess`).

mod body;
pub use body::FileBody;
mod cond;
pub(crate) use cond::{accepted as accepted_codings, Coding};
mod hot;
mod mime;
mod open;
mod path;
mod read;
mod resident;
#[cfg(test)]
mod tests;

use crate::body::ProxyBody;
use crate::config::raw::{RawStatic, RawStaticDetailed};
use crate::config::{Errors, Source};
use crate::error::ProxyError;
use crate::handler::{self, Resp};
use crate::router::Route;
use arc_swap::ArcSwap;
use cond::{Precondition, Range, Validators};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use open::{Content, Found, Opened};
use std::path::{Component, Path, PathBuf};

/// A compiled `static` route.
pub struct Site {
    /// As configured (relative paths resolved against the config file).
    root: PathBuf,
    /// Where the root really is, symlinks resolved: the containment check
    /// compares against it. Refreshed when the root moves (see open.rs).
    real_root: ArcSwap<PathBuf>,
    index: Vec<String>,
    precompressed: bool,
    /// Relative to the root.
    fallback: Option<PathBuf>,
    follow_symlinks: bool,
    /// The root's path is absolute and free of symlinks: opens can then
    /// prove containment by refusing symlinks (see open.rs).
    plain_root: bool,
}

/// `static = "/dir"` or `static = { root, index, precompressed, fallback,
/// follow_symlinks }`. `place` is `route[N].static`.
pub fn compile(raw: &RawStatic, place: &str, src: &Source, errs: &mut Errors) -> Option<Site> {
    let n_errs = errs.0.len();
    let short;
    let (d, root_place) = match raw {
        RawStatic::Root(r) => {
            short = RawStaticDetailed {
                root: r.clone(),
                ..Default::default()
            };
            (&short, place.to_string())
        }
        RawStatic::Detailed(d) => (d, format!("{place}.root")),
    };
    let root = src.resolve(&d.root);
    let real_root = if d.root.is_empty() {
        errs.add(
            &root_place,
            "empty: name the directory to serve, e.g. \"/srv/app/staticfiles\"",
        );
        None
    } else {
        match std::fs::canonicalize(&root) {
            // A file as root serves that one file at the route's path, as
            // nginx's `location = /robots.txt { alias ...; }`.
            Ok(p) if p.is_dir() || p.is_file() => Some(p),
            Ok(_) => {
                errs.add(
                    &root_place,
                    format!("{} is not a directory or a file", root.display()),
                );
                None
            }
            Err(e) => {
                errs.add(&root_place, format!("{}: {e}", root.display()));
                None
            }
        }
    };
    let index = d.index.clone().unwrap_or_else(|| vec!["index.html".into()]);
    for (i, name) in index.iter().enumerate() {
        let bad =
            name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']);
        if bad {
            errs.add(
                format!("{place}.index[{i}]"),
                format!("{name:?} is not a file name (no slashes, not \".\" or \"..\")"),
            );
        }
    }
    let fallback = d.fallback.as_deref().and_then(|fb| {
        let p = Path::new(fb);
        let plain = !fb.is_empty()
            && !fb.contains(['\\', '\0'])
            && p.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            errs.add(
                format!("{place}.fallback"),
                format!("{fb:?} must be a file path relative to root, without \"..\""),
            );
            return None;
        }
        if let Some(r) = &real_root {
            if !r.join(p).is_file() {
                errs.add(
                    format!("{place}.fallback"),
                    format!("{fb:?} is not a file under {}", root.display()),
                );
            }
        }
        Some(p.to_path_buf())
    });
    if errs.0.len() > n_errs {
        return None;
    }
    let real_root = real_root?;
    // Absolute, so that opens do not depend on the working directory.
    let root = std::path::absolute(&root).unwrap_or(root);
    Some(Site {
        plain_root: root == real_root,
        root,
        real_root: ArcSwap::from_pointee(real_root),
        index,
        precompressed: d.precompressed.unwrap_or(false),
        fallback,
        follow_symlinks: d.follow_symlinks.unwrap_or(false),
    })
}

pub fn serve(site: &Site, route: &Route, parts: &http::request::Parts) -> Result<Resp, ProxyError> {
    let head = match parts.method {
        Method::GET => false,
        Method::HEAD => true,
        _ => return Ok(not_allowed()),
    };
    let full_path = parts.uri.path();
    let rest = route.rest(full_path);
    let Some(mut rel) = path::sanitize_under(&site.root, rest) else {
        return Err(ProxyError::NotFound);
    };
    if rest == "/" && !full_path.ends_with('/') {
        // `/static` for the prefix `/static/`: the root, asked without slash.
        rel.trailing_slash = false;
    }
    let accept = if site.precompressed {
        cond::accepted(parts.headers.get(header::ACCEPT_ENCODING))
    } else {
        [None, None]
    };
    let found = match open::find(site, rel, accept) {
        Ok(Found::Missing) => match &site.fallback {
            Some(fb) => open::find_file(site, fb, accept),
            None => Ok(Found::Missing),
        },
        other => other,
    };
    match found.map_err(internal)? {
        Found::File(opened) => respond(site, opened, parts, head),
        Found::AddSlash => Ok(add_slash(parts)),
        Found::Missing => Err(ProxyError::NotFound),
    }
}

fn respond(
    site: &Site,
    o: Opened,
    parts: &http::request::Parts,
    head: bool,
) -> Result<Resp, ProxyError> {
    let len = o.meta.len();
    let modified = o.meta.modified().ok();
    let (etag, last_modified, whole_len) =
        cond::validator_values(modified, len, o.coding.map(cond::Coding::name));
    let v = Validators {
        etag: etag.to_str().unwrap_or_default(),
        modified,
    };
    let mut h = crate::http::spare::map();
    h.insert(header::ETAG, etag.clone());
    if let Some(lm) = last_modified {
        h.insert(header::LAST_MODIFIED, lm);
    }
    if site.precompressed {
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    match cond::evaluate(&parts.headers, &v) {
        Precondition::Proceed => {}
        Precondition::NotModified => return Ok(build(StatusCode::NOT_MODIFIED, h, None)),
        Precondition::Failed => return Ok(build(StatusCode::PRECONDITION_FAILED, h, None)),
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Range is defined for GET only (RFC 9110 section 14.2).
    let range = match parts.headers.get(header::RANGE) {
        Some(r) if !head && cond::if_range_holds(&parts.headers, &v) => {
            r.to_str().map_or(Range::Full, |r| cond::range(r, len))
        }
        _ => Range::Full,
    };
    let (status, start, n) = match range {
        Range::Full => (StatusCode::OK, 0, len),
        Range::Partial(a, b) => {
            h.insert(
                header::CONTENT_RANGE,
                num_header(format!("bytes {a}-{b}/{len}")),
            );
            (StatusCode::PARTIAL_CONTENT, a, b - a + 1)
        }
        Range::Unsatisfiable => {
            h.insert(header::CONTENT_RANGE, num_header(format!("bytes */{len}")));
            return Ok(build(StatusCode::RANGE_NOT_SATISFIABLE, h, None));
        }
    };
    h.insert(header::CONTENT_TYPE, mime::content_type(&o.type_path));
    if let Some(c) = o.coding {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(c.name()));
    }
    let length = if n == len {
        whole_len
    } else {
        HeaderValue::from(n)
    };
    h.insert(header::CONTENT_LENGTH, length);
    if head {
        return Ok(build(status, h, None));
    }
    let body = match o.content {
        // Kept in memory: a connection that can send the file itself does
        // (plain TCP, by sendfile: no copy into the socket), others take
        // the bytes without a read.
        Content::Kept(bytes, f) => {
            let mut file = body::FileBody::shared(f, start, n)
                .with_bytes(bytes.slice(start as usize..(start + n) as usize));
            if n == len {
                file = file.whole_file(resident::version(&o.meta));
            }
            ProxyBody::file(file)
        }
        // Not kept: over plain TCP its bytes go from the page cache to the
        // socket (sendfile), where reading them into a buffer first cost
        // two copies and a large allocation.
        Content::File(f) => {
            let mut file = body::FileBody::new(f, start, n);
            if n == len {
                file = file.whole_file(resident::version(&o.meta));
            }
            ProxyBody::file(file)
        }
    };
    Ok(build(status, h, Some(body)))
}

fn build(status: StatusCode, headers: HeaderMap, body: Option<ProxyBody>) -> Resp {
    let mut r = Response::new(body.unwrap_or_else(ProxyBody::empty));
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

/// Digits, spaces, `-`, `/` and `*` only: always a valid header value.
fn num_header(s: String) -> HeaderValue {
    HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static("bytes */0"))
}

fn not_allowed() -> Resp {
    let mut r = handler::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    r
}

/// 301 to the same path with a slash, query kept. Leading slashes are
/// collapsed so that `//evil.example/` can never become a
/// protocol-relative redirect to another host.
fn add_slash(parts: &http::request::Parts) -> Resp {
    let path = parts.uri.path().trim_start_matches('/');
    let target = match parts.uri.query() {
        Some(q) => format!("/{path}/?{q}"),
        None => format!("/{path}/"),
    };
    handler::location(StatusCode::MOVED_PERMANENTLY, &target)
}

fn internal(e: std::io::Error) -> ProxyError {
    ProxyError::Internal(format!("static file: {e}"))
}
