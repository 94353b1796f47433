//! The proxy's own answers to a request it will not pass on: a route's
//! address rules and rate, a JWT policy's refusal, and the error page
//! that may stand in for any of them.

use super::{ConnInfo, Outcome};
use crate::handler::{self, Resp};
use crate::state::Snapshot;
use http::header::WWW_AUTHENTICATE;
use http::{HeaderValue, StatusCode};

/// The route's error page (else the server's) in place of an answer the
/// proxy made itself.
pub(super) fn error_page(snap: &Snapshot, out: &Outcome, resp: &mut Resp) {
    let pages = match out.route {
        Some(pos) => snap.router.at(pos).and_then(|r| r.error_pages.as_ref()),
        None => snap.error_pages.as_ref(),
    };
    if let Some(p) = pages {
        p.apply(resp);
    }
}

/// The route's `allow`/`deny` and `rate_limit` on the client's address:
/// the answer when they refuse it.
pub(super) fn client_rules(
    route: &crate::router::Route,
    snap: &Snapshot,
    conn: &ConnInfo,
    parts: &http::request::Parts,
    out: &mut Outcome,
) -> Option<Resp> {
    let ip = crate::client::client_ip(&parts.headers, snap, conn);
    if route.addrs.as_ref().is_some_and(|r| !r.admits(ip)) {
        out.reason = Some("client address not allowed");
        tracing::info!(route = route.index, client = %ip, "request refused by the route's allow/deny rules");
        return Some(handler::text(StatusCode::FORBIDDEN, "forbidden\n"));
    }
    let wait = route.rate_limit.as_ref()?.check(ip).err()?;
    out.reason = Some("rate limited");
    // Debug, not info: a client over its limit makes one of these per
    // request, and the access log has each with its reason.
    tracing::debug!(route = route.index, client = %ip, retry_after = wait, "request refused by the route's rate_limit");
    let mut r = handler::text(StatusCode::TOO_MANY_REQUESTS, "too many requests\n");
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from(wait));
    Some(r)
}

/// The answer to a request the route's JWT policy refused.
pub(super) fn refused(
    route: &crate::router::Route,
    policy: &crate::gate::Policy,
    rej: crate::gate::Rejection,
    out: &mut Outcome,
) -> Resp {
    out.reason = Some(rej.reason);
    tracing::info!(route = route.index, policy = %policy.name, reason = rej.reason, "request refused by jwt policy");
    let mut r = handler::text(
        rej.status,
        match rej.status {
            StatusCode::FORBIDDEN => "forbidden\n",
            StatusCode::BAD_REQUEST => "bad request\n",
            _ => "unauthorized\n",
        },
    );
    if let Some(v) = rej.www_authenticate {
        r.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    r
}

/// The answer to a request the route's `basic_auth` refused: 401 with the
/// realm, so that a browser asks for a name and a password.
pub(super) fn basic_refused(
    route: &crate::router::Route,
    rej: crate::gate::Rejection,
    out: &mut Outcome,
) -> Resp {
    out.reason = Some(rej.reason);
    tracing::info!(
        route = route.index,
        reason = rej.reason,
        "request refused by basic_auth"
    );
    let mut r = handler::text(rej.status, "unauthorized\n");
    if let Some(v) = rej.www_authenticate {
        r.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    r
}
