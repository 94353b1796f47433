//! `[jwt.NAME]` -> `Policy`. Keys are loaded here, so a missing or
//! malformed key is a config error with its place, never a runtime
//! surprise. Secrets never appear in an error message.

mod key_material;

use super::token::Source as TokenSource;
use super::{Policy, DEFAULT_CACHE, DEFAULT_MAX_TOKEN};
use crate::config::raw::RawJwt;
use crate::config::units::{parse_duration, parse_size};
use crate::config::{Errors, Source};
use crate::state::Snapshot;
use http::HeaderName;
use jsonwebtoken::Algorithm;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Compile every policy. An unchanged policy (same entry, same key bytes)
/// is taken over from `prev` whole, with its cache and fetched keys.
pub fn policies(
    raw: BTreeMap<String, RawJwt>,
    errs: &mut Errors,
    src: &Source,
    files: &mut Vec<PathBuf>,
    prev: Option<&Snapshot>,
) -> BTreeMap<String, Arc<Policy>> {
    let mut out = BTreeMap::new();
    for (name, r) in raw {
        let mut c = PolicyCompiler {
            place: format!("jwt.{name}"),
            errs,
            src,
            files,
            fingerprint: format!("{r:?}").into_bytes(),
        };
        let Some(p) = c.policy(&name, r) else {
            continue;
        };
        let p = match prev.and_then(|s| s.policies.get(&name)) {
            Some(old) if old.same_as(&p) => old.clone(),
            _ => Arc::new(p),
        };
        out.insert(name, p);
    }
    out
}

struct PolicyCompiler<'a> {
    place: String,
    errs: &'a mut Errors,
    src: &'a Source,
    files: &'a mut Vec<PathBuf>,
    fingerprint: Vec<u8>,
}

/// Header names that carry the request's framing or routing: a claim must
/// not overwrite them.
const RESERVED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "authorization",
    "cookie",
];

impl PolicyCompiler<'_> {
    fn err(&mut self, key: &str, msg: impl Into<String>) {
        let place = if key.is_empty() {
            self.place.clone()
        } else {
            format!("{}.{key}", self.place)
        };
        self.errs.add(place, msg);
    }

    fn policy(&mut self, name: &str, r: RawJwt) -> Option<Policy> {
        let n_errs = self.errs.0.len();
        let algorithms = self.algorithms(&r.algorithms);
        let keys = self.keys(name, &r, &algorithms);
        let mut rules = super::claims::ClaimRules {
            issuer: self.names(r.issuer, "issuer"),
            audience: self.names(r.audience, "audience"),
            ..Default::default()
        };
        rules.leeway = self
            .duration(&r.leeway, "leeway", Duration::ZERO)
            .as_secs_f64();
        for (k, v) in r.require.into_iter().flatten() {
            let j = match v {
                toml::Value::String(s) => serde_json::Value::String(s),
                toml::Value::Integer(i) => serde_json::Value::from(i),
                toml::Value::Boolean(b) => serde_json::Value::Bool(b),
                toml::Value::Float(f) if f.is_finite() => serde_json::Value::from(f),
                _ => {
                    self.err(
                        &format!("require.{k}"),
                        "only strings, numbers and booleans can be required",
                    );
                    continue;
                }
            };
            rules.require.push((k, j));
        }
        for (i, s) in r.scopes.into_iter().flatten().enumerate() {
            if s.is_empty() || s.contains(char::is_whitespace) {
                self.err(
                    &format!("scopes[{i}]"),
                    "a scope is one word without spaces",
                );
            } else {
                rules.scopes.push(s);
            }
        }
        let from = match r.from {
            None => vec![TokenSource::Header],
            Some(list) => {
                if list.is_empty() {
                    self.err(
                        "from",
                        "empty: list at least one of \"header\", \"cookie:NAME\", \"query:NAME\"",
                    );
                }
                let mut out = Vec::new();
                for (i, s) in list.iter().enumerate() {
                    match TokenSource::parse(s) {
                        Ok(src) => out.push(src),
                        Err(e) => self.err(&format!("from[{i}]"), e),
                    }
                }
                out
            }
        };
        let mut forward: Vec<(String, HeaderName)> = Vec::new();
        for (claim, header) in r.forward_claims.into_iter().flatten() {
            match HeaderName::from_bytes(header.as_bytes()) {
                Ok(h) if RESERVED.contains(&h.as_str()) => self.err(
                    &format!("forward_claims.{claim}"),
                    format!("{header:?} cannot carry a claim"),
                ),
                Ok(h) if forward.iter().any(|(_, o)| *o == h) => self.err(
                    &format!("forward_claims.{claim}"),
                    format!("header {header:?} is used twice"),
                ),
                Ok(h) => forward.push((claim, h)),
                Err(_) => self.err(
                    &format!("forward_claims.{claim}"),
                    format!("{header:?} is not a valid header name"),
                ),
            }
        }
        let max_token_size = match &r.max_token_size {
            None => DEFAULT_MAX_TOKEN,
            Some(s) => match parse_size(s) {
                Ok(n) if (256..=1 << 20).contains(&n) => n as usize,
                Ok(_) => {
                    self.err("max_token_size", "must be between 256B and 1MiB");
                    DEFAULT_MAX_TOKEN
                }
                Err(e) => {
                    self.err("max_token_size", e);
                    DEFAULT_MAX_TOKEN
                }
            },
        };
        let cache = super::cache::Cache::new(r.cache_size.unwrap_or(DEFAULT_CACHE));
        if self.errs.0.len() > n_errs {
            return None;
        }
        Some(Policy {
            name: name.to_string(),
            algorithms,
            keys: keys?,
            rules,
            from,
            forward,
            strip_token: r.strip_token.unwrap_or(false),
            max_token_size,
            cache,
            fingerprint: std::mem::take(&mut self.fingerprint),
        })
    }

    fn algorithms(&mut self, raw: &[String]) -> Vec<Algorithm> {
        if raw.is_empty() {
            self.err(
                "algorithms",
                "list the accepted algorithms, e.g. [\"HS256\"] or [\"RS256\"]",
            );
        }
        let mut out = Vec::new();
        for (i, a) in raw.iter().enumerate() {
            if a.trim().eq_ignore_ascii_case("none") {
                self.err(&format!("algorithms[{i}]"), "\"none\" is never accepted");
                continue;
            }
            match Algorithm::from_str(a) {
                Ok(alg) if !out.contains(&alg) => out.push(alg),
                Ok(_) => {}
                Err(_) => self.err(
                    &format!("algorithms[{i}]"),
                    format!("{a:?} is not one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"),
                ),
            }
        }
        out
    }

    fn names(&mut self, v: Option<crate::config::raw::StringOrList>, key: &str) -> Vec<String> {
        let list = v.map(|v| v.into_vec()).unwrap_or_default();
        if list.iter().any(String::is_empty) {
            self.err(key, "empty value");
        }
        list
    }

    fn duration(&mut self, v: &Option<String>, key: &str, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => parse_duration(s).unwrap_or_else(|e| {
                self.err(key, e);
                default
            }),
        }
    }
}
