//! `[[route]]` -> `Route`: host, prefix, one action, the JWT policy and
//! the response headers.

use super::{list_or_none, Compiler};
use crate::config::raw::*;
use crate::config::Broken;
use crate::router::{Action, HostMatch, Route, Router};
use crate::upstream::Upstream;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a route may name, compiled before the routes; and the routes a
/// reload replaces.
#[derive(Clone, Copy)]
pub(super) struct Known<'a> {
    pub(super) broken: &'a Broken,
    pub(super) upstreams: &'a BTreeMap<String, Arc<Upstream>>,
    pub(super) policies: &'a BTreeMap<String, Arc<crate::gate::Policy>>,
    pub(super) prev: Option<&'a Router>,
    /// `server.max_body`: a route without its own takes it.
    pub(super) max_body: u64,
    /// `server.error_pages`, under a route's own.
    pub(super) error_pages: Option<&'a Arc<crate::handler::error_page::ErrorPages>>,
}

impl Compiler<'_> {
    pub(super) fn routes(&mut self, raw: Vec<RawRoute>, known: Known) -> Vec<Route> {
        let mut out = Vec::new();
        for (i, r) in raw.into_iter().enumerate() {
            if known.broken.route.contains(&i) {
                continue;
            }
            let place = format!("route[{i}]");
            if let Some(route) = self.route(i, r, &place, &known) {
                out.push(route);
            }
        }
        out
    }

    fn route(&mut self, index: usize, r: RawRoute, place: &str, ctx: &Known) -> Option<Route> {
        let Known {
            broken,
            upstreams,
            policies,
            prev,
            max_body,
            error_pages,
        } = *ctx;
        let n_errs = self.errs.0.len();
        let host = match r.host.as_deref() {
            None => HostMatch::Any,
            Some(h) => HostMatch::parse(h).unwrap_or_else(|e| {
                self.errs.add(format!("{place}.host"), e);
                HostMatch::Any
            }),
        };
        let prefix = r.path.clone().unwrap_or_else(|| "/".into());
        if !prefix.starts_with('/') {
            self.errs.add(
                format!("{place}.path"),
                format!("{prefix:?} must start with /"),
            );
        } else if let Some(e) = prefix_problem(&prefix) {
            self.errs.add(format!("{place}.path"), e);
        }
        let actions = [
            r.upstream.is_some(),
            r.static_files.is_some(),
            r.redirect.is_some(),
            r.respond.is_some(),
            r.metrics == Some(true),
        ];
        let n_actions = actions.iter().filter(|&&a| a).count();
        if n_actions != 1 {
            self.errs.add(
                place,
                if n_actions == 0 {
                    "no action: set one of upstream, static, redirect, respond, metrics"
                } else {
                    "more than one action: set only one of upstream, static, redirect, respond, metrics"
                },
            );
            return None;
        }
        if r.status.is_some() && r.redirect.is_none() {
            self.errs.add(
                format!("{place}.status"),
                "status goes with redirect; for respond use respond.status",
            );
        }
        let action = if let Some(name) = &r.upstream {
            match upstreams.get(name) {
                Some(u) => Some(Action::Upstream(u.clone())),
                None => {
                    // One that failed to compile has its own errors.
                    if !broken.upstream.contains(name)
                        && !self.has_errors_under(&format!("upstream.{name}"))
                    {
                        let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
                        let defined = list_or_none(&known);
                        // An address written here (`http://u:p@app:8000`)
                        // may carry a password: not repeated.
                        let msg = if name.contains('@') || name.contains("://") {
                            format!("names an [upstream.NAME], not an address; addresses go in its servers (the value given is not shown; defined: {defined})")
                        } else {
                            format!("no upstream named {name:?} (defined: {defined})")
                        };
                        self.errs.add(format!("{place}.upstream"), msg);
                    }
                    None
                }
            }
        } else if let Some(s) = &r.static_files {
            crate::handler::static_files::compile(
                s,
                &format!("{place}.static"),
                self.src,
                &mut self.errs,
            )
            .map(|site| Action::Static(Arc::new(site)))
        } else if let Some(to) = &r.redirect {
            let status = r.status.unwrap_or(302);
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                self.errs.add(
                    format!("{place}.status"),
                    "a redirect status is one of 301, 302, 303, 307, 308",
                );
            }
            if HeaderValue::from_str(to).is_err() || to.is_empty() {
                self.errs
                    .add(format!("{place}.redirect"), "not a valid URL");
            }
            Some(Action::Redirect {
                to: to.clone(),
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND),
            })
        } else if let Some(resp) = &r.respond {
            let status = resp.status.unwrap_or(200);
            let st = StatusCode::from_u16(status)
                .ok()
                .filter(|_| (200..=599).contains(&status));
            if st.is_none() {
                self.errs.add(
                    format!("{place}.respond.status"),
                    format!("{status} is not a status between 200 and 599"),
                );
            }
            let ct = resp
                .content_type
                .as_deref()
                .unwrap_or("text/plain; charset=utf-8");
            let content_type = HeaderValue::from_str(ct).unwrap_or_else(|_| {
                self.errs.add(
                    format!("{place}.respond.content_type"),
                    "not a valid header value",
                );
                HeaderValue::from_static("text/plain")
            });
            Some(Action::Respond {
                status: st.unwrap_or(StatusCode::OK),
                body: Bytes::from(resp.body.clone().unwrap_or_default()),
                content_type,
            })
        } else {
            // Safe by default: upstream addresses and traffic are not for
            // anyone who finds the path.
            if r.allow.is_none() && r.basic_auth.is_none() && r.jwt.is_none() {
                self.errs.add(
                    format!("{place}.metrics"),
                    "say who may read it: allow = [\"127.0.0.1\", \"::1\"] (the scraper's address), basic_auth or jwt",
                );
            }
            Some(Action::Metrics)
        };
        let jwt = r.jwt.as_ref().and_then(|j| policies.get(j).cloned());
        if let Some(j) = r.jwt.as_ref().filter(|_| jwt.is_none()) {
            // A policy that failed to compile has its own error already.
            if !broken.jwt.contains(j) && !self.has_errors_under(&format!("jwt.{j}")) {
                let known: Vec<&str> = policies.keys().map(String::as_str).collect();
                self.errs.add(
                    format!("{place}.jwt"),
                    format!(
                        "no jwt policy named {j:?} (defined: {})",
                        list_or_none(&known)
                    ),
                );
            }
        }
        let mut headers = Vec::new();
        for (k, v) in r.headers.iter().flatten() {
            match (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                (Ok(n), Ok(v)) => headers.push((n, v)),
                (Err(_), _) => self.errs.add(
                    format!("{place}.headers"),
                    format!("{k:?} is not a valid header name"),
                ),
                (_, Err(_)) => self
                    .errs
                    .add(format!("{place}.headers.{k}"), "not a valid header value"),
            }
        }
        let addrs = self.addr_rules(place, r.allow.as_deref(), r.deny.as_deref());
        let compress = r.compress.unwrap_or(false);
        if compress && r.upstream.is_none() {
            self.errs.add(
                format!("{place}.compress"),
                "goes with upstream: static files are sent as they are on disk, or as their .gz and .br with precompressed",
            );
        }
        let mut request_headers = Vec::new();
        for (k, v) in r.request_headers.iter().flatten() {
            match crate::handler::upstream::SetHeader::compile(k, v) {
                Ok(s) => request_headers.push(s),
                Err(e) => self.errs.add(format!("{place}.request_headers.{k}"), e),
            }
        }
        if r.request_headers.is_some() && r.upstream.is_none() {
            self.errs.add(
                format!("{place}.request_headers"),
                "goes with upstream: they are set on the request the app is sent",
            );
        }
        let basic_auth = self.basic_auth(place, r.basic_auth.as_ref());
        if r.basic_auth.is_none() {
            for s in request_headers.iter().filter(|s| s.uses_user()) {
                self.errs.add(
                    format!("{place}.request_headers.{}", s.name()),
                    "{user} is the name basic_auth lets through, and this route has no basic_auth",
                );
            }
        }
        if r.basic_auth.is_some() && r.jwt.is_some() {
            self.errs.add(
                format!("{place}.basic_auth"),
                "a route asks for one kind of credentials: basic_auth or jwt, not both",
            );
        }
        let strip_prefix = r.strip_prefix.unwrap_or(false);
        if strip_prefix && r.upstream.is_none() {
            self.errs.add(
                format!("{place}.strip_prefix"),
                "goes with upstream: a static root already stands for the prefix, and a redirect has {rest}",
            );
        }
        let internal = r.internal.unwrap_or(false);
        if internal && r.static_files.is_none() {
            self.errs.add(
                format!("{place}.internal"),
                "goes with static: an internal route serves the files an app names in X-Accel-Redirect",
            );
        }
        let timeout = r.timeout.as_ref().map(|_| {
            if r.upstream.is_none() {
                self.errs.add(
                    format!("{place}.timeout"),
                    "goes with upstream: it is the wait for the app's answer",
                );
            }
            let before = self.errs.0.len();
            let t = self.duration(
                &r.timeout,
                &format!("{place}.timeout"),
                std::time::Duration::ZERO,
            );
            if t.is_zero() && self.errs.0.len() == before {
                self.errs
                    .add(format!("{place}.timeout"), "must be more than 0s");
            }
            t
        });
        let rate_limit = self.rate_limit(place, r.rate_limit.as_ref(), &host, &prefix, prev);
        let max_body = self.size(&r.max_body, &format!("{place}.max_body"), max_body);
        let error_pages = self.error_pages(r.error_pages.as_ref(), place, error_pages);
        if self.errs.0.len() > n_errs {
            return None;
        }
        Some(Route {
            index,
            host,
            prefix,
            action: action?,
            jwt,
            addrs,
            rate_limit,
            compress,
            strip_prefix,
            basic_auth,
            request_headers,
            max_body,
            error_pages,
            pos: None, // set by Router::new
            headers,
            internal,
            timeout,
        })
    }
}

/// Requests are matched in their normal form (`router::normalize`): a
/// prefix in any other form would never match, so it is refused with the
/// form to write instead.
fn prefix_problem(prefix: &str) -> Option<String> {
    if let Some(c) = prefix
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '?' | '#'))
    {
        return Some(format!(
            "{prefix:?}: {c:?} cannot be in a path prefix; write it percent-encoded, as clients send it"
        ));
    }
    match crate::router::normalize(prefix) {
        Ok(n) if n == prefix => None,
        Ok(n) => Some(format!(
            "{prefix:?} is matched in its normal form: write {n:?}"
        )),
        Err(e) => Some(format!("{prefix:?}: {e}")),
    }
}
