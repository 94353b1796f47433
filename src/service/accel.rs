//! `X-Accel-Redirect`, as behind nginx: the app checks who may have a file
//! (Django with django-sendfile2, a protected media view) and answers with
//! the path of an `internal` static route; the proxy sends that file, with
//! its ranges and conditional answers, and the app's worker is free at
//! once instead of streaming the bytes itself.

use super::checks::normalize_path;
use crate::error::ProxyError;
use crate::handler::Resp;
use crate::router::{Action, Route};
use crate::state::Snapshot;
use http::header::{
    HeaderName, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE, EXPIRES, SET_COOKIE,
};
use http::Method;

const X_ACCEL_REDIRECT: &str = "x-accel-redirect";

/// Whether the app's answer names a file. Its fields are still the raw
/// block the app sent (`RawFields`), not the map.
pub fn asked(app: &Resp) -> bool {
    app.body()
        .fields()
        .is_some_and(|f| f.get(X_ACCEL_REDIRECT).is_some())
}

/// The fields of the app's answer that go with the file, as nginx keeps
/// them: the rest describes the app's own (empty) body.
const KEPT: [HeaderName; 5] = [
    CONTENT_TYPE,
    CONTENT_DISPOSITION,
    CACHE_CONTROL,
    EXPIRES,
    SET_COOKIE,
];

/// What of the client's request the file's answer needs, kept before the
/// request goes to the app (only when some route is internal).
pub struct Saved {
    method: Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
}

impl Saved {
    pub fn of(parts: &http::request::Parts) -> Saved {
        Saved {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
        }
    }
}

/// The app's answer asks for a file: serve it from the internal route its
/// path names, on the client's host. The answer's status is the file's
/// (200, 206, 304, 404...). Returns that route for its `headers`.
pub fn follow(snap: &Snapshot, saved: Box<Saved>, app: Resp) -> Result<(Resp, &Route), ProxyError> {
    let bad = |why: &str| {
        tracing::warn!(reason = why, "X-Accel-Redirect refused");
        ProxyError::Upstream(format!("X-Accel-Redirect: {why}"))
    };
    // The app's body is dropped unread: an empty one (Django's) has given
    // its connection back already, any other takes the connection with it.
    let (_, mut body) = app.into_parts();
    let fields = body
        .take_fields()
        .unwrap_or_default()
        .into_map(http::HeaderMap::new());
    let pq: http::uri::PathAndQuery = fields
        .get(X_ACCEL_REDIRECT)
        .and_then(|v| v.to_str().ok())
        .filter(|t| t.starts_with('/'))
        .ok_or_else(|| bad("not a path starting with /"))?
        .parse()
        .map_err(|_| bad("not a valid path"))?;
    let mut uri = saved.uri.into_parts();
    uri.path_and_query = Some(pq);
    let mut req = http::Request::new(()).into_parts().0;
    // Only GET and HEAD read a file: a POST the app answered this way gets
    // the file too, as behind nginx.
    req.method = if saved.method == Method::HEAD {
        Method::HEAD
    } else {
        Method::GET
    };
    req.uri = http::Uri::from_parts(uri).map_err(|_| bad("not a valid path"))?;
    req.version = saved.version;
    req.headers = saved.headers;
    normalize_path(&mut req).map_err(bad)?;
    let host = crate::router::request_host(&req);
    let route = snap
        .router
        .find(host, req.uri.path())
        .filter(|r| r.internal)
        .ok_or_else(|| bad("no internal route has that path"))?;
    let Action::Static(site) = &route.action else {
        // The compiler lets `internal` only on static routes.
        return Err(bad("no internal route has that path"));
    };
    let mut file = crate::handler::static_files::serve(site.as_ref(), route, &req)?;
    let out = file.headers_mut();
    for name in KEPT {
        if fields.contains_key(&name) {
            out.remove(&name);
            for v in fields.get_all(&name) {
                out.append(name.clone(), v.clone());
            }
        }
    }
    Ok((file, route))
}
