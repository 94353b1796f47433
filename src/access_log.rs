//! Access log: one line per request, written by a dedicated thread through a
//! buffered writer, so a request only pays for handing over its entry.

use crate::state::{AccessFormat, AccessTarget, LogSettings};
use std::borrow::Cow;
use std::io::Write;
use std::net::IpAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub struct Entry {
    pub time: SystemTime,
    pub start: Instant,
    pub client: IpAddr,
    pub method: http::Method,
    pub uri: String,
    pub version: http::Version,
    pub status: u16,
    pub bytes: u64,
    pub referer: String,
    pub user_agent: String,
    pub host: String,
    pub request_id: String,
    pub upstream: Option<String>,
    pub attempts: u32,
    /// From the first attempt's start to the answering upstream's
    /// response head (nginx's `$upstream_header_time`): the app's own time
    /// next to `rt`, the whole request's.
    pub upstream_head: Option<Duration>,
    /// Why a request was refused (JWT gate), for the log only.
    pub reason: Option<&'static str>,
    /// For a head refused before it could be parsed: its first line as
    /// received (escaped), logged in place of method, target and protocol.
    pub raw_line: Option<String>,
    /// Query parameters whose values the log must not show: the names a
    /// JWT policy reads tokens from (`query:NAME`), on every line, whatever
    /// the route, since a token is a credential wherever it was sent.
    pub hidden: Option<Arc<[String]>>,
    pub logger: Arc<Logger>,
}

impl Entry {
    /// Hand the finished entry to the writer thread.
    pub fn emit(self: Box<Self>) {
        let micros = self.start.elapsed().as_micros() as u64;
        let logger = self.logger.clone();
        let _ = logger.tx.send((self, micros));
    }
}

/// One access log destination with its writer thread. It belongs to the
/// running server's snapshot; a reload with the same `[log]` keeps it.
pub struct Logger {
    settings: (AccessTarget, AccessFormat),
    tx: mpsc::Sender<(Box<Entry>, u64)>,
}

impl Logger {
    /// The logger for `s`: `prev` when it already writes there, a new one
    /// otherwise, none when the access log is off.
    pub fn for_settings(
        s: &LogSettings,
        prev: Option<&Arc<Logger>>,
    ) -> std::io::Result<Option<Arc<Logger>>> {
        let want = (s.access.clone(), s.format);
        if let Some(cur) = prev {
            if cur.settings == want {
                return Ok(Some(cur.clone()));
            }
        }
        let out: Box<dyn Write + Send> = match &s.access {
            AccessTarget::Off => return Ok(None),
            AccessTarget::Stdout => Box::new(std::io::stdout()),
            AccessTarget::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        };
        let (tx, rx) = mpsc::channel::<(Box<Entry>, u64)>();
        let format = s.format;
        // The writer ends when the last sender (this Logger and entries
        // still in flight) is gone. It says when it runs under the workers'
        // policy, so that the server is not announced ready before.
        let (set_tx, set) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                if let Err(e) = crate::workers::join_policy() {
                    tracing::debug!(error = %e, "the access log's writer keeps the process's scheduling policy or nice value");
                }
                let _ = set_tx.send(());
                writer(rx, out, format)
            })?;
        // An error only if the thread died before sending: nothing to wait for.
        let _ = set.recv();
        Ok(Some(Arc::new(Logger { settings: want, tx })))
    }
}

fn writer(rx: mpsc::Receiver<(Box<Entry>, u64)>, out: Box<dyn Write + Send>, format: AccessFormat) {
    let mut out = std::io::BufWriter::with_capacity(64 << 10, out);
    let mut line = String::with_capacity(512);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some((mut e, micros)) = next {
            if let Some(hidden) = e.hidden.take() {
                hide(&mut e, &hidden);
            }
            line.clear();
            match format {
                AccessFormat::Combined => combined(&mut line, &e, micros),
                AccessFormat::Json => json(&mut line, &e, micros),
            }
            line.push('\n');
            let _ = out.write_all(line.as_bytes());
            next = rx.try_recv().ok();
        }
        // Flush once the burst is written: lines reach the file promptly
        // without a syscall per request under load.
        let _ = out.flush();
    }
}

