//! The request path in one normal form, so that the route the proxy picks
//! (and the JWT policy it applies) is the route the application sees.
//!
//! A backend decodes `%61pi` to `api`, may merge `//`, and a path like
//! `/static/../api/x` names `/api/x` to almost any server. Matched raw,
//! each of these would reach an `/api/` route's resources through another
//! route, past its JWT policy. Like nginx, the proxy matches on a normal
//! form; unlike nginx's default `proxy_pass`, it also forwards that form,
//! so proxy and backend can never read one path two ways.
//!
//! The normal form:
//! - escapes of unreserved characters (letters, digits, `-._~`) decoded,
//!   every other escape kept, with upper-case hex (RFC 3986 §6.2.2);
//! - empty segments (`//`) merged, `.` dropped, `..` resolved; a `..` above
//!   the root is refused, as by nginx;
//! - an encoded slash (`%2F`) kept, since some applications tell it from
//!   `/`, but only between two real segments: a backend that decodes it
//!   (gunicorn does) must not find a `..` or an empty segment that was
//!   hidden from the router. Routes match `%2F` as a `/` (`Router::find`).
//!
//! Invalid escapes, an encoded NUL and a backslash, raw or encoded, are
//! refused.

use std::borrow::Cow;

/// The path's normal form, borrowed when it already is one (nearly every
/// request: real clients send normal paths). The error is the reason for
/// the 400.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, &'static str> {
    if is_normal(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    if !path.starts_with('/') {
        return Err("the request path must start with /");
    }
    // A separator to Windows servers and to URL parsers that follow the
    // WHATWG rules (`/z\..\api` is `/api` to Node); no client sends one.
    if path.contains('\\') {
        return Err("a backslash in the path");
    }
    let decoded = decode_unreserved(path)?;
    let mut segments: Vec<&str> = Vec::new();
    let mut dir = false;
    for seg in decoded[1..].split('/') {
        dir = true;
        match seg {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err("the request path goes above the root");
                }
            }
            s => {
                if s.split("%2F").any(|p| matches!(p, "" | "." | "..")) {
                    return Err("an encoded slash next to another slash or a dot segment");
                }
                segments.push(s);
                dir = false;
            }
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if dir || segments.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// No escape, no empty segment, no dot segment, a leading slash.
fn is_normal(p: &[u8]) -> bool {
    if p.first() != Some(&b'/') {
        return false;
    }
    for (i, &b) in p.iter().enumerate() {
        match b {
            b'%' | b'\\' => return false,
            b'/' => {
                let next = &p[i + 1..];
                let seg = next.split(|&c| c == b'/').next().unwrap_or_default();
                // An empty segment is fine only at the very end (`/dir/`).
                if (seg.is_empty() && !next.is_empty()) || seg == b"." || seg == b".." {
                    return false;
                }
            }
            _ => {}
        }
    }
    true
}

fn decode_unreserved(path: &str) -> Result<String, &'static str> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
            return Err("a bad percent-escape in the path");
        };
        let v = (hi * 16 + lo) as u8;
        if v == 0 {
            return Err("an encoded NUL in the path");
        }
        // A server that decodes it and then takes it for a separator
        // (IIS) reads `/x%5C..%5Capi/y` as `/api/y`, which the router
        // would see as one segment under `/`.
        if v == b'\\' {
            return Err("an encoded backslash in the path");
        }
        if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
            out.push(v);
        } else {
            out.extend_from_slice(&[b'%', HEX[hi as usize], HEX[lo as usize]]);
        }
        i += 3;
    }
    // Only ASCII bytes were put in place of ASCII escapes.
    Ok(String::from_utf8(out).expect("ASCII replaced by ASCII keeps UTF-8 valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, &'static str> {
        normalize(p).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed_as_they_are() {
        for p in ["/", "/api/x", "/dir/", "/a.b/c..d/.e", "/x/.../y"] {
            assert!(
                matches!(normalize(p), Ok(Cow::Borrowed(q)) if q == p),
                "{p}"
            );
        }
    }

    #[test]
    fn the_ways_around_a_prefix_all_lead_to_it() {
        for p in [
            "/%61pi/x",
            "/%61%70%69/x",
            "//api/x",
            "/./api/x",
            "/z/../api/x",
            "/api/./x",
            "/api//x",
            "/%2e/api/x",
            "/z/%2E%2E/api/x",
        ] {
            assert_eq!(n(p).as_deref(), Ok("/api/x"), "{p}");
        }
    }

    #[test]
    fn trailing_slashes_and_dots_keep_the_directory_form() {
        assert_eq!(n("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(n("/a/.").as_deref(), Ok("/a/"));
        assert_eq!(n("/a//").as_deref(), Ok("/a/"));
        assert_eq!(n("/a/..").as_deref(), Ok("/"));
        assert_eq!(n("//").as_deref(), Ok("/"));
    }

    #[test]
    fn reserved_escapes_stay_escaped_in_upper_case() {
        assert_eq!(n("/a%2fb").as_deref(), Ok("/a%2Fb"));
        assert_eq!(n("/caf%c3%a9").as_deref(), Ok("/caf%C3%A9"));
        assert_eq!(n("/a%20b").as_deref(), Ok("/a%20b"));
    }

    #[test]
    fn what_cannot_be_read_one_way_only_is_refused() {
        for p in [
            "/..",
            "/a/../..",
            "/%2e%2e/x",
            "/a%2F..%2Fb",
            "/public/..%2Fapi/x",
            "/%2Fapi/x",
            "/a%2F%2Fb",
            "/a%2F",
            "/a%2",
            "/a%zz",
            "/a%00b",
            "/api\\x",
            "/z\\..\\api/x",
            "/z%5C..%5Capi/x",
            "/api%5cx",
            "api/x",
        ] {
            assert!(n(p).is_err(), "{p} was accepted as {:?}", n(p));
        }
    }
}
