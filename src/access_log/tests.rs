//! The two formats, redaction, and the writer: every line whole, in order
//! per thread, and a stalled destination.

use super::*;
use std::io::Write;
use std::time::UNIX_EPOCH;

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

fn entry(logger: Arc<Logger>) -> Entry {
    Entry {
        time: UNIX_EPOCH + Duration::from_secs(971_186_136),
        start: Instant::now(),
        client: "10.1.2.3".parse().unwrap(),
        method: http::Method::GET,
        target: Some(http::uri::PathAndQuery::from_static("/a?b=c&jwt=t0ken")),
        version: http::Version::HTTP_11,
        status: 200,
        bytes: 42,
        referer: None,
        user_agent: Some(HeaderValue::from_static("curl/8 \"x\"")),
        host: "example.com".into(),
        request_id: Some(HeaderValue::from_static("abc")),
        upstream: Some("127.0.0.1:8001".into()),
        attempts: 1,
        upstream_head: Some(Duration::from_micros(1_002_900)),
        user: None,
        reason: None,
        raw_line: None,
        hidden: Some(vec!["jwt".to_string()].into()),
        logger,
    }
}

fn logger_to(path: &std::path::Path, format: AccessFormat) -> Arc<Logger> {
    let s = LogSettings {
        level: "info".into(),
        access: AccessTarget::File(path.into()),
        format,
    };
    Logger::for_settings(&s, None).unwrap().unwrap()
}

#[test]
fn combined_and_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = entry(logger_to(&dir.path().join("log"), AccessFormat::Combined));
    let mut clf = writer::Clf::default();
    let mut s = Vec::new();
    format::combined(&mut s, &mut clf, &e, 1_234_567);
    assert_eq!(
        String::from_utf8(s).unwrap(),
        "10.1.2.3 - - [10/Oct/2000:13:55:36 +0000] \"GET /a?b=c&jwt=REDACTED HTTP/1.1\" 200 42 \"-\" \"curl/8 %22x%22\" rt=1.234 upstream=127.0.0.1:8001 attempts=1 id=abc uht=1.002"
    );
    let mut j = Vec::new();
    format::json(&mut j, &e, 1000);
    let v: serde_json::Value = serde_json::from_slice(&j).unwrap();
    assert_eq!(v["status"], 200);
    assert_eq!(v["upstream"], "127.0.0.1:8001");
    assert_eq!(v["upstream_header_ms"], 1002.9);
    assert_eq!(v["duration_ms"], 1.0);
    assert_eq!(v["uri"], "/a?b=c&jwt=REDACTED");
    assert_eq!(v["user_agent"], "curl/8 \"x\"");
    assert_eq!(v["time"], 971_186_136.0);
    assert_eq!(
        (&v["client"], &v["host"]),
        (&"10.1.2.3".into(), &"example.com".into())
    );
    assert_eq!(
        (&v["request_id"], &v["referer"]),
        (&"abc".into(), &"".into())
    );
    assert!(
        v["reason"].is_null() && v.get("request_line").is_none(),
        "{v}"
    );

    assert!(v.get("user").is_none(), "{v}");

    // A name basic_auth let through: one field, whatever it holds.
    e.user = Some("jo \"x\"\\é".into());
    let mut s = Vec::new();
    format::combined(&mut s, &mut clf, &e, 1000);
    let s = String::from_utf8(s).unwrap();
    assert!(
        s.starts_with("10.1.2.3 - jo\\x20\\x22x\\x22\\x5C\\xC3\\xA9 [10/Oct"),
        "{s}"
    );
    let mut j = Vec::new();
    format::json(&mut j, &e, 1000);
    let v: serde_json::Value = serde_json::from_slice(&j).unwrap();
    assert_eq!(v["user"], "jo \"x\"\\é");
    e.user = None;

    // No upstream answered (a static file, or every attempt failed).
    e.upstream_head = None;
    e.upstream = None;
    let mut s = Vec::new();
    format::combined(&mut s, &mut clf, &e, 1000);
    let s = String::from_utf8(s).unwrap();
    assert!(s.ends_with(" upstream=- attempts=1 id=abc uht=-"), "{s}");
    let mut j = Vec::new();
    format::json(&mut j, &e, 1000);
    let v: serde_json::Value = serde_json::from_slice(&j).unwrap();
    assert!(
        v["upstream_header_ms"].is_null() && v["upstream"].is_null(),
        "{v}"
    );

    // A refused head: its first line in place of the request, redacted
    // and quoted like the rest.
    e.raw_line = Some("GET /x?jwt=abc \"HTTP/9".into());
    e.request_id = None;
    e.reason = Some("bad request");
    let mut s = Vec::new();
    format::combined(&mut s, &mut clf, &e, 1000);
    let s = String::from_utf8(s).unwrap();
    assert!(s.contains(" \"GET /x?jwt=REDACTED %22HTTP/9\" 200 "), "{s}");
    assert!(s.ends_with(" id=- uht=- reason=bad request"), "{s}");
    let mut j = Vec::new();
    format::json(&mut j, &e, 1000);
    let v: serde_json::Value = serde_json::from_slice(&j).unwrap();
    assert_eq!(v["request_line"], "GET /x?jwt=REDACTED \"HTTP/9");
    assert!(v["uri"].is_null() && v["method"].is_null() && v["request_id"].is_null());
}