/// Redact the entry's texts that can carry a query: the target, the
/// Referer (a page's URL, token and all) and a refused head's first line.
fn hide(e: &mut Entry, hidden: &[String]) {
    for text in [&mut e.uri, &mut e.referer]
        .into_iter()
        .chain(e.raw_line.as_mut())
    {
        if let Cow::Owned(r) = redact(text, hidden) {
            *text = r;
        }
    }
}

/// `text` with the value of each query parameter named in `hidden`
/// replaced by `REDACTED`. A parameter starts after the first `?` or an
/// `&`; its value ends at `&`, `#`, a space (in a request line) or the end.
pub fn redact<'a>(text: &'a str, hidden: &[String]) -> Cow<'a, str> {
    let Some(q) = text.find('?') else {
        return Cow::Borrowed(text);
    };
    let b = text.as_bytes();
    let mut out = String::new();
    let mut done = 0;
    let mut i = q;
    while i < b.len() {
        if b[i] == b'?' || b[i] == b'&' {
            // After an ASCII byte: a char boundary.
            let at = &text[i + 1..];
            let named = hidden
                .iter()
                .find(|n| at.starts_with(n.as_str()) && at.as_bytes().get(n.len()) == Some(&b'='));
            if let Some(n) = named {
                let value = i + 1 + n.len() + 1;
                let end = text[value..]
                    .find(['&', '#', ' '])
                    .map_or(b.len(), |e| value + e);
                out.push_str(&text[done..value]);
                out.push_str("REDACTED");
                done = end;
                i = end;
                continue;
            }
        }
        i += 1;
    }
    if done == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[done..]);
    Cow::Owned(out)
}

fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// nginx's combined format, plus request time, upstream, attempts, id and
/// the upstream's time to its response head.
fn combined(out: &mut String, e: &Entry, micros: u64) {
    use std::fmt::Write;
    let request = match &e.raw_line {
        Some(line) => line.replace('"', "%22"),
        None => format!(
            "{} {} {}",
            e.method,
            e.uri.replace('"', "%22"),
            version(e.version)
        ),
    };
    let _ = write!(
        out,
        "{} - - [{}] \"{}\" {} {} \"{}\" \"{}\" rt={}.{:03} upstream={} attempts={} id={}",
        e.client,
        clf_time(e.time),
        request,
        e.status,
        e.bytes,
        dash(&e.referer).replace('"', "%22"),
        dash(&e.user_agent).replace('"', "%22"),
        micros / 1_000_000,
        (micros / 1000) % 1000,
        e.upstream.as_deref().unwrap_or("-"),
        e.attempts,
        e.request_id,
    );
    match e.upstream_head {
        Some(d) => {
            let ms = d.as_millis();
            let _ = write!(out, " uht={}.{:03}", ms / 1000, ms % 1000);
        }
        None => out.push_str(" uht=-"),
    }
    if let Some(r) = e.reason {
        let _ = write!(out, " reason={r}");
    }
}

