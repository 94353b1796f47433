//! A line in nginx's combined format (with the proxy's own fields after
//! it) or as a JSON object, written straight into the slot's buffer.

use super::writer::Clf;
use super::{redact, Entry};
use http::HeaderValue;
use std::borrow::Cow;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// A header value as text; the bytes a field may hold that are not UTF-8
/// become U+FFFD, as they did when the log kept its own copy.
fn text(v: &Option<HeaderValue>) -> Cow<'_, str> {
    v.as_ref()
        .map_or(Cow::Borrowed(""), |v| String::from_utf8_lossy(v.as_bytes()))
}

fn hidden<'a>(e: &Entry, s: Cow<'a, str>) -> Cow<'a, str> {
    match (&e.hidden, s) {
        (Some(h), Cow::Borrowed(b)) => redact(b, h),
        (Some(h), Cow::Owned(o)) => Cow::Owned(redact(&o, h).into_owned()),
        (None, s) => s,
    }
}

/// What a combined line quotes: `"` would end the field early.
fn quoted(out: &mut Vec<u8>, s: &str) {
    let mut rest = s.as_bytes();
    while let Some(i) = rest.iter().position(|&b| b == b'"') {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(b"%22");
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
}

/// A name from the users file, as one unquoted field: a space, a quote, a
/// backslash or any byte outside printable ASCII as `\xNN`, as nginx
/// escapes `$remote_user`, so that the line still splits on spaces.
fn user(out: &mut Vec<u8>, name: &str) {
    for &b in name.as_bytes() {
        if b.is_ascii_graphic() && b != b'"' && b != b'\\' {
            out.push(b);
        } else {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
}

fn dash(out: &mut Vec<u8>, s: &str) {
    if s.is_empty() {
        out.push(b'-');
    } else {
        quoted(out, s);
    }
}

fn seconds_ms(out: &mut Vec<u8>, ms: u128) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(ms / 1000).as_bytes());
    let frac = (ms % 1000) as u16;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// nginx's combined format, plus request time, upstream, attempts, id and
/// the upstream's time to its response head.
pub(super) fn combined(out: &mut Vec<u8>, clf: &mut Clf, e: &Entry, micros: u64) {
    let mut n = itoa::Buffer::new();
    let _ = write!(out, "{} - ", e.client);
    match &e.user {
        Some(u) => user(out, u),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" [");
    out.extend_from_slice(clf_time_cached(clf, e.time).as_bytes());
    out.extend_from_slice(b"] \"");
    match &e.raw_line {
        Some(line) => quoted(out, &hidden(e, Cow::Borrowed(line))),
        None => {
            out.extend_from_slice(e.method.as_str().as_bytes());
            out.push(b' ');
            quoted(out, &hidden(e, Cow::Borrowed(e.target())));
            out.push(b' ');
            out.extend_from_slice(version(e.version).as_bytes());
        }
    }
    out.extend_from_slice(b"\" ");
    out.extend_from_slice(n.format(e.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(n.format(e.bytes).as_bytes());
    out.extend_from_slice(b" \"");
    dash(out, &hidden(e, text(&e.referer)));
    out.extend_from_slice(b"\" \"");
    dash(out, &text(&e.user_agent));
    out.extend_from_slice(b"\" rt=");
    seconds_ms(out, (micros / 1000) as u128);
    out.extend_from_slice(b" upstream=");
    out.extend_from_slice(e.upstream.as_deref().unwrap_or("-").as_bytes());
    out.extend_from_slice(b" attempts=");
    out.extend_from_slice(n.format(e.attempts).as_bytes());
    out.extend_from_slice(b" id=");
    out.extend_from_slice(e.request_id.as_ref().map_or(&b"-"[..], |v| v.as_bytes()));
    match e.upstream_head {
        Some(d) => {
            out.extend_from_slice(b" uht=");
            seconds_ms(out, d.as_millis());
        }
        None => out.extend_from_slice(b" uht=-"),
    }
    if let Some(r) = e.reason {
        out.extend_from_slice(b" reason=");
        out.extend_from_slice(r.as_bytes());
    }
}

/// A JSON string, escaped by serde_json.
fn string(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn number(out: &mut Vec<u8>, v: f64) {
    let _ = serde_json::to_writer(&mut *out, &v);
}

pub(super) fn json(out: &mut Vec<u8>, e: &Entry, micros: u64) {
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(b"{\"time\":");
    number(out, unix_secs(e.time));
    let _ = write!(out, ",\"client\":\"{}\"", e.client);
    match &e.raw_line {
        Some(line) => {
            out.extend_from_slice(
                b",\"method\":null,\"uri\":null,\"protocol\":null,\"request_line\":",
            );
            string(out, &hidden(e, Cow::Borrowed(line)));
        }
        None => {
            out.extend_from_slice(b",\"method\":");
            string(out, e.method.as_str());
            out.extend_from_slice(b",\"uri\":");
            string(out, &hidden(e, Cow::Borrowed(e.target())));
            out.extend_from_slice(b",\"protocol\":\"");
            out.extend_from_slice(version(e.version).as_bytes());
            out.push(b'"');
        }
    }
    out.extend_from_slice(b",\"host\":");
    string(out, &e.host);
    out.extend_from_slice(b",\"status\":");
    out.extend_from_slice(n.format(e.status).as_bytes());
    out.extend_from_slice(b",\"bytes\":");
    out.extend_from_slice(n.format(e.bytes).as_bytes());
    out.extend_from_slice(b",\"duration_ms\":");
    number(out, micros as f64 / 1000.0);
    out.extend_from_slice(b",\"referer\":");
    string(out, &hidden(e, text(&e.referer)));
    out.extend_from_slice(b",\"user_agent\":");
    string(out, &text(&e.user_agent));
    if let Some(u) = &e.user {
        out.extend_from_slice(b",\"user\":");
        string(out, u);
    }
    out.extend_from_slice(b",\"upstream\":");
    match &e.upstream {
        Some(u) => string(out, u),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"attempts\":");
    out.extend_from_slice(n.format(e.attempts).as_bytes());
    out.extend_from_slice(b",\"upstream_header_ms\":");
    match e.upstream_head {
        Some(d) => number(out, d.as_micros() as f64 / 1000.0),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"request_id\":");
    match &e.request_id {
        Some(id) => string(out, &String::from_utf8_lossy(id.as_bytes())),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"reason\":");
    match e.reason {
        Some(r) => string(out, r),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `clf_time`, made once a second per slot.
fn clf_time_cached(c: &mut Clf, t: SystemTime) -> &str {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    if c.text.is_empty() || c.secs != secs {
        c.secs = secs;
        c.text = clf_time(t);
    }
    &c.text
}

/// `10/Oct/2000:13:55:36 +0000` (UTC).
pub fn clf_time(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, m, d) = civil_from_days(days);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}
