//! Pure request matching: host (exact, `*.suffix`, or any) and the longest
//! path prefix. Host-specific routes win over any-host routes; among those,
//! exact hosts win over wildcards, longer wildcards over shorter ones.

use crate::client::AddrRules;
use crate::gate::Policy;
use crate::handler::static_files::Site;
use crate::limit::RateLimit;
use crate::upstream::Upstream;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use std::sync::Arc;

mod path;

pub use path::normalize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    /// Lower-cased, without port.
    Exact(String),
    /// `*.example.com` stored as `.example.com`: matches `a.example.com` and
    /// `a.b.example.com`, not `example.com` itself.
    Suffix(String),
}

impl HostMatch {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        if s.is_empty() || s == "*" {
            return Ok(HostMatch::Any);
        }
        if let Some(rest) = s.strip_prefix("*.") {
            if rest.is_empty() || rest.contains('*') {
                return Err(format!("{s:?}: a wildcard host is \"*.example.com\""));
            }
            return Ok(HostMatch::Suffix(format!(".{rest}")));
        }
        if s.contains('*') || s.contains('/') || s.contains(':') {
            return Err(format!(
                "{s:?}: a host is a name like \"example.com\" or \"*.example.com\", without port"
            ));
        }
        Ok(HostMatch::Exact(s))
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(h) => h.eq_ignore_ascii_case(host),
            HostMatch::Suffix(sfx) => {
                host.len() > sfx.len()
                    && host.as_bytes()[host.len() - sfx.len()..]
                        .eq_ignore_ascii_case(sfx.as_bytes())
            }
        }
    }

    /// Lower sorts first: exact, then longer wildcards, then any.
    fn rank(&self) -> (u8, usize) {
        match self {
            HostMatch::Exact(_) => (0, 0),
            HostMatch::Suffix(s) => (1, usize::MAX - s.len()),
            HostMatch::Any => (2, 0),
        }
    }
}

pub enum Action {
    Upstream(Arc<Upstream>),
    Static(Arc<Site>),
    Redirect {
        to: String,
        status: StatusCode,
    },
    Respond {
        status: StatusCode,
        body: Bytes,
        content_type: HeaderValue,
    },
    /// The server's counters (`metrics = true`), for Prometheus.
    Metrics,
}

pub struct Route {
    /// Position in the config file, for logs and errors.
    pub index: usize,
    pub host: HostMatch,
    pub prefix: String,
    pub action: Action,
    pub jwt: Option<Arc<Policy>>,
    /// `allow`/`deny` on the client's address; `None` when the route has
    /// neither, so that most requests pay one branch.
    pub addrs: Option<AddrRules>,
    /// Gzip upstream answers for clients that accept it (`compress`).
    pub compress: bool,
    /// Send the upstream the path after the prefix (`strip_prefix`).
    pub strip_prefix: bool,
    /// HTTP Basic authentication (`basic_auth`), checked before `jwt`.
    pub basic_auth: Option<Arc<crate::basic_auth::BasicAuth>>,
    /// Fields set on the request to the upstream (`request_headers`).
    pub request_headers: Vec<crate::handler::upstream::SetHeader>,
    /// Requests per client address (`rate_limit`), shared by the workers.
    pub rate_limit: Option<Arc<RateLimit>>,
    /// The largest request body this route takes (its `max_body`, else the
    /// server's): past it, 413.
    pub max_body: u64,
    /// Pages for the proxy's own error answers on this route: its
    /// `error_pages` over the server's.
    pub error_pages: Option<Arc<crate::handler::error_page::ErrorPages>>,
    /// Where it is in the router's order, from 1, for `Router::at`: two
    /// bytes, kept beside a request's other small fields (`Outcome`);
    /// `None` past the 65,535th route, whose errors get the server's pages.
    pub pos: Option<std::num::NonZeroU16>,
    /// Response headers set on every answer of this route.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Reached only by an upstream's `X-Accel-Redirect` (nginx's
    /// `internal`): a client asking for it directly gets 404.
    pub internal: bool,
    /// The wait for the upstream's answer head on this route, in place of
    /// its upstream's `timeout` (a report view that takes minutes).
    pub timeout: Option<std::time::Duration>,
}

impl Route {
    /// A route with no key but its place and action, for tests that build
    /// one without a config.
    #[cfg(test)]
    pub fn bare(index: usize, host: HostMatch, prefix: &str, action: Action) -> Route {
        Route {
            index,
            host,
            prefix: prefix.into(),
            action,
            jwt: None,
            addrs: None,
            compress: false,
            strip_prefix: false,
            basic_auth: None,
            request_headers: Vec::new(),
            rate_limit: None,
            max_body: 10 << 20,
            error_pages: None,
            pos: None,
            headers: Vec::new(),
            internal: false,
            timeout: None,
        }
    }

    /// The request path minus the route prefix: `/` when nothing is left,
    /// else what follows the prefix (a `/`, or the `%2F` that matched one).
    pub fn rest<'a>(&self, path: &'a str) -> &'a str {
        let rest = prefix_len(&self.prefix, path).map_or("", |n| &path[n..]);
        if rest.is_empty() {
            "/"
        } else {
            rest
        }
    }
}