#[test]
fn lines_from_many_threads_are_all_written_whole_by_finish() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let logger = logger_to(&path, AccessFormat::Combined);
    // More threads than slots, so that some share one.
    std::thread::scope(|s| {
        for t in 0..12u16 {
            let logger = logger.clone();
            s.spawn(move || {
                for i in 0..500u16 {
                    let mut e = Box::new(entry(logger.clone()));
                    e.status = t;
                    e.bytes = i.into();
                    e.emit();
                }
            });
        }
    });
    logger.finish();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut next = [0u64; 12];
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 18, "{line}");
        let (t, i): (usize, u64) = (f[8].parse().unwrap(), f[9].parse().unwrap());
        // Each thread's lines in the order it wrote them.
        assert_eq!(i, next[t], "{line}");
        next[t] += 1;
    }
    assert_eq!(next, [500; 12]);
}

/// A destination that takes nothing until told to: the writer blocks
/// in its first write.
struct Stalled(std::sync::mpsc::Receiver<()>, Arc<Mutex<Vec<u8>>>);

impl Write for Stalled {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.recv();
        self.1.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl dest::Destination for Stalled {}

#[test]
fn a_stalled_destination_costs_lines_not_memory_or_waiting() {
    let (go, wait) = std::sync::mpsc::channel();
    let got = Arc::new(Mutex::new(Vec::new()));
    let shared = Arc::new(writer::Shared::default());
    let out = Stalled(wait, got.clone());
    let w = shared.clone();
    let thread = std::thread::spawn(move || writer::run(&w, Box::new(out)));
    let line = [b'x'; 999];
    let push = || {
        shared.push(|slot| {
            slot.buf.extend_from_slice(&line);
            slot.buf.push(b'\n');
        })
    };
    // The first line calls the writer, which takes it and blocks.
    push();
    while shared.waiting() > 0 {
        std::thread::yield_now();
    }
    // Meanwhile the slot fills to its cap, and no push waits.
    for _ in 0..10_000 {
        push();
    }
    let kept = shared.waiting();
    assert!((4 << 20..(4 << 20) + 1000).contains(&kept), "{kept}");
    assert_eq!(shared.lost(), 10_000 - kept as u64 / 1000);
    // Unblocked, it writes what the slot kept.
    shared.close();
    drop(go);
    thread.join().unwrap();
    assert_eq!(got.lock().unwrap().len(), 1000 + kept);
}
