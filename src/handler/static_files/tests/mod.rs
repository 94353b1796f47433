//! The handler over temporary directory trees, called directly (no sockets).
//! Here: helpers and the HTTP semantics; layout.rs: directories, fallback,
//! precompressed variants, config; safety.rs: traversal, symlinks, streaming
//! and file handles.

mod layout;
mod safety;

use super::*;
use crate::router::{Action, HostMatch};
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use std::fs;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

struct T {
    dir: tempfile::TempDir,
    route: Route,
}

impl T {
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
}

/// A tree: `root/` holds the served files, `secret.txt` sits beside it.
fn tree(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("root")).unwrap();
    fs::write(dir.path().join("secret.txt"), "SECRET").unwrap();
    for (name, body) in files {
        let p = dir.path().join("root").join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, body).unwrap();
    }
    dir
}

fn site_with(dir: tempfile::TempDir, edit: impl FnOnce(&mut RawStaticDetailed)) -> T {
    let mut raw = RawStaticDetailed {
        root: "root".into(),
        ..Default::default()
    };
    edit(&mut raw);
    let src = Source {
        path: None,
        base_dir: dir.path().to_path_buf(),
    };
    let mut errs = Errors::default();
    let site = compile(
        &RawStatic::Detailed(raw),
        "route[0].static",
        &src,
        &mut errs,
    )
    .unwrap_or_else(|| panic!("does not compile: {errs}"));
    let route = Route::bare(
        0,
        HostMatch::Any,
        "/static/",
        Action::Static(Arc::new(site)),
    );
    T { dir, route }
}

fn site(files: &[(&str, &[u8])]) -> T {
    site_with(tree(files), |_| {})
}

struct Got {
    status: u16,
    h: http::HeaderMap,
    body: Bytes,
}

