//! `error_pages`: read at compile time relative to the config file, a
//! route's over the server's, each file watched, and every mistake named.

use super::*;

fn dir_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Source) {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in files {
        std::fs::write(dir.path().join(name), body).unwrap();
    }
    let src = Source {
        path: None,
        base_dir: dir.path().to_path_buf(),
    };
    (dir, src)
}

fn body(s: &Snapshot, path: &str, status: u16) -> Option<String> {
    let pages = s.router.find("example.com", path)?.error_pages.as_ref()?;
    let page = pages.0.get(&status)?;
    Some(String::from_utf8(page.body.to_vec()).unwrap())
}

#[test]
fn a_routes_pages_go_over_the_servers() {
    let (dir, src) = dir_with(&[
        ("502.html", "down"),
        ("api.json", "{}"),
        ("404.txt", "none"),
    ]);
    let toml = format!(
        "[server]\nerror_pages = {{ 502 = \"502.html\", 404 = \"404.txt\" }}\n{LISTEN}\
         [[route]]\npath = \"/api/\"\nrespond = {{ body = \"x\" }}\nerror_pages = {{ 502 = \"api.json\" }}\n\
         [[route]]\nrespond = {{ body = \"x\" }}\n"
    );
    let s = load_str(&toml, &src, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(body(&s, "/api/x", 502).as_deref(), Some("{}"));
    assert_eq!(
        body(&s, "/api/x", 404).as_deref(),
        Some("none"),
        "the server's"
    );
    assert_eq!(body(&s, "/x", 502).as_deref(), Some("down"));
    let server = s.error_pages.as_ref().unwrap();
    assert_eq!(server.0.len(), 2);
    assert_eq!(server.0[&404].content_type, "text/plain; charset=utf-8");
    for f in ["502.html", "api.json", "404.txt"] {
        assert!(s.files.contains(&dir.path().join(f)), "{f} is watched");
    }
    // Without any, a route carries none.
    let s = ok(&format!(
        "{LISTEN}[[route]]\nrespond = {{ body = \"x\" }}\n"
    ));
    assert!(s.error_pages.is_none());
    assert!(s.router.routes()[0].error_pages.is_none());
}

#[test]
fn every_mistake_is_named_at_its_status() {
    let big = "x".repeat((1 << 20) + 1);
    let (_dir, src) = dir_with(&[("ok.html", "ok"), ("big.html", &big), ("page.php", "")]);
    let toml = format!(
        "[server]\nerror_pages = {{ 302 = \"ok.html\", abc = \"ok.html\", 502 = \"gone.html\", \
         503 = \"big.html\", 504 = \"page.php\" }}\n{LISTEN}\
         [[route]]\nrespond = {{ body = \"x\" }}\nerror_pages = {{ 404 = \"missing.json\" }}\n"
    );
    let e: Vec<String> = match load_str(&toml, &src, None) {
        Ok(_) => panic!("compiled"),
        Err(Errors(v)) => v.iter().map(|e| e.to_string()).collect(),
    };
    let want = [
        "server.error_pages.302: \"302\" is not a status from 400 to 599",
        "server.error_pages.abc: \"abc\" is not a status from 400 to 599",
        "server.error_pages.502: cannot read ",
        "server.error_pages.503: cannot read ",
        "server.error_pages.504: \"page.php\": name a .html, .htm, .json, .txt or .xml file",
        "route[0].error_pages.404: cannot read ",
    ];
    assert_eq!(e.len(), want.len(), "{e:#?}");
    for w in want {
        assert!(
            e.iter().any(|l| l.starts_with(w)),
            "missing {w:?} in {e:#?}"
        );
    }
    assert!(e.iter().any(|l| l.contains("larger than 1 MiB")), "{e:#?}");
}
