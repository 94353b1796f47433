//! The handler over temporary directory trees, called directly (no sockets).

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
    let route = Route {
        index: 0,
        host: HostMatch::Any,
        prefix: "/static/".into(),
        action: Action::Static(Arc::new(site)),
        jwt: None,
        headers: vec![],
    };
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
    let resp = match serve(s, &t.route, &parts).await {
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
    ];
    let files: Vec<(&str, &[u8])> = names.iter().map(|(n, _)| (*n, &b"x"[..])).collect();
    let t = site(&files);
    for (name, ct) in names {
        let g = get(&t, &format!("/static/{name}"), &[]).await;
        assert_eq!(g.hdr("content-type"), ct, "{name}");
    }
}

#[tokio::test]
async fn directories_index_and_slash_redirect() {
    let t = site(&[
        ("docs/index.html", b"docs"),
        ("empty/.keep", b""),
        ("index.html", b"top"),
    ]);
    let g = get(&t, "/static/docs/", &[]).await;
    assert_eq!((g.status, g.text().as_str()), (200, "docs"));
    assert_eq!(g.hdr("content-type"), "text/html; charset=utf-8");
    let g = get(&t, "/static/docs?v=1", &[]).await;
    assert_eq!((g.status, g.hdr("location")), (301, "/static/docs/?v=1"));
    let g = get(&t, "/static", &[]).await;
    assert_eq!((g.status, g.hdr("location")), (301, "/static/"));
    assert_eq!(get(&t, "/static/", &[]).await.text(), "top");
    // No index: 404, never a listing.
    let g = get(&t, "/static/empty/", &[]).await;
    assert_eq!(g.status, 404);
    assert!(!g.text().contains(".keep"));
}

#[tokio::test]
async fn slash_redirect_never_leaves_the_host() {
    let dir = tree(&[("evil.example/index.html", b"x")]);
    let mut t = site_with(dir, |_| {});
    t.route.prefix = "/".into();
    let g = get(&t, "//evil.example", &[]).await;
    assert_eq!((g.status, g.hdr("location")), (301, "/evil.example/"));
}

#[tokio::test]
async fn index_list_is_tried_in_order() {
    let dir = tree(&[("d/index.htm", b"htm"), ("d/index.html", b"html")]);
    let t = site_with(dir, |r| {
        r.index = Some(vec!["default.txt".into(), "index.htm".into()])
    });
    assert_eq!(get(&t, "/static/d/", &[]).await.text(), "htm");
}

#[tokio::test]
async fn fallback_serves_the_app_shell_for_misses() {
    let dir = tree(&[("index.html", b"<app>"), ("app.js", b"js")]);
    let t = site_with(dir, |r| r.fallback = Some("index.html".into()));
    let g = get(&t, "/static/users/42", &[]).await;
    assert_eq!((g.status, g.text().as_str()), (200, "<app>"));
    assert_eq!(g.hdr("content-type"), "text/html; charset=utf-8");
    assert_eq!(get(&t, "/static/app.js", &[]).await.text(), "js");
    // A refused path is still refused, not answered with the shell.
    assert_eq!(get(&t, "/static/../secret.txt", &[]).await.status, 404);
}

