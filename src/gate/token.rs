//! Finding the token in a request, taking it out again, and the checks of
//! size and shape done before any cryptography.

use super::claims::Claims;
use super::Rejection;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::header::{AUTHORIZATION, COOKIE};
use http::HeaderValue;
use jsonwebtoken::Algorithm;
use serde_json::Value;
use std::str::FromStr;

/// Where a policy looks for its token (`from = [...]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Header,
    Cookie(String),
    Query(String),
}

impl Source {
    pub fn parse(s: &str) -> Result<Source, String> {
        let bad = || format!("{s:?}: expected \"header\", \"cookie:NAME\" or \"query:NAME\"");
        if s == "header" {
            return Ok(Source::Header);
        }
        let (kind, name) = s.split_once(':').ok_or_else(bad)?;
        let ok_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok_name {
            return Err(format!(
                "{s:?}: the name after {kind}: must be letters, digits, '-', '_' or '.'"
            ));
        }
        match kind {
            "cookie" => Ok(Source::Cookie(name.to_string())),
            "query" => Ok(Source::Query(name.to_string())),
            _ => Err(bad()),
        }
    }
}

/// A token and where it was found (for strip_token).
pub struct Found {
    pub token: String,
    pub source: Source,
}

/// A bearer token is a credential: a `{:?}` in a log line or a panic
/// message must not hand it out. Its length is harmless and helps.
struct Redacted(usize);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "REDACTED ({} bytes)", self.0)
    }
}

impl std::fmt::Debug for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Found")
            .field("token", &Redacted(self.token.len()))
            .field("source", &self.source)
            .finish()
    }
}

/// The first token found in the policy's sources, in order. A request with
/// two Authorization headers, two token cookies or two token parameters is
/// refused outright (400): the gate would check one, and which one a later
/// hop reads is anyone's guess (Django takes the last).
pub fn find(parts: &http::request::Parts, from: &[Source]) -> Result<Option<Found>, Rejection> {
    for src in from {
        let token = match src {
            Source::Header => from_header(parts)?,
            Source::Cookie(name) => {
                only_one(cookies(parts), name, "the token cookie twice")?.map(str::to_string)
            }
            Source::Query(name) => only_one(
                query_pairs(parts.uri.query().unwrap_or("")),
                name,
                "the token parameter twice",
            )?
            .map(percent_decode),
        };
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            return Ok(Some(Found {
                token,
                source: src.clone(),
            }));
        }
    }
    Ok(None)
}

fn only_one<'a>(
    mut pairs: impl Iterator<Item = (&'a str, &'a str)>,
    name: &str,
    twice: &'static str,
) -> Result<Option<&'a str>, Rejection> {
    let Some((_, v)) = pairs.find(|(k, _)| *k == name) else {
        return Ok(None);
    };
    if pairs.any(|(k, _)| k == name) {
        return Err(Rejection::bad_request(twice));
    }
    Ok(Some(v))
}

fn from_header(parts: &http::request::Parts) -> Result<Option<String>, Rejection> {
    let mut values = parts.headers.get_all(AUTHORIZATION).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Rejection::bad_request("two Authorization headers"));
    }
    let Ok(v) = v.to_str() else {
        return Err(Rejection::invalid("Authorization header is not ASCII"));
    };
    let v = v.trim();
    // The scheme is case-insensitive (RFC 7235); another scheme (Basic) is
    // not ours: no token here.
    match v.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
            Ok(Some(rest.trim_start().to_string()))
        }
        _ if v.eq_ignore_ascii_case("bearer") => Ok(Some(String::new())),
        _ => Ok(None),
    }
}

/// Every `name=value` pair of every Cookie header (HTTP/2 may split them).
fn cookies(parts: &http::request::Parts) -> impl Iterator<Item = (&str, &str)> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            Some((k.trim(), v.trim().trim_matches('"')))
        })
}

