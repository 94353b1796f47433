//! Request headers that shape a file response (RFC 9110): validators and
//! conditional requests (section 13), byte ranges (section 14), and the
//! encodings a client accepts (section 12.5.3). Pure functions of header
//! values, so each rule is tested without a file.

use http::header::{
    HeaderMap, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE,
};
use http::HeaderValue;
use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a file's validators are: the ETag's opaque value (quotes included)
/// and the modification time, whole seconds as HTTP dates carry it.
pub struct Validators<'a> {
    pub etag: &'a str,
    pub modified: Option<SystemTime>,
}

/// A strong ETag from what changes when the file does: modification time to
/// the nanosecond and length, plus the content coding, because a `.br` and
/// the plain file are different representations. The inode is left out so
/// that servers behind one balancer, fed by the same deploy, agree.
pub fn etag(modified: Option<SystemTime>, len: u64, coding: Option<&str>) -> String {
    let d = modified
        .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default();
    match coding {
        Some(c) => format!("\"{:x}.{:x}-{len:x}-{c}\"", d.as_secs(), d.subsec_nanos()),
        None => format!("\"{:x}.{:x}-{len:x}\"", d.as_secs(), d.subsec_nanos()),
    }
}

/// The ETag, Last-Modified and whole-file Content-Length header values of
/// one version of a file. Formatting them (hex digits, an HTTP date, a
/// number) cost more than opening the file, so each thread keeps the values
/// of recent versions, in a small table indexed by a hash of what they are
/// made from; a kept value is handed out by reference count.
pub fn validator_values(
    modified: Option<SystemTime>,
    len: u64,
    coding: Option<&'static str>,
) -> (HeaderValue, Option<HeaderValue>, HeaderValue) {
    type Slot = Option<(
        (Option<SystemTime>, u64, Option<&'static str>),
        HeaderValue,
        Option<HeaderValue>,
        HeaderValue,
    )>;
    const SLOTS: usize = 64;
    thread_local! {
        static RECENT: RefCell<[Slot; SLOTS]> = const { RefCell::new([const { None }; SLOTS]) };
    }
    let key = (modified, len, coding);
    let d = modified
        .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default();
    let mix = (d.as_secs() ^ u64::from(d.subsec_nanos()) ^ len.rotate_left(32))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let i = (mix >> 58) as usize % SLOTS;
    RECENT.with_borrow_mut(|recent| {
        if let Some((k, e, lm, n)) = &recent[i] {
            if *k == key {
                return (e.clone(), lm.clone(), n.clone());
            }
        }
        // Hex digits, quotes, dots and a coding name: always a valid value.
        let e = HeaderValue::from_str(&etag(modified, len, coding))
            .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
        let lm = modified.and_then(|m| HeaderValue::try_from(httpdate::fmt_http_date(m)).ok());
        let n = HeaderValue::from(len);
        recent[i] = Some((key, e.clone(), lm.clone(), n.clone()));
        (e, lm, n)
    })
}

/// HTTP dates have whole seconds; compare in those.
pub fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d: Duration| d.as_secs())
}

fn header_str<'h>(h: &'h HeaderMap, name: &http::HeaderName) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn date(s: &str) -> Option<u64> {
    httpdate::parse_http_date(s).ok().map(secs)
}

#[derive(Debug, PartialEq, Eq)]
pub enum Precondition {
    Proceed,
    NotModified,
    Failed,
}

