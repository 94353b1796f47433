//! Nothing outside the root is served; files stream in bounded chunks and
//! their handles are closed.

use super::*;

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
    let resp = serve(s, &t.route, &parts).unwrap();
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
    let mut body = serve(s, &t.route, &parts).unwrap().into_body();
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

#[cfg(unix)]
#[test]
fn only_a_root_without_symlinks_takes_the_one_call_open() {
    let dir = tree(&[]);
    std::os::unix::fs::symlink("root", dir.path().join("current")).unwrap();
    let plain = |root: &str| {
        let src = Source {
            path: None,
            base_dir: dir.path().to_path_buf(),
        };
        let mut errs = Errors::default();
        compile(&RawStatic::Root(root.into()), "r", &src, &mut errs)
            .unwrap()
            .plain_root
    };
    assert!(plain("root"));
    assert!(!plain("current"));
    assert!(!plain("root/../root"));
}

/// An answer whose body is not read yet.
fn in_flight(t: &T, uri: &str) -> ProxyBody {
    let parts = Request::get(uri).body(()).unwrap().into_parts().0;
    let Action::Static(s) = &t.route.action else {
        unreachable!()
    };
    serve(s, &t.route, &parts).unwrap().into_body()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn small_settled_files_are_served_from_memory_while_unchanged() {
    super::super::hot::settle_all();
    let t = site(&[("app.js", b"let a = 1;")]);
    let p = t.root().join("app.js");
    let first = get(&t, "/static/app.js", &[]).await;
    assert_eq!(first.text(), "let a = 1;");
    // Kept: the store's one descriptor (for sendfile), none per answer.
    let held = [
        in_flight(&t, "/static/app.js"),
        in_flight(&t, "/static/app.js"),
    ];
    assert_eq!(
        open_handles(&p),
        1,
        "kept: one descriptor, however many answers"
    );
    drop(held);
    let again = get(&t, "/static/app.js", &[]).await;
    assert_eq!(again.text(), first.text());
    assert_eq!(again.hdr("etag"), first.hdr("etag"));
    let part = get(&t, "/static/app.js", &[("range", "bytes=4-4")]).await;
    assert_eq!((part.status, part.text().as_str()), (206, "a"));
    fs::write(&p, b"let a = 22;").unwrap();
    assert_eq!(get(&t, "/static/app.js", &[]).await.text(), "let a = 22;");
    fs::remove_file(&p).unwrap();
    assert_eq!(get(&t, "/static/app.js", &[]).await.status, 404);
}

#[cfg(unix)]
#[tokio::test]
async fn a_kept_file_whose_path_now_leads_out_is_refused() {
    use std::os::unix::fs::symlink;
    super::super::hot::settle_all();
    let dir = tree(&[("x.txt", b"inside"), ("sub/secret.txt", b"inner")]);
    let (root, outside) = (dir.path().join("root"), dir.path().to_path_buf());
    let t = site_with(dir, |_| {});
    assert_eq!(get(&t, "/static/x.txt", &[]).await.text(), "inside");
    assert_eq!(get(&t, "/static/sub/secret.txt", &[]).await.text(), "inner");
    // The file, then a directory on its way, swapped for symlinks out.
    fs::remove_file(root.join("x.txt")).unwrap();
    symlink(outside.join("secret.txt"), root.join("x.txt")).unwrap();
    fs::rename(root.join("sub"), outside.join("old-sub")).unwrap();
    symlink(&outside, root.join("sub")).unwrap();
    for uri in ["/static/x.txt", "/static/sub/secret.txt"] {
        let g = get(&t, uri, &[]).await;
        assert_eq!(g.status, 404, "{uri}");
        assert!(!g.text().contains("SECRET"), "{uri}");
    }
}
