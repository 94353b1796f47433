//! The request's entry: one snapshot, the route, the gate, the handler. This
//! is the only place where an error becomes an HTTP response.

use crate::access_log::{self, Entry};
use crate::body::{ProxyBody, ReqBody};
use crate::error::ProxyError;
use crate::handler::{self, Resp};
use crate::router::Action;
use crate::state::{ListenKind, Snapshot, State};
use http::header::{HeaderName, REFERER, USER_AGENT, VARY};
use http::{HeaderValue, Method, Request};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

mod accel;
mod answers;
mod checks;

use answers::{basic_refused, client_rules, error_page, refused};
use checks::{content_length, h2_fields, normalize_path};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request target accepted; longer: 414 (nginx's default buffers
/// allow 8 KiB for the request line).
const MAX_URI: usize = 8192;

/// What a connection knows about itself, shared by its requests.
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub kind: ListenKind,
    /// Subject of a verified client certificate (mTLS).
    /// Boxed: present only on mTLS connections, and this struct is kept
    /// for every idle connection.
    pub client_cert_subject: Option<Box<HeaderValue>>,
}

impl ConnInfo {
    pub fn is_tls(&self) -> bool {
        self.kind == ListenKind::Tls
    }
}

/// Filled in by handlers for the access log.
#[derive(Default)]
pub struct Outcome {
    pub upstream: Option<Arc<crate::upstream::Server>>,
    pub attempts: u32,
    /// The answer may be gzipped: the route's `compress`, and a client that
    /// accepts it. Here rather than in a local of the request's future,
    /// which it would make 8 bytes larger (it fits beside `attempts`).
    pub gzip: bool,
    /// The route found (`Route::pos`), for its error pages: beside
    /// `attempts` too.
    pub route: Option<std::num::NonZeroU16>,
    /// A HEAD request, whose answer from the proxy itself goes bodiless.
    pub head: bool,
    pub reason: Option<&'static str>,
    pub upstream_head: Option<std::time::Duration>,
    /// The request's access-log entry when the log is on; the fields above
    /// go into it once the answer is known. The clock is read for
    /// `upstream_head` only when there is one.
    pub log: Option<Box<Entry>>,
}

/// A request whose future is dropped before its answer (the client reset
/// the stream or went away) is logged all the same, as nginx does, with
/// its 499: otherwise a client could drive the upstream unseen.
impl Drop for Outcome {
    fn drop(&mut self) {
        if let Some(mut e) = self.log.take() {
            e.status = 499;
            self.fill(&mut e);
            e.reason.get_or_insert("client closed request");
            e.emit();
        }
    }
}

impl Outcome {
    /// What the handlers learned, into the log entry.
    fn fill(&self, e: &mut Entry) {
        e.upstream = self.upstream.as_ref().map(|s| s.label.clone());
        e.attempts = self.attempts;
        e.upstream_head = self.upstream_head;
        e.reason = self.reason;
    }
}

/// A plain fn returning an async block, not an async fn: an async fn keeps
/// each argument twice in its future (as passed and as its own local), and
/// this future is moved into its box once per request. The same holds for
/// `dispatch` and the handlers below it; so does keeping a value that was
/// borrowed out of the state: `begin` hands `parts` over by value.
#[allow(clippy::manual_async_fn)] // on purpose, as said above
pub fn handle(
    req: Request<ReqBody>,
    conn: Arc<ConnInfo>,
    state: Arc<State>,
) -> impl std::future::Future<Output = Result<Resp, Infallible>> + Send {
    async move {
        let snap = state.load();
        state.metrics.request();
        let (parts, body, mut request_id, entry) = begin(req, &conn, &snap);
        // The clock is read for the metrics only while a route shows them.
        let start = snap
            .timed
            .then(|| entry.as_ref().map_or_else(Instant::now, |e| e.start));
        let mut out = Outcome::default();
        out.log = entry;
        // The connections box this future: an idle one holds no request state.
        let mut resp = match dispatch(&snap, &state, &conn, parts, body, &mut out).await {
            Ok(r) => r,
            Err(e) => {
                if e.status().is_server_error() {
                    tracing::warn!(error = %e, request_id = ?request_id, "request failed");
                }
                handler::text(e.status(), e.public_message())
            }
        };
        if resp.status().as_u16() >= 400 {
            error_page(&snap, &out, &mut resp);
        }
        if out.head {
            handler::error_page::for_head(&mut resp);
        }
        if conn.is_tls() {
            if let Some(hsts) = snap.tls.as_ref().and_then(|t| t.hsts.clone()) {
                resp.headers_mut()
                    .insert(http::header::STRICT_TRANSPORT_SECURITY, hsts);
            }
        }
        // Never indexed by HTTP/2's HPACK: every id is new, so indexing
        // them fills a connection's header table with ids, evicts the fields
        // that do repeat (server, date, content-type), and makes the encoder
        // compare each new id with every id in the table.
        request_id.set_sensitive(true);
        resp.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
        state
            .metrics
            .answer(resp.status().as_u16(), start.map(|t| t.elapsed()));
        if let Some(mut e) = out.log.take() {
            e.status = resp.status().as_u16();
            out.fill(&mut e);
            resp.body_mut().set_log(e);
        }
        Ok(resp)
    }
}

