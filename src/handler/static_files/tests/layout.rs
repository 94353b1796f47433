//! Directories, index files, the fallback, precompressed variants, file
//! roots and config errors.

use super::*;

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
        route: Route::bare(
            0,
            HostMatch::Any,
            "/robots.txt",
            Action::Static(Arc::new(site)),
        ),
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