impl Got {
    fn hdr(&self, name: &str) -> &str {
        self.h.get(name).map_or("", |v| v.to_str().unwrap())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(t: &T, method: &str, uri: &str, headers: &[(&'static str, &str)]) -> Got {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let parts = b.body(()).unwrap().into_parts().0;
    let Action::Static(s) = &t.route.action else {
        unreachable!()
    };
    let resp = match serve(s, &t.route, &parts) {
        Ok(r) => r,
        Err(e) => crate::service::error_response(&e),
    };
    let (p, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Got {
        status: p.status.as_u16(),
        h: p.headers,
        body,
    }
}

async fn get(t: &T, uri: &str, headers: &[(&'static str, &str)]) -> Got {
    send(t, "GET", uri, headers).await
}

fn set_mtime(p: &Path, t: SystemTime) {
    fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[tokio::test]
async fn serves_a_file_with_type_length_and_validators() {
    let t = site(&[("css/app.css", b"body{color:red}")]);
    let g = get(&t, "/static/css/app.css", &[]).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.text(), "body{color:red}");
    assert_eq!(g.hdr("content-type"), "text/css; charset=utf-8");
    assert_eq!(g.hdr("content-length"), "15");
    assert_eq!(g.hdr("accept-ranges"), "bytes");
    let mtime = fs::metadata(t.root().join("css/app.css"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(g.hdr("last-modified"), httpdate::fmt_http_date(mtime));
    let etag = g.hdr("etag");
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong etag: {etag}"
    );
    assert_eq!(g.hdr("vary"), "", "no Vary without precompressed");
}

#[tokio::test]
async fn etag_changes_when_the_file_does() {
    let t = site(&[("a.txt", b"one")]);
    let p = t.root().join("a.txt");
    set_mtime(
        &p,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000),
    );
    let first = get(&t, "/static/a.txt", &[]).await.hdr("etag").to_string();
    fs::write(&p, b"two").unwrap(); // same length, new mtime
    set_mtime(
        &p,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_001),
    );
    let second = get(&t, "/static/a.txt", &[]).await;
    assert_eq!(second.text(), "two");
    assert_ne!(first, second.hdr("etag"));
}

/// Validators are kept per thread; files of one length and different times
/// served in turn must never get each other's.
#[tokio::test]
async fn each_file_version_keeps_its_own_validators() {
    let t = site(&[("a.txt", b"aaa"), ("b.txt", b"bbb"), ("c.txt", b"ccc")]);
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for (i, n) in ["a.txt", "b.txt", "c.txt"].iter().enumerate() {
        set_mtime(
            &t.root().join(n),
            base + Duration::from_nanos(i as u64 * 1_000_000_007),
        );
    }
    let mut seen = std::collections::HashMap::new();
    for _ in 0..3 {
        for n in ["a.txt", "b.txt", "c.txt"] {
            let g = get(&t, &format!("/static/{n}"), &[]).await;
            let mtime = fs::metadata(t.root().join(n)).unwrap().modified().unwrap();
            let want = cond::etag(Some(mtime), 3, None);
            assert_eq!(g.hdr("etag"), want, "{n}");
            assert_eq!(
                g.hdr("last-modified"),
                httpdate::fmt_http_date(mtime),
                "{n}"
            );
            seen.insert(n, want);
        }
    }
    let distinct: std::collections::HashSet<_> = seen.values().collect();
    assert_eq!(distinct.len(), 3);
}

#[tokio::test]
async fn conditional_requests() {
    let t = site(&[("a.js", b"let a = 1;")]);
    let g = get(&t, "/static/a.js", &[]).await;
    let (etag, lm) = (
        g.hdr("etag").to_string(),
        g.hdr("last-modified").to_string(),
    );

    let nm = get(&t, "/static/a.js", &[("if-none-match", &etag)]).await;
    assert_eq!(nm.status, 304);
    assert!(nm.body.is_empty());
    assert_eq!(nm.hdr("etag"), etag);
    assert_eq!(nm.hdr("last-modified"), lm);
    let weak = format!("W/{etag}");
    let list = format!("\"x\", {weak}");
    assert_eq!(
        get(&t, "/static/a.js", &[("if-none-match", &list)])
            .await
            .status,
        304
    );
    assert_eq!(
        get(&t, "/static/a.js", &[("if-none-match", "*")])
            .await
            .status,
        304
    );
    assert_eq!(
        get(&t, "/static/a.js", &[("if-none-match", "\"x\"")])
            .await
            .status,
        200
    );

    assert_eq!(
        get(&t, "/static/a.js", &[("if-modified-since", &lm)])
            .await
            .status,
        304
    );
    let old = "Mon, 01 Jan 2001 00:00:00 GMT";
    assert_eq!(
        get(&t, "/static/a.js", &[("if-modified-since", old)])
            .await
            .status,
        200
    );
    // If-None-Match decides when both are sent.
    let both = [
        ("if-none-match", "\"x\""),
        ("if-modified-since", lm.as_str()),
    ];
    assert_eq!(get(&t, "/static/a.js", &both).await.status, 200);
    // HEAD gets 304 too.
    let h = send(&t, "HEAD", "/static/a.js", &[("if-none-match", &etag)]).await;
    assert_eq!(h.status, 304);

    assert_eq!(
        get(&t, "/static/a.js", &[("if-match", "\"x\"")])
            .await
            .status,
        412
    );
    assert_eq!(
        get(&t, "/static/a.js", &[("if-match", &etag)]).await.status,
        200
    );
    assert_eq!(
        get(&t, "/static/a.js", &[("if-unmodified-since", old)])
            .await
            .status,
        412
    );
}

const DIGITS: &[u8] = b"0123456789";

#[tokio::test]
async fn range_forms() {
    let t = site(&[("d.txt", DIGITS)]);
    let t = &t;
    let r = |v: &'static str| async move { get(t, "/static/d.txt", &[("range", v)]).await };
    let g = r("bytes=2-4").await;
    assert_eq!((g.status, g.text().as_str()), (206, "234"));
    assert_eq!(g.hdr("content-range"), "bytes 2-4/10");
    assert_eq!(g.hdr("content-length"), "3");
    let g = r("bytes=7-").await;
    assert_eq!(
        (g.status, g.text().as_str(), g.hdr("content-range")),
        (206, "789", "bytes 7-9/10")
    );
    let g = r("bytes=-2").await;
    assert_eq!(
        (g.status, g.text().as_str(), g.hdr("content-range")),
        (206, "89", "bytes 8-9/10")
    );
    let g = r("bytes=-50").await;
    assert_eq!((g.status, g.text().as_str()), (206, "0123456789"));
    let g = r("bytes=8-99").await;
    assert_eq!(
        (g.status, g.text().as_str(), g.hdr("content-range")),
        (206, "89", "bytes 8-9/10")
    );
    for bad in ["bytes=10-", "bytes=-0", "bytes=20-30"] {
        let g = r(bad).await;
        assert_eq!(g.status, 416, "{bad}");
        assert_eq!(g.hdr("content-range"), "bytes */10", "{bad}");
        assert!(g.body.is_empty());
    }
    for ignored in ["bytes=0-1,4-5", "bytes=5-2", "lines=1-2", "bytes=x"] {
        let g = r(ignored).await;
        assert_eq!(
            (g.status, g.text().as_str()),
            (200, "0123456789"),
            "{ignored}"
        );
    }
    // HEAD ignores Range.
    let h = send(t, "HEAD", "/static/d.txt", &[("range", "bytes=0-1")]).await;
    assert_eq!((h.status, h.hdr("content-length")), (200, "10"));
}

#[tokio::test]
async fn if_range_decides_between_part_and_whole() {
    let t = site(&[("d.txt", DIGITS)]);
    let g = get(&t, "/static/d.txt", &[]).await;
    let (etag, lm) = (
        g.hdr("etag").to_string(),
        g.hdr("last-modified").to_string(),
    );
    let t = &t;
    let with = |ir: String| async move {
        get(
            t,
            "/static/d.txt",
            &[("range", "bytes=0-0"), ("if-range", &ir)],
        )
        .await
    };
    assert_eq!(with(etag.clone()).await.status, 206);
    assert_eq!(with(lm).await.status, 206);
    let stale = with("\"old\"".into()).await;
    assert_eq!((stale.status, stale.text().as_str()), (200, "0123456789"));
    assert_eq!(with(format!("W/{etag}")).await.status, 200);
    assert_eq!(
        with("Mon, 01 Jan 2001 00:00:00 GMT".into()).await.status,
        200
    );
}

#[tokio::test]
async fn head_has_headers_and_no_body() {
    let t = site(&[("a.json", b"{\"a\":1}")]);
    let h = send(&t, "HEAD", "/static/a.json", &[]).await;
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
    assert_eq!(h.hdr("content-length"), "7");
    assert_eq!(h.hdr("content-type"), "application/json");
    assert!(!h.hdr("etag").is_empty());
}

#[tokio::test]
async fn other_methods_get_405_with_allow() {
    let t = site(&[("a.txt", b"a")]);
    for m in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let g = send(&t, m, "/static/a.txt", &[]).await;
        assert_eq!(g.status, 405, "{m}");
        assert_eq!(g.hdr("allow"), "GET, HEAD");
    }
}

#[tokio::test]
async fn content_types_by_extension() {
    let names = [
        ("a.css", "text/css; charset=utf-8"),
        ("a.js", "text/javascript; charset=utf-8"),
        ("a.mjs", "text/javascript; charset=utf-8"),
        ("a.json", "application/json"),
        ("a.svg", "image/svg+xml"),
        ("a.wasm", "application/wasm"),
        ("a.woff2", "font/woff2"),
        ("a.webp", "image/webp"),
        ("a.avif", "image/avif"),
        ("a.js.map", "application/json"),
        ("a.txt", "text/plain; charset=utf-8"),
        ("noext", "application/octet-stream"),
        // The long tail, from mime_guess and then from the thread's cache.
        ("a.ics", "text/calendar; charset=utf-8"),
        ("a.bin", "application/octet-stream"),
        ("a.epub", "application/epub+zip"),
    ];
    let files: Vec<(&str, &[u8])> = names.iter().map(|(n, _)| (*n, &b"x"[..])).collect();
    let t = site(&files);
    for _ in 0..2 {
        for (name, ct) in names {
            let g = get(&t, &format!("/static/{name}"), &[]).await;
            assert_eq!(g.hdr("content-type"), ct, "{name}");
        }
    }
}
