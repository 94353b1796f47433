//! Claim rules. A claim of the wrong JSON type is invalid, never coerced:
//! `"exp": "9999999999"` (a string) is not a time, `"aud": 5` not an
//! audience.

use super::Rejection;
use http::{HeaderName, HeaderValue};
use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};

pub type Claims = serde_json::Map<String, Value>;

#[derive(Debug, Default)]
pub struct ClaimRules {
    /// Accepted `iss` values; empty: not checked.
    pub issuer: Vec<String>,
    /// Accepted `aud` values (any one suffices); empty: not checked.
    pub audience: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway: f64,
    /// Claims that must be present with exactly this JSON value.
    pub require: Vec<(String, Value)>,
    /// Scopes that must all be granted.
    pub scopes: Vec<String>,
}

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A JSON number, integer or not; anything else is not a NumericDate.
fn numeric_date(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

impl ClaimRules {
    /// The 401 rules, checked on the payload before the signature is (they
    /// are cheap and need no key) and so binding after it. Returns the
    /// moment the token stops being valid (`exp` + leeway).
    pub fn check_time_and_origin(&self, c: &Claims, now: f64) -> Result<f64, Rejection> {
        let exp = match c.get("exp") {
            None => return Err(Rejection::invalid("exp missing")),
            Some(v) => numeric_date(v).ok_or(Rejection::invalid("exp is not a number"))?,
        };
        if now > exp + self.leeway {
            return Err(Rejection::invalid("token expired"));
        }
        if let Some(v) = c.get("nbf") {
            let nbf = numeric_date(v).ok_or(Rejection::invalid("nbf is not a number"))?;
            if nbf - self.leeway > now {
                return Err(Rejection::invalid("token not yet valid (nbf)"));
            }
        }
        if !self.issuer.is_empty() {
            match c.get("iss") {
                None => return Err(Rejection::invalid("iss missing")),
                Some(Value::String(s)) if self.issuer.iter().any(|i| i == s) => {}
                Some(Value::String(_)) => return Err(Rejection::invalid("wrong issuer")),
                Some(_) => return Err(Rejection::invalid("iss is not a string")),
            }
        }
        if !self.audience.is_empty() {
            let ok = |s: &String| self.audience.iter().any(|a| a == s);
            match c.get("aud") {
                None => return Err(Rejection::invalid("aud missing")),
                Some(Value::String(s)) => {
                    if !ok(s) {
                        return Err(Rejection::invalid("wrong audience"));
                    }
                }
                Some(Value::Array(list)) => {
                    let mut any = false;
                    for v in list {
                        match v {
                            Value::String(s) => any |= ok(s),
                            _ => {
                                return Err(Rejection::invalid(
                                    "aud is not a string or list of strings",
                                ))
                            }
                        }
                    }
                    if !any {
                        return Err(Rejection::invalid("wrong audience"));
                    }
                }
                Some(_) => {
                    return Err(Rejection::invalid("aud is not a string or list of strings"))
                }
            }
        }
        Ok(exp + self.leeway)
    }

    /// The 403 rules, on an authentic token.
    pub fn check_grants(&self, c: &Claims) -> Result<(), Rejection> {
        for (k, want) in &self.require {
            // serde_json compares numbers by kind too: 1 != 1.0 != "1".
            if c.get(k) != Some(want) {
                return Err(Rejection::forbidden("required claim missing or different"));
            }
        }
        if !self.scopes.is_empty() {
            let granted = granted_scopes(c);
            if !self.scopes.iter().all(|s| granted.contains(&s.as_str())) {
                return Err(Rejection::forbidden("scope missing"));
            }
        }
        Ok(())
    }
}

/// `scope` (space-separated string, RFC 8693) and `scp` (a list, or a
/// space-separated string as some identity providers send it).
fn granted_scopes(c: &Claims) -> Vec<&str> {
    let mut out = Vec::new();
    if let Some(Value::String(s)) = c.get("scope") {
        out.extend(s.split(' ').filter(|s| !s.is_empty()));
    }
    match c.get("scp") {
        Some(Value::String(s)) => out.extend(s.split(' ').filter(|s| !s.is_empty())),
        Some(Value::Array(a)) => out.extend(a.iter().filter_map(Value::as_str)),
        _ => {}
    }
    out
}

/// The forward_claims headers of a verified token: strings as they are,
/// numbers and booleans in their JSON form, arrays joined with spaces,
/// objects as JSON. A missing claim sets no header; a claim that cannot be
/// a header value (a control character) refuses the token rather than
/// forward it mangled.
pub fn forward_headers(
    c: &Claims,
    forward: &[(String, HeaderName)],
) -> Result<Vec<(HeaderName, HeaderValue)>, Rejection> {
    let mut out = Vec::with_capacity(forward.len());
    for (claim, header) in forward {
        let Some(v) = c.get(claim) else { continue };
        let text = match v {
            Value::Null => continue,
            Value::Array(items) => items.iter().map(json_text).collect::<Vec<_>>().join(" "),
            v => json_text(v),
        };
        let hv = HeaderValue::from_bytes(text.as_bytes())
            .map_err(|_| Rejection::forbidden("claim cannot be forwarded as a header"))?;
        out.push((header.clone(), hv));
    }
    Ok(out)
}

fn json_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}
