//! What is checked of a request before it is routed, beyond what the HTTP
//! servers check as they read it: HTTP/2's host and length fields, and the
//! path put in its normal form.

use http::header::CONTENT_LENGTH;
use http::Method;

/// What the HTTP/1 server checks as it reads a head, for HTTP/2: one valid
/// host, in :authority or a single Host field, and one Content-Length.
/// h2 checks framing and field syntax, not these.
pub(super) fn h2_fields(parts: &mut http::request::Parts) -> Result<(), &'static str> {
    use http::header::HOST;
    match parts.uri.authority() {
        Some(a) => {
            if a.as_str().contains('@') || !crate::router::valid_host(a.as_str().as_bytes()) {
                return Err("bad :authority");
            }
        }
        None => {
            let mut hosts = parts.headers.get_all(HOST).iter();
            let one = hosts.next();
            if hosts.next().is_some()
                || one.is_some_and(|h| !crate::router::valid_host(h.as_bytes()))
            {
                return Err("missing, duplicate or bad Host header");
            }
        }
    }
    // h2 has made sure that several agree; one goes on.
    let mut lengths = parts.headers.get_all(CONTENT_LENGTH).iter();
    if let (Some(n), Some(_)) = (lengths.next().cloned(), lengths.next()) {
        parts.headers.insert(CONTENT_LENGTH, n);
    }
    Ok(())
}

/// Put the request's path in its normal form (`router::normalize`) for the
/// route, the policy, the handler and the upstream alike.
pub(super) fn normalize_path(parts: &mut http::request::Parts) -> Result<(), &'static str> {
    let path = parts.uri.path();
    if path == "*" && parts.method == Method::OPTIONS {
        return Ok(());
    }
    let normal = match crate::router::normalize(path)? {
        std::borrow::Cow::Borrowed(_) => return Ok(()),
        std::borrow::Cow::Owned(n) => n,
    };
    let pq = match parts.uri.query() {
        Some(q) => format!("{normal}?{q}"),
        None => normal,
    };
    let mut up = std::mem::take(&mut parts.uri).into_parts();
    // The normal form only drops characters of a valid path and decodes
    // escapes of unreserved ones: still a valid path.
    up.path_and_query = Some(pq.parse().map_err(|_| "bad request target")?);
    parts.uri = http::Uri::from_parts(up).map_err(|_| "bad request target")?;
    Ok(())
}

pub(super) fn content_length(parts: &http::request::Parts) -> Option<u64> {
    parts
        .headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The fields the proxy vouches for (a JWT's `forward_claims`, a route's
/// `{user}`), taken out of every request, whatever its route: an app
/// trusts them as much behind an open route as behind a gated one. Their
/// spellings with `_` for `-` go too, since some servers file `X_User_Id`
/// where the app reads `X-User-Id` (Django under ASGI, gunicorn before 22;
/// nginx drops such names for the same reason).
pub(super) fn strip_claim_headers(h: &mut http::HeaderMap, claims: &[http::HeaderName]) {
    for c in claims {
        h.remove(c);
    }
    let underscored: Vec<http::HeaderName> = h
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .filter(|k| {
            let dashed = k.as_str().replace('_', "-");
            claims.iter().any(|c| c.as_str() == dashed)
        })
        .cloned()
        .collect();
    for k in underscored {
        h.remove(k);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn claim_fields_go_in_every_spelling() {
        let mut h = http::HeaderMap::new();
        for (k, v) in [
            ("x-remote-user", "admin"),
            ("x_remote_user", "admin"),
            ("X_Remote-User", "admin"),
            ("x_other_field", "kept"),
            ("cookie", "kept"),
        ] {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        super::strip_claim_headers(&mut h, &[http::HeaderName::from_static("x-remote-user")]);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["cookie", "x_other_field"]);
    }
}