#[tokio::test]
async fn precompressed_variants_by_accept_encoding() {
    let dir = tree(&[
        ("app.js", b"plain-js"),
        ("app.js.br", b"BR"),
        ("app.js.gz", b"GZIP"),
        ("only.css", b"plain-css"),
        ("only.css.gz", b"GZ"),
    ]);
    let t = site_with(dir, |r| r.precompressed = Some(true));
    let cases: &[(&str, &str, &str)] = &[
        ("gzip, deflate, br", "BR", "br"),
        ("gzip", "GZIP", "gzip"),
        ("br;q=0, gzip", "GZIP", "gzip"),
        ("gzip;q=0.9, br;q=0.5", "GZIP", "gzip"),
        ("*", "BR", "br"),
        ("identity", "plain-js", ""),
        ("", "plain-js", ""),
    ];
    let mut etags = std::collections::HashSet::new();
    for (ae, body, ce) in cases {
        let hs: &[(&'static str, &str)] = if ae.is_empty() {
            &[]
        } else {
            &[("accept-encoding", ae)]
        };
        let g = get(&t, "/static/app.js", hs).await;
        assert_eq!(
            (g.text().as_str(), g.hdr("content-encoding")),
            (*body, *ce),
            "{ae}"
        );
        assert_eq!(
            g.hdr("content-type"),
            "text/javascript; charset=utf-8",
            "{ae}"
        );
        assert_eq!(g.hdr("vary"), "accept-encoding", "{ae}");
        assert_eq!(g.hdr("content-length"), body.len().to_string());
        etags.insert(g.hdr("etag").to_string());
    }
    assert_eq!(etags.len(), 3, "one ETag per representation");
    // br wanted but only .gz exists.
    let g = get(&t, "/static/only.css", &[("accept-encoding", "br, gzip")]).await;
    assert_eq!(
        (g.text().as_str(), g.hdr("content-encoding")),
        ("GZ", "gzip")
    );
    // Ranges apply to what is sent.
    let g = get(
        &t,
        "/static/app.js",
        &[("accept-encoding", "br"), ("range", "bytes=1-")],
    )
    .await;
    assert_eq!(
        (g.status, g.text().as_str(), g.hdr("content-range")),
        (206, "R", "bytes 1-1/2")
    );
}

#[tokio::test]
async fn stale_variants_are_skipped() {
    let dir = tree(&[
        ("a.css", b"new"),
        ("a.css.br", b"OLDBR"),
        ("a.css.gz", b"GZ"),
    ]);
    let root = dir.path().join("root");
    let now = SystemTime::now();
    set_mtime(&root.join("a.css"), now);
    set_mtime(&root.join("a.css.br"), now - Duration::from_secs(60));
    set_mtime(&root.join("a.css.gz"), now);
    let t = site_with(dir, |r| r.precompressed = Some(true));
    let g = get(&t, "/static/a.css", &[("accept-encoding", "br, gzip")]).await;
    assert_eq!(
        (g.text().as_str(), g.hdr("content-encoding")),
        ("GZ", "gzip")
    );
}

#[tokio::test]
async fn no_variants_for_formats_that_are_compressed_already() {
    let dir = tree(&[("a.png", b"PNG"), ("a.png.gz", b"GZ")]);
    let t = site_with(dir, |r| r.precompressed = Some(true));
    let g = get(&t, "/static/a.png", &[("accept-encoding", "gzip")]).await;
    assert_eq!((g.text().as_str(), g.hdr("content-encoding")), ("PNG", ""));
}

#[tokio::test]
async fn variants_are_ignored_unless_precompressed_is_on() {
    let t = site(&[("a.css", b"plain"), ("a.css.br", b"BR")]);
    let g = get(&t, "/static/a.css", &[("accept-encoding", "br")]).await;
    assert_eq!(
        (g.text().as_str(), g.hdr("content-encoding")),
        ("plain", "")
    );
}

#[cfg(unix)]
#[tokio::test]
async fn traversal_attempts_never_return_the_outside_file() {
    use std::os::unix::fs::symlink;
    let dir = tree(&[("ok.txt", b"ok"), ("sub/inner.txt", b"inner")]);
    let root = dir.path().join("root");
    symlink(dir.path().join("secret.txt"), root.join("link.txt")).unwrap();
    symlink(dir.path(), root.join("up")).unwrap();
    symlink("../secret.txt", root.join("rel.txt")).unwrap();
    symlink("sub/inner.txt", root.join("inside.txt")).unwrap();
    let t = site_with(dir, |_| {});
    let attempts = [
        "/static/../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/%2E%2E%2Fsecret.txt",
        "/static/..%2fsecret.txt",
        "/static/sub/../../secret.txt",
        "/static/%252e%252e/secret.txt",
        "/static/%252e%252e%252fsecret.txt",
        "/static/..%5csecret.txt",
        "/static/sub%5c..%5c..%5csecret.txt",
        "/static/secret.txt%00.txt",
        "/static/%00",
        "/static//../secret.txt",
        "/static/link.txt",
        "/static/rel.txt",
        "/static/up/secret.txt",
    ];
    for a in attempts {
        let g = get(&t, a, &[]).await;
        assert!(matches!(g.status, 400 | 404), "{a}: {}", g.status);
        assert!(!g.text().contains("SECRET"), "{a}");
    }
    // A symlink that stays inside the root is fine.
    assert_eq!(get(&t, "/static/inside.txt", &[]).await.text(), "inner");
    assert_eq!(get(&t, "/static/ok.txt", &[]).await.text(), "ok");
}

#[cfg(unix)]
#[tokio::test]
async fn follow_symlinks_lets_links_out() {
    let dir = tree(&[]);
    let root = dir.path().join("root");
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("link.txt")).unwrap();
    let t = site_with(dir, |r| r.follow_symlinks = Some(true));
    assert_eq!(get(&t, "/static/link.txt", &[]).await.text(), "SECRET");
    // ..but never `..`.
    assert_eq!(get(&t, "/static/../secret.txt", &[]).await.status, 404);
}