fn query_pairs(q: &str) -> impl Iterator<Item = (&str, &str)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// Tokens are base64url and dots, so only a client's over-eager escaping
/// needs undoing; anything odd stays as is and fails the shape check.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `strip_token = true`: take the token out of where it was found.
pub fn strip(parts: &mut http::request::Parts, found: &Found) {
    match &found.source {
        Source::Header => {
            parts.headers.remove(AUTHORIZATION);
        }
        Source::Cookie(name) => {
            let kept: Vec<String> = cookies(parts)
                .filter(|(k, _)| *k != name.as_str())
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            parts.headers.remove(COOKIE);
            if !kept.is_empty() {
                // Built from parts of valid header values joined with "; ".
                if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
                    parts.headers.insert(COOKIE, v);
                }
            }
        }
        Source::Query(name) => {
            let Some(q) = parts.uri.query() else { return };
            let kept: Vec<&str> = q
                .split('&')
                .filter(|p| !p.is_empty() && p.split('=').next() != Some(name.as_str()))
                .collect();
            let path = parts.uri.path();
            let pq = if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            };
            let mut up = http::uri::Parts::from(parts.uri.clone());
            if let Ok(pq) = pq.parse() {
                up.path_and_query = Some(pq);
                if let Ok(u) = http::Uri::from_parts(up) {
                    parts.uri = u;
                }
            }
        }
    }
}

/// A token whose shape and header passed, signature not yet checked.
pub struct Parsed<'a> {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub claims: Claims,
    /// `header.payload`, the signed bytes.
    pub message: &'a [u8],
    pub signature: &'a str,
}

/// The claims are what the token says, not the token: they print. The
/// signed bytes and the signature together are the token: they do not.
impl std::fmt::Debug for Parsed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parsed")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("claims", &self.claims)
            .field("message", &Redacted(self.message.len()))
            .field("signature", &Redacted(self.signature.len()))
            .finish()
    }
}

/// Longest `kid` looked up: real ones are short; a long one is an attack.
const MAX_KID: usize = 256;

/// Shape, header and payload, before any signature work. The token's `alg`
/// must be one of the policy's; `none` never is, in any spelling.
pub fn parse<'a>(token: &'a [u8], algorithms: &[Algorithm]) -> Result<Parsed<'a>, Rejection> {
    if !token
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(Rejection::invalid("malformed token"));
    }
    let dots: Vec<usize> = token
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'.')
        .map(|(i, _)| i)
        .take(3)
        .collect();
    let [d1, d2] = dots[..] else {
        return Err(Rejection::invalid("malformed token"));
    };
    let (h64, p64, s64) = (&token[..d1], &token[d1 + 1..d2], &token[d2 + 1..]);
    if s64.is_empty() {
        return Err(Rejection::invalid("signature missing"));
    }
    let header = json_object(h64).ok_or(Rejection::invalid("malformed header"))?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) if a.trim().eq_ignore_ascii_case("none") => {
            return Err(Rejection::invalid("alg none"))
        }
        Some(Value::String(a)) => Algorithm::from_str(a)
            .ok()
            .filter(|a| algorithms.contains(a))
            .ok_or(Rejection::invalid("algorithm not allowed"))?,
        _ => return Err(Rejection::invalid("malformed header")),
    };
    // No extension is understood, so any critical one rejects (RFC 7515
    // 4.1.11). jku, x5u, jwk and x5c are never read: keys come only from
    // the policy.
    if header.contains_key("crit") {
        return Err(Rejection::invalid("unknown crit header"));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) if k.len() <= MAX_KID => Some(k.clone()),
        Some(_) => return Err(Rejection::invalid("bad kid")),
    };
    let claims = json_object(p64).ok_or(Rejection::invalid("malformed payload"))?;
    // Signature bytes are checked as base64url by the shape check; the
    // verifier decodes them.
    let message = &token[..d2];
    let signature = std::str::from_utf8(s64).map_err(|_| Rejection::invalid("malformed token"))?;
    Ok(Parsed {
        alg,
        kid,
        claims,
        message,
        signature,
    })
}

fn json_object(b64: &[u8]) -> Option<Claims> {
    let bytes = URL_SAFE_NO_PAD.decode(b64).ok()?;
    match serde_json::from_slice::<Value>(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}
