//! JWT gatekeeping: per-route token policies (`[jwt.NAME]`).
//!
//! A request's way through a policy, cheapest step first, so that a hostile
//! token costs no cryptography:
//!
//! ```text
//! strip forward_claims headers from the client's request      (always)
//! find the token (from = header | cookie:NAME | query:NAME)  token.rs   none: 401 without error=
//! size limit, shape, header (alg, kid, crit), payload JSON    token.rs   401 invalid_token
//! verified-token cache hit? -> exp checked again, done        cache.rs
//! exp, nbf, iss, aud on the still unverified payload           claims.rs  401 invalid_token
//! pick the key (policy's algorithms, kid), verify signature   keys.rs, remote.rs (fetch.rs)
//! require, scopes                                             claims.rs  403 insufficient_scope
//! forward_claims headers set, strip_token                     this file
//! ```
//!
//! The algorithm always comes from the policy: the token's `alg` only selects
//! among the policy's algorithms, and a key is only ever used with
//! algorithms of its own type, so an RSA public key can never act as an
//! HMAC secret.

mod cache;
mod claims;
pub mod compile;
mod fetch;
mod keys;
pub mod mint;
mod remote;
mod token;

#[cfg(test)]
mod tests;

use cache::Cache;
use claims::ClaimRules;
use http::{HeaderName, HeaderValue, StatusCode};
use jsonwebtoken::Algorithm;
use keys::KeySource;
use std::sync::Arc;
use std::time::Duration;
use token::Source;

pub use claims::Claims;

pub struct Policy {
    pub name: String,
    algorithms: Vec<Algorithm>,
    keys: KeySource,
    rules: ClaimRules,
    from: Vec<Source>,
    forward: Vec<(String, HeaderName)>,
    strip_token: bool,
    max_token_size: usize,
    cache: Option<Cache>,
    /// Everything the policy was compiled from (config entry and key
    /// bytes): an unchanged policy is carried over on reload with its cache
    /// and its fetched key set. Never logged: it holds the secret.
    fingerprint: Vec<u8>,
}

/// Why a request was turned away, and how to answer it.
#[derive(Debug)]
pub struct Rejection {
    pub status: StatusCode,
    pub www_authenticate: Option<HeaderValue>,
    /// For the log line only (never sent to the client).
    pub reason: &'static str,
}

impl Rejection {
    /// 401 without `error=`: no token was presented.
    fn missing() -> Self {
        Rejection {
            status: StatusCode::UNAUTHORIZED,
            www_authenticate: Some(HeaderValue::from_static("Bearer realm=\"portcullis\"")),
            reason: "no token",
        }
    }

    /// 401 `invalid_token`: a token was presented and is not acceptable.
    fn invalid(reason: &'static str) -> Self {
        Rejection {
            status: StatusCode::UNAUTHORIZED,
            www_authenticate: Some(HeaderValue::from_static(
                "Bearer realm=\"portcullis\", error=\"invalid_token\"",
            )),
            reason,
        }
    }

    /// 403 `insufficient_scope`: an authentic token without what the route
    /// asks for.
    fn forbidden(reason: &'static str) -> Self {
        Rejection {
            status: StatusCode::FORBIDDEN,
            www_authenticate: Some(HeaderValue::from_static(
                "Bearer realm=\"portcullis\", error=\"insufficient_scope\"",
            )),
            reason,
        }
    }

    /// 400: the request itself is ambiguous (two Authorization headers).
    fn bad_request(reason: &'static str) -> Self {
        Rejection {
            status: StatusCode::BAD_REQUEST,
            www_authenticate: None,
            reason,
        }
    }
}

/// A token that passed every rule of a policy, as kept in the cache.
pub struct Verified {
    pub claims: Claims,
    /// `exp` plus the policy's leeway, in seconds since the epoch: checked
    /// again on every cache hit.
    valid_until: f64,
    /// The forward_claims headers, made once.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The key set generation it was verified under.
    key_gen: u64,
}