/// Does `prefix` match `path`? Matching is on whole path segments: "/api"
/// matches "/api" and "/api/x" but not "/apix"; "/api/" also matches "/api".
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix_len(prefix, path).is_some()
}

/// How much of the normal-form `path` the prefix matched. Two things a
/// backend may read as a segment boundary count as one here, so that no
/// spelling puts a path out of its route's reach (and its policy's):
/// - `%2F` matches a `/` of the prefix: gunicorn, among others, decodes it,
///   so `/api%2Fx` is under `/api/`;
/// - a `;` parameter ends a segment: Java servlet containers drop it, so
///   `/api;x/secret` is under `/api/` (and `/a;x/b` under `/a/b`).
fn prefix_len(prefix: &str, path: &str) -> Option<usize> {
    prefix_len_in(prefix, path, has_boundary_spellings(path))
}

/// Whether `path` holds a `%` or `;`, so that a prefix may match it other
/// than byte for byte: asked once a request, not once a route.
fn has_boundary_spellings(path: &str) -> bool {
    path.bytes().any(|b| b == b'%' || b == b';')
}

fn prefix_len_in(prefix: &str, path: &str, spellings: bool) -> Option<usize> {
    let p = prefix.trim_end_matches('/').as_bytes();
    let s = path.as_bytes();
    let at = if s.starts_with(p) {
        p.len()
    } else if spellings {
        let (mut i, mut j) = (0, 0);
        while i < p.len() {
            if s.get(j) == Some(&p[i]) {
                i += 1;
                j += 1;
            } else if p[i] == b'/' && s[j..].starts_with(b"%2F") {
                i += 1;
                j += 3;
            } else if p[i] == b'/' && s.get(j) == Some(&b';') {
                // Skip the parameter; the `/` after it matches next.
                j = segment_end(s, j);
            } else {
                return None;
            }
        }
        j
    } else {
        return None;
    };
    let rest = &s[at..];
    let boundary =
        rest.is_empty() || rest[0] == b'/' || rest[0] == b';' || rest.starts_with(b"%2F");
    (p.is_empty() || boundary).then_some(at)
}

/// Where the segment holding `s[j]` ends: at the next `/` or `%2F`.
fn segment_end(s: &[u8], j: usize) -> usize {
    (j..s.len())
        .find(|&k| s[k] == b'/' || s[k..].starts_with(b"%2F"))
        .unwrap_or(s.len())
}

pub struct Router {
    /// Sorted so that the first match is the right one.
    routes: Vec<Route>,
    /// Some route is `internal`: only then does a proxied request keep
    /// what an `X-Accel-Redirect` would need.
    has_internal: bool,
}

impl Router {
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by(|a, b| {
            a.host
                .rank()
                .cmp(&b.host.rank())
                .then(
                    b.prefix
                        .trim_end_matches('/')
                        .len()
                        .cmp(&a.prefix.trim_end_matches('/').len()),
                )
                .then(a.index.cmp(&b.index))
        });
        for (i, r) in routes.iter_mut().enumerate() {
            r.pos = u16::try_from(i + 1)
                .ok()
                .and_then(std::num::NonZeroU16::new);
        }
        let has_internal = routes.iter().any(|r| r.internal);
        Router {
            routes,
            has_internal,
        }
    }

    pub fn has_internal(&self) -> bool {
        self.has_internal
    }

    /// `host` is the request's host without port.
    pub fn find(&self, host: &str, path: &str) -> Option<&Route> {
        let spellings = has_boundary_spellings(path);
        self.routes
            .iter()
            .find(|r| r.host.matches(host) && prefix_len_in(&r.prefix, path, spellings).is_some())
    }

    /// The route at `Route::pos`.
    pub fn at(&self, pos: std::num::NonZeroU16) -> Option<&Route> {
        self.routes.get(usize::from(pos.get()) - 1)
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// The host a request is for: the URI's authority (HTTP/2, absolute-form)
/// or the Host header, without port, lower-cased only when needed.
pub fn request_host(parts: &http::request::Parts) -> &str {
    let raw = parts
        .uri
        .host()
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    let host = strip_port(raw);
    // `example.com.` is `example.com` to DNS, nginx and Django alike.
    host.strip_suffix('.').unwrap_or(host)
}

/// A Host value is `host[:port]`: a name, an IPv4 address or a bracketed
/// IPv6 one. No userinfo, path or blank: nginx refuses those too, and a
/// Host that is not a host name routes nowhere sensible.
pub fn valid_host(v: &[u8]) -> bool {
    let (host, port) = if v.first() == Some(&b'[') {
        match v.iter().position(|&b| b == b']') {
            Some(i) => (&v[1..i], &v[i + 1..]),
            None => return false,
        }
    } else {
        match v.iter().position(|&b| b == b':') {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, &[][..]),
        }
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    !host.is_empty()
        && port_ok
        && host
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:%".contains(&b))
}

pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests;