/// The request's id, and its access-log entry if the log is on.
fn begin(
    req: Request<ReqBody>,
    conn: &ConnInfo,
    snap: &Snapshot,
) -> (
    http::request::Parts,
    ReqBody,
    HeaderValue,
    Option<Box<Entry>>,
) {
    let (mut parts, body) = req.into_parts();
    let request_id = request_id(&mut parts.headers);
    let entry = snap
        .access_log
        .as_ref()
        // The clock is read only for the log's duration.
        .map(|l| entry(&parts, conn, &request_id, snap, l.clone()));
    (parts, body, request_id, entry)
}

#[allow(clippy::manual_async_fn)] // written out: see `service::handle`
fn dispatch<'a>(
    snap: &'a Arc<Snapshot>,
    state: &'a State,
    conn: &'a Arc<ConnInfo>,
    mut parts: http::request::Parts,
    body: ReqBody,
    out: &'a mut Outcome,
) -> impl std::future::Future<Output = Result<Resp, ProxyError>> + Send + 'a {
    async move {
        out.head = parts.method == Method::HEAD;
        if parts.uri.path_and_query().map_or(0, |p| p.as_str().len()) > MAX_URI {
            return Err(ProxyError::UriTooLong);
        }
        if conn.kind == ListenKind::RedirectHttps {
            return Ok(handler::redirect_https(&parts, state.https_port()));
        }
        // CONNECT: no tunnels (the HTTP/1 server refuses it as it reads the
        // head). TRACE would echo the request, cookies and all, back to a
        // script that could not read them (nginx answers 405 too).
        if parts.method == Method::TRACE || parts.method == Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed);
        }
        let checked = if parts.version == http::Version::HTTP_2 {
            h2_fields(&mut parts)
        } else {
            Ok(())
        };
        if let Err(why) = checked.and_then(|()| normalize_path(&mut parts)) {
            out.reason = Some(why);
            return Err(ProxyError::BadRequest(why));
        }
        if !snap.claim_headers.is_empty() {
            checks::strip_claim_headers(&mut parts.headers, &snap.claim_headers);
        }
        let route = {
            let host = crate::router::request_host(&parts);
            snap.router
                .find(host, parts.uri.path())
                .ok_or(ProxyError::NoRoute)?
        };
        out.route = route.pos;
        if route.internal {
            // Only an app's X-Accel-Redirect reaches it.
            return Err(ProxyError::NotFound);
        }
        // Before the token: a client that may not reach the route learns
        // nothing of its policy, and no signature is checked for it.
        if route.addrs.is_some() || route.rate_limit.is_some() {
            if let Some(refusal) = client_rules(route, snap, conn, &parts, out) {
                return Ok(refusal);
            }
        }
        // Before the token too, as nginx's client_max_body_size: a body
        // that will be refused is not worth a signature check.
        if content_length(&parts).is_some_and(|n| n > route.max_body) {
            return Err(ProxyError::BodyTooLarge);
        }
        if let Some(auth) = &route.basic_auth {
            let verdict = match auth.quick(&parts.headers) {
                Some(v) => v,
                // Boxed: bcrypt's wait comes once per client, and inline
                // its state would grow every request's future.
                None => Box::pin(auth.verify(&parts.headers)).await,
            };
            match verdict {
                Ok(user) => {
                    if let Some(e) = out.log.as_mut() {
                        e.user = Some(user.0.clone());
                    }
                    parts.extensions.insert(user);
                }
                Err(rej) => return Ok(basic_refused(route, rej, out)),
            }
        }
        if let Some(policy) = &route.jwt {
            if let Err(rej) = policy.check(&mut parts).await {
                return Ok(refused(route, policy, rej, out));
            }
        }
        let head = parts.method == Method::HEAD;
        // With the route whose `headers` the answer gets: an
        // X-Accel-Redirect's internal route in place of the app's.
        let (mut resp, route) = match &route.action {
            Action::Upstream(up) => {
                if route.strip_prefix {
                    handler::upstream::strip_prefix(route, &mut parts)?;
                }
                out.gzip = route.compress && handler::compress::wanted(&parts);
                // Boxed: held across the app's answer, inline it would grow
                // every request's future by its size.
                let saved = snap
                    .router
                    .has_internal()
                    .then(|| Box::new(accel::Saved::of(&parts)));
                let mut resp =
                    crate::handler::upstream::forward(up, route, snap, conn, parts, body, out)
                        .await?;
                match saved {
                    Some(saved) if accel::asked(&resp) => {
                        // A file is sent as it is on disk, as by its route.
                        out.gzip = false;
                        accel::follow(snap, saved, resp)?
                    }
                    _ => {
                        if out.gzip {
                            handler::compress::apply(&mut resp);
                        }
                        (resp, route)
                    }
                }
            }
            Action::Static(site) => (
                crate::handler::static_files::serve(site, route, &parts)?,
                route,
            ),
            Action::Redirect { to, status } => {
                (handler::redirect(to, *status, route, &parts.uri), route)
            }
            Action::Respond {
                status,
                body,
                content_type,
            } => (handler::respond(*status, body, content_type, head), route),
            Action::Metrics => (handler::metrics(state, snap, &parts)?, route),
        };
        // Like nginx's add_header: on answers that succeeded or redirect, not
        // on errors (a 416 must not be cached as `immutable`).
        let st = resp.status();
        if st.is_success() || st.is_redirection() {
            for (k, v) in &route.headers {
                if k == VARY {
                    handler::add_vary(&mut resp, v);
                } else {
                    resp.headers_mut().insert(k.clone(), v.clone());
                }
            }
        }
        Ok(resp)
    }
}