/// RFC 9110 section 13.2.2, in its order, for GET and HEAD.
pub fn evaluate(h: &HeaderMap, v: &Validators) -> Precondition {
    let mtime = v.modified.map(secs);
    if let Some(im) = header_str(h, &IF_MATCH) {
        if !any_tag(im, |t| strong_eq(t, v.etag)) {
            return Precondition::Failed;
        }
    } else if let Some(ius) = header_str(h, &IF_UNMODIFIED_SINCE).and_then(date) {
        if mtime.is_none_or(|m| m > ius) {
            return Precondition::Failed;
        }
    }
    if let Some(inm) = header_str(h, &IF_NONE_MATCH) {
        if any_tag(inm, |t| weak_eq(t, v.etag)) {
            return Precondition::NotModified;
        }
    } else if let Some(ims) = header_str(h, &IF_MODIFIED_SINCE).and_then(date) {
        if mtime.is_some_and(|m| m <= ims) {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

/// Whether the `If-Range` condition (if any) lets a `Range` apply: a strong
/// ETag that matches, or exactly the Last-Modified date.
pub fn if_range_holds(h: &HeaderMap, v: &Validators) -> bool {
    let Some(ir) = h.get(IF_RANGE) else {
        return true;
    };
    let Ok(ir) = ir.to_str() else { return false };
    let ir = ir.trim();
    if ir.starts_with('"') || ir.starts_with("W/") {
        return strong_eq(ir, v.etag);
    }
    matches!((date(ir), v.modified.map(secs)), (Some(d), Some(m)) if d == m)
}

/// `*` or a list of entity-tags; an entity tag may itself hold commas, so
/// this walks quotes rather than splitting on commas.
fn any_tag(list: &str, mut f: impl FnMut(&str) -> bool) -> bool {
    if list.trim() == "*" {
        return true;
    }
    let mut s = list;
    loop {
        s = s.trim_start_matches([' ', '\t', ',']);
        if s.is_empty() {
            return false;
        }
        let start = if s.starts_with("W/\"") { 2 } else { 0 };
        if !s[start..].starts_with('"') {
            return false; // malformed: match nothing
        }
        let Some(end) = s[start + 1..].find('"') else {
            return false;
        };
        let tag_end = start + 1 + end + 1;
        if f(&s[..tag_end]) {
            return true;
        }
        s = &s[tag_end..];
    }
}

fn strong_eq(tag: &str, ours: &str) -> bool {
    !tag.starts_with("W/") && tag == ours
}

fn weak_eq(tag: &str, ours: &str) -> bool {
    tag.strip_prefix("W/").unwrap_or(tag) == ours.strip_prefix("W/").unwrap_or(ours)
}

#[derive(Debug, PartialEq, Eq)]
pub enum Range {
    /// No usable Range: send the whole representation.
    Full,
    /// Inclusive first and last byte.
    Partial(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range: `a-b`, `a-` or the suffix `-n`. Several ranges, other
/// units or bad syntax are ignored (a 200 with the whole file), which RFC
/// 9110 section 14.2 allows; a well-formed range starting past the end is
/// unsatisfiable (416).
pub fn range(value: &str, len: u64) -> Range {
    let value = value.trim();
    let Some((unit, spec)) = value.split_once('=') else {
        return Range::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return Range::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let Some(n) = digits(b) else {
            return Range::Full;
        };
        if n == 0 || len == 0 {
            return Range::Unsatisfiable;
        }
        return Range::Partial(len.saturating_sub(n), len - 1);
    }
    let Some(first) = digits(a) else {
        return Range::Full;
    };
    let last = if b.is_empty() {
        u64::MAX
    } else {
        match digits(b) {
            Some(l) if l >= first => l,
            _ => return Range::Full,
        }
    };
    if first >= len {
        return Range::Unsatisfiable;
    }
    Range::Partial(first, last.min(len - 1))
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Br,
    Gzip,
}

impl Coding {
    pub fn name(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }
    pub fn suffix(self) -> &'static str {
        match self {
            Coding::Br => ".br",
            Coding::Gzip => ".gz",
        }
    }
}

/// The precompressed codings to try, best first: by q-value, br before
/// gzip on a tie, none with q=0. `*` stands for any coding not named.
pub fn accepted(value: Option<&http::HeaderValue>) -> [Option<Coding>; 2] {
    let Some(s) = value.and_then(|v| v.to_str().ok()) else {
        return [None, None];
    };
    let (mut br, mut gz, mut star) = (None, None, None);
    for item in s.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let mut q = 1000u32;
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    q = qvalue(v.trim());
                }
            }
        }
        if name.eq_ignore_ascii_case("br") {
            br = Some(q);
        } else if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            gz = Some(q);
        } else if name == "*" {
            star = Some(q);
        }
    }
    let br = br.or(star).unwrap_or(0);
    let gz = gz.or(star).unwrap_or(0);
    let pick = |c, q| (q > 0).then_some(c);
    if gz > br {
        [pick(Coding::Gzip, gz), pick(Coding::Br, br)]
    } else {
        [pick(Coding::Br, br), pick(Coding::Gzip, gz)]
    }
}

/// A q-value in thousandths; anything malformed counts as 0 (not wanted).
fn qvalue(s: &str) -> u32 {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    let f: u32 = frac
        .bytes()
        .zip([100, 10, 1])
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    match int {
        "0" => f,
        "1" if f == 0 => 1000,
        _ => 0,
    }
}

#[cfg(test)]
mod tests;