fn json(out: &mut String, e: &Entry, micros: u64) {
    let v = serde_json::json!({
        "time": unix_secs(e.time),
        "client": e.client.to_string(),
        "method": e.method.as_str(),
        "uri": e.uri,
        "protocol": version(e.version),
        "host": e.host,
        "status": e.status,
        "bytes": e.bytes,
        "duration_ms": micros as f64 / 1000.0,
        "referer": e.referer,
        "user_agent": e.user_agent,
        "upstream": e.upstream,
        "attempts": e.attempts,
        "upstream_header_ms": e.upstream_head.map(|d| d.as_micros() as f64 / 1000.0),
        "request_id": e.request_id,
        "reason": e.reason,
    });
    let mut v = v;
    if let Some(line) = &e.raw_line {
        v["method"] = serde_json::Value::Null;
        v["uri"] = serde_json::Value::Null;
        v["protocol"] = serde_json::Value::Null;
        v["request_line"] = line.as_str().into();
    }
    out.push_str(&v.to_string());
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn token_parameters_are_redacted_and_only_those() {
        let hidden: Vec<String> = vec!["access_token".into(), "jwt".into()];
        for (text, logged) in [
            ("/x?access_token=abc", "/x?access_token=REDACTED"),
            (
                "/x?a=1&jwt=abc&access_token=&jwt=def",
                "/x?a=1&jwt=REDACTED&access_token=REDACTED&jwt=REDACTED",
            ),
            (
                "https://app.example/page?jwt=abc#top",
                "https://app.example/page?jwt=REDACTED#top",
            ),
            (
                "GET /x?jwt=abc&b=2 HTTP/1.1",
                "GET /x?jwt=REDACTED&b=2 HTTP/1.1",
            ),
            // Neither a name without a value, nor one that only begins like
            // a token parameter, nor the path, nor a lone word.
            (
                "/x?access_token&access_token_x=abc&t=abc",
                "/x?access_token&access_token_x=abc&t=abc",
            ),
            ("/access_token=abc", "/access_token=abc"),
            ("/x", "/x"),
        ] {
            assert_eq!(redact(text, &hidden), logged, "{text}");
        }
        assert!(matches!(redact("/x?a=1", &hidden), Cow::Borrowed(_)));
    }

    #[test]
    fn clf_time_format() {
        let t = UNIX_EPOCH + Duration::from_secs(971_186_136);
        assert_eq!(clf_time(t), "10/Oct/2000:13:55:36 +0000");
        assert_eq!(clf_time(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_164_800); // 2024-02-29
        assert_eq!(clf_time(leap), "29/Feb/2024:00:00:00 +0000");
    }

    #[test]
    fn combined_line() {
        let mut e = Entry {
            time: UNIX_EPOCH + Duration::from_secs(971_186_136),
            start: Instant::now(),
            client: "10.1.2.3".parse().unwrap(),
            method: http::Method::GET,
            uri: "/a?b=\"c\"".into(),
            version: http::Version::HTTP_11,
            status: 200,
            bytes: 42,
            referer: String::new(),
            user_agent: "curl/8".into(),
            host: "example.com".into(),
            request_id: "abc".into(),
            upstream: Some("127.0.0.1:8001".into()),
            attempts: 1,
            upstream_head: Some(Duration::from_micros(1_002_900)),
            reason: None,
            raw_line: None,
            hidden: None,
            logger: Logger::for_settings(
                &LogSettings {
                    level: "info".into(),
                    access: AccessTarget::Stdout,
                    format: AccessFormat::Json,
                },
                None,
            )
            .unwrap()
            .unwrap(),
        };
        let mut s = String::new();
        combined(&mut s, &e, 1_234_567);
        assert_eq!(
            s,
            "10.1.2.3 - - [10/Oct/2000:13:55:36 +0000] \"GET /a?b=%22c%22 HTTP/1.1\" 200 42 \"-\" \"curl/8\" rt=1.234 upstream=127.0.0.1:8001 attempts=1 id=abc uht=1.002"
        );
        let mut j = String::new();
        json(&mut j, &e, 1000);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["upstream"], "127.0.0.1:8001");
        assert_eq!(v["upstream_header_ms"], 1002.9);
        assert_eq!(v["uri"], "/a?b=\"c\"");

        // No upstream answered (a static file, or every attempt failed).
        e.upstream_head = None;
        let mut s = String::new();
        combined(&mut s, &e, 1000);
        assert!(s.ends_with(" id=abc uht=-"), "{s}");
        let mut j = String::new();
        json(&mut j, &e, 1000);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert!(v["upstream_header_ms"].is_null(), "{j}");
    }
}