/// Keep a sane client-supplied id (so a chain of proxies shares one),
/// otherwise make one.
fn request_id(headers: &mut http::HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= 128
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
        {
            return v.clone();
        }
    }
    let v = new_request_id();
    headers.insert(X_REQUEST_ID.clone(), v.clone());
    v
}

/// A fresh id: 128 random bits in hex.
pub(crate) fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; 32];
    let (a, b) = (fastrand::u64(..), fastrand::u64(..));
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in a
        .to_be_bytes()
        .iter()
        .chain(b.to_be_bytes().iter())
        .enumerate()
    {
        buf[2 * i] = HEX[(byte >> 4) as usize];
        buf[2 * i + 1] = HEX[(byte & 15) as usize];
    }
    // Hex digits are always a valid header value. An owned buffer: the value
    // is cloned (request and response), and a clone of a copied slice would
    // allocate again to become shared.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf))
        .expect("hex is a valid header value")
}

fn entry(
    parts: &http::request::Parts,
    conn: &ConnInfo,
    id: &HeaderValue,
    snap: &Snapshot,
    logger: Arc<access_log::Logger>,
) -> Box<Entry> {
    // Header values and the target are shared slices of the head: a
    // reference count each, not a copy.
    let h = |n| parts.headers.get(n).cloned();
    let host = if logger.wants_host() {
        crate::router::request_host(parts).to_string()
    } else {
        String::new()
    };
    Box::new(Entry {
        time: SystemTime::now(),
        start: Instant::now(),
        // Behind trusted proxies, the client they name, as nginx's realip
        // module makes `$remote_addr`.
        client: crate::client::client_ip(&parts.headers, snap, conn),
        method: parts.method.clone(),
        target: parts.uri.path_and_query().cloned(),
        version: parts.version,
        status: 0,
        bytes: 0,
        referer: h(REFERER),
        user_agent: h(USER_AGENT),
        host,
        request_id: Some(id.clone()),
        upstream: None,
        attempts: 0,
        upstream_head: None,
        user: None,
        reason: None,
        raw_line: None,
        hidden: snap.log_hidden.clone(),
        logger,
    })
}

/// A ProxyBody-typed error response, for callers outside the service.
pub fn error_response(e: &ProxyError) -> http::Response<ProxyBody> {
    handler::text(e.status(), e.public_message())
}