impl Policy {
    /// Decide on a request. On success the request is ready to forward
    /// (claims headers set, token stripped when configured) and the verified
    /// claims are returned.
    pub async fn check(
        &self,
        parts: &mut http::request::Parts,
    ) -> Result<Arc<Verified>, Rejection> {
        // Before anything else, so that no path forwards a forged one.
        for (_, h) in &self.forward {
            parts.headers.remove(h);
        }
        let found = token::find(parts, &self.from)?.ok_or_else(Rejection::missing)?;
        let verified = self.verify(found.token.as_bytes()).await?;
        for (h, v) in &verified.headers {
            parts.headers.append(h.clone(), v.clone());
        }
        if self.strip_token {
            token::strip(parts, &found);
        }
        Ok(verified)
    }

    /// The headers this policy's `forward_claims` set.
    pub fn claim_headers(&self) -> impl Iterator<Item = &HeaderName> {
        self.forward.iter().map(|(_, h)| h)
    }

    /// The query parameters tokens are read from (`query:NAME`), whose
    /// values the access log hides.
    pub fn query_names(&self) -> impl Iterator<Item = &str> {
        self.from.iter().filter_map(|s| match s {
            token::Source::Query(n) => Some(n.as_str()),
            _ => None,
        })
    }

    /// Every rule of the policy on one token, with the cache in front.
    pub async fn verify(&self, token: &[u8]) -> Result<Arc<Verified>, Rejection> {
        // Before any parsing, so that a huge token costs nothing.
        if token.len() > self.max_token_size {
            return Err(Rejection::invalid("token too large"));
        }
        let now = claims::now();
        if let Some(cache) = &self.cache {
            // An entry verified under a key set since replaced (jwks_url
            // rotation) is verified again: a withdrawn key stops working at
            // once, not when its tokens expire.
            if let Some(v) = cache
                .get(token)
                .filter(|v| v.key_gen == self.keys.generation())
            {
                if now <= v.valid_until {
                    return Ok(v);
                }
                return Err(Rejection::invalid("token expired"));
            }
        }
        let key_gen = self.keys.generation();
        let parsed = token::parse(token, &self.algorithms)?;
        let valid_until = self.rules.check_time_and_origin(&parsed.claims, now)?;
        // Boxed: a JWKS fetch may be awaited here, and its state would
        // otherwise be part of every request's future (a cache hit never
        // gets here).
        Box::pin(self.keys.verify(&parsed)).await?;
        self.rules.check_grants(&parsed.claims)?;
        let headers = claims::forward_headers(&parsed.claims, &self.forward)?;
        let v = Arc::new(Verified {
            claims: parsed.claims,
            valid_until,
            headers,
            key_gen,
        });
        if let Some(cache) = &self.cache {
            cache.insert(token, v.clone());
        }
        Ok(v)
    }

    /// Whether `other` was compiled from the same entry and keys.
    fn same_as(&self, other: &Policy) -> bool {
        self.fingerprint == other.fingerprint
    }

    /// The HMAC secret, for minting test tokens.
    fn secret(&self) -> Option<&[u8]> {
        self.keys.secret()
    }

    /// How many times a `jwks_url` fetch was started (for tests).
    pub fn jwks_fetches(&self) -> u64 {
        self.keys.fetches()
    }

    /// Changes each time a fetched key set replaces the previous one (for
    /// tests).
    pub fn key_set_generation(&self) -> u64 {
        self.keys.generation()
    }
}

/// Start what policies run in the background (the `jwks_url` fetchers).
/// Called when a snapshot goes live; a fetcher already running (a policy
/// carried over from the previous snapshot) is left alone.
pub fn start(snap: &crate::state::Snapshot) {
    for p in snap.policies.values() {
        p.keys.start();
    }
}

/// Default for `max_token_size`.
pub const DEFAULT_MAX_TOKEN: usize = 8 << 10;
/// Default for `cache_size`.
pub const DEFAULT_CACHE: usize = 10_000;
/// Default for `jwks_refresh`.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