#[cfg(unix)]
#[tokio::test]
async fn root_moved_by_a_symlink_flip_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    for (rel, body) in [("r1", "one"), ("r2", "two")] {
        fs::create_dir(dir.path().join(rel)).unwrap();
        fs::write(dir.path().join(rel).join("a.txt"), body).unwrap();
    }
    let current = dir.path().join("root");
    std::os::unix::fs::symlink("r1", &current).unwrap();
    let t = site_with(dir, |_| {});
    assert_eq!(get(&t, "/static/a.txt", &[]).await.text(), "one");
    let tmp = t.dir.path().join("root.new");
    std::os::unix::fs::symlink("r2", &tmp).unwrap();
    fs::rename(&tmp, &current).unwrap();
    assert_eq!(get(&t, "/static/a.txt", &[]).await.text(), "two");
}

#[cfg(unix)]
#[tokio::test]
async fn fifo_is_refused_without_blocking() {
    let t = site(&[]);
    let fifo = std::ffi::CString::new(t.root().join("pipe").into_os_string().into_encoded_bytes())
        .unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    // The bound only turns a hang into a failure; the answer is immediate.
    let g = tokio::time::timeout(Duration::from_secs(10), get(&t, "/static/pipe", &[]))
        .await
        .expect("opening a FIFO must not block");
    assert_eq!(g.status, 404);
}

/// A file bigger than one chunk, each byte its offset mod 251.
fn big(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn large_files_stream_in_bounded_chunks() {
    let data = big(3 * body::CHUNK + 123);
    let t = site(&[("big.bin", &data)]);
    let parts = Request::get("/static/big.bin")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let Action::Static(s) = &t.route.action else {
        unreachable!()
    };
    let resp = serve(s, &t.route, &parts).await.unwrap();
    assert_eq!(
        resp.headers()["content-length"],
        data.len().to_string().as_str()
    );
    let mut body = resp.into_body();
    let (mut got, mut frames) = (Vec::new(), 0);
    while let Some(f) = body.frame().await {
        let d = f.unwrap().into_data().unwrap();
        assert!(d.len() <= body::CHUNK, "a chunk of {} bytes", d.len());
        got.extend_from_slice(&d);
        frames += 1;
    }
    assert!(frames >= 4, "{frames} frames");
    assert!(got == data, "streamed bytes differ");

    // A range across chunk boundaries.
    let (a, b) = (body::CHUNK - 10, 2 * body::CHUNK + 10);
    let g = get(
        &t,
        "/static/big.bin",
        &[("range", &format!("bytes={a}-{b}"))],
    )
    .await;
    assert_eq!(g.status, 206);
    assert!(g.body[..] == data[a..=b]);
}

/// How many of this process's descriptors point at `p`.
#[cfg(target_os = "linux")]
fn open_handles(p: &Path) -> usize {
    let p = fs::canonicalize(p).unwrap();
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|l| *l == p)
        .count()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn handles_are_closed_after_full_partial_and_abandoned_responses() {
    let data = big(4 * body::CHUNK);
    let t = site(&[("big.bin", &data), ("small.txt", b"small")]);
    let (bigp, smallp) = (t.root().join("big.bin"), t.root().join("small.txt"));
    for _ in 0..20 {
        get(&t, "/static/small.txt", &[]).await;
        get(&t, "/static/big.bin", &[("range", "bytes=5-70000")]).await;
        send(&t, "HEAD", "/static/big.bin", &[]).await;
    }
    assert_eq!(open_handles(&smallp), 0);
    // Abandon a download after its first chunk.
    let parts = Request::get("/static/big.bin")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let Action::Static(s) = &t.route.action else {
        unreachable!()
    };
    let mut body = serve(s, &t.route, &parts).await.unwrap().into_body();
    body.frame().await.unwrap().unwrap();
    assert_eq!(open_handles(&bigp), 1, "the download holds its file open");
    drop(body);
    // A read on the blocking pool may still hold it briefly: poll with a
    // bounded deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while open_handles(&bigp) > 0 {
        assert!(std::time::Instant::now() < deadline, "file handle leaked");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_file_root_serves_that_file_at_the_route_path() {
    let dir = tree(&[("robots.txt", b"User-agent: *")]);
    let raw = RawStaticDetailed {
        root: "root/robots.txt".into(),
        ..Default::default()
    };
    let src = Source {
        path: None,
        base_dir: dir.path().to_path_buf(),
    };
    let mut errs = Errors::default();
    let site = compile(&RawStatic::Detailed(raw), "r", &src, &mut errs).expect("compiles");
    let t = T {
        dir,
        route: Route {
            index: 0,
            host: HostMatch::Any,
            prefix: "/robots.txt".into(),
            action: Action::Static(Arc::new(site)),
            jwt: None,
            headers: vec![],
        },
    };
    let g = get(&t, "/robots.txt", &[]).await;
    assert_eq!((g.status, g.text().as_str()), (200, "User-agent: *"));
    assert_eq!(g.hdr("content-type"), "text/plain; charset=utf-8");
    assert_eq!(get(&t, "/robots.txt/x", &[]).await.status, 404);
}

#[cfg(unix)]
#[test]
fn config_errors_have_their_place() {
    let dir = tree(&[("index.html", b"x")]);
    let src = Source {
        path: None,
        base_dir: dir.path().to_path_buf(),
    };
    let compile_errs = |raw: RawStatic| {
        let mut errs = Errors::default();
        assert!(compile(&raw, "route[1].static", &src, &mut errs).is_none());
        errs.to_string()
    };
    let e = compile_errs(RawStatic::Root("nope".into()));
    assert!(
        e.starts_with("route[1].static: ") && e.contains("nope"),
        "{e}"
    );
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let e = compile_errs(RawStatic::Root("fifo".into()));
    assert!(e.contains("is not a directory or a file"), "{e}");
    let d = |edit: fn(&mut RawStaticDetailed)| {
        let mut r = RawStaticDetailed {
            root: "root".into(),
            ..Default::default()
        };
        edit(&mut r);
        RawStatic::Detailed(r)
    };
    let e = compile_errs(d(|r| r.index = Some(vec!["a/b.html".into()])));
    assert!(e.starts_with("route[1].static.index[0]: "), "{e}");
    let e = compile_errs(d(|r| r.fallback = Some("../secret.txt".into())));
    assert!(e.starts_with("route[1].static.fallback: "), "{e}");
    let e = compile_errs(d(|r| r.fallback = Some("missing.html".into())));
    assert!(e.contains("is not a file under"), "{e}");
    let e = compile_errs(d(|r| r.root = "".into()));
    assert!(e.starts_with("route[1].static.root: empty"), "{e}");

    let mut errs = Errors::default();
    let ok = RawStatic::Root("root".into());
    assert!(compile(&ok, "route[1].static", &src, &mut errs).is_some());
}
