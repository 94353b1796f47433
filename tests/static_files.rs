//! Static routes through the real server: files come from disk, and the
//! app upstream never sees those requests.

mod common;
mod tls_support;

use bytes::Bytes;
use common::*;
use http::Request;
use std::path::Path;

fn write(root: &Path, name: &str, body: &[u8]) {
    let p = root.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

/// A proxy with `/static/` served from `public/` (collectstatic's output)
/// and everything else sent to `app`.
async fn setup(files: &[(&str, &[u8])], static_extra: &str) -> (Proxy, Upstream) {
    let app = fixed("from app").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), "SECRET").unwrap();
    let public = dir.path().join("public");
    std::fs::create_dir(&public).unwrap();
    for (name, body) in files {
        write(&public, name, body);
    }
    let toml = format!(
        r#"
[log]
access = "off"

[[listen]]
addr = "127.0.0.1:0"

[upstream.app]
servers = ["{}"]

[[route]]
path = "/static/"
static = {{ root = "public"{static_extra} }}
headers = {{ "Cache-Control" = "public, max-age=31536000, immutable" }}

[[route]]
path = "/"
upstream = "app"
"#,
        app.addr
    );
    (proxy_in(dir, &toml).await, app)
}

fn req(method: &str, url: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::default()).unwrap()
}

#[tokio::test]
async fn static_requests_never_reach_the_upstream() {
    let (p, app) = setup(
        &[
            ("css/app.css", b"body{}"),
            ("docs/index.html", b"<h1>docs</h1>"),
        ],
        "",
    )
    .await;

    let (s, h, body) = get(&p.url("/static/css/app.css")).await;
    assert_eq!((s, body.as_str()), (200, "body{}"));
    assert_eq!(h["content-type"], "text/css; charset=utf-8");
    assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
    let etag = h["etag"].to_str().unwrap().to_string();

    let (s, h, body) = send(req(
        "GET",
        &p.url("/static/css/app.css"),
        &[("if-none-match", &etag)],
    ))
    .await;
    assert_eq!((s, body.as_str()), (304, ""));
    assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");

    let (s, h, body) = send(req(
        "GET",
        &p.url("/static/css/app.css"),
        &[("range", "bytes=-2")],
    ))
    .await;
    assert_eq!((s, body.as_str()), (206, "{}"));
    assert_eq!(h["content-range"], "bytes 4-5/6");

    let (s, h, body) = send(req("HEAD", &p.url("/static/css/app.css"), &[])).await;
    assert_eq!((s, body.as_str()), (200, ""));
    assert_eq!(h["content-length"], "6");

    let (s, h, _) = get(&p.url("/static/docs")).await;
    assert_eq!((s, h["location"].to_str().unwrap()), (301, "/static/docs/"));
    assert_eq!(get(&p.url("/static/docs/")).await.2, "<h1>docs</h1>");

    let (s, h, _) = send(req("POST", &p.url("/static/css/app.css"), &[])).await;
    assert_eq!((s, h["allow"].to_str().unwrap()), (405, "GET, HEAD"));
    assert!(h.get("cache-control").is_none(), "route headers on a 405");

    // A miss is a 404 from the proxy, not the app's answer, and a year-long
    // Cache-Control is not put on it.
    for path in ["/static/missing.css", "/static/css/app.css/"] {
        let (s, h, body) = get(&p.url(path)).await;
        assert_eq!((s, body.contains("from app")), (404, false), "{path}");
        assert!(h.get("cache-control").is_none(), "{path}");
    }
    assert_eq!(app.hits(), 0, "a static request reached the upstream");

    // A `..` leaves the static route the way it leaves any directory: the
    // path is `/secret.txt`, the app's, and never the file beside the root.
    for path in ["/static/../secret.txt", "/static/%2e%2e/secret.txt"] {
        let (s, h, body) = get(&p.url(path)).await;
        assert_eq!((s, body.as_str()), (200, "from app"), "{path}");
        assert!(h.get("cache-control").is_none(), "{path}");
    }
    // The upstream is live: other paths do reach it.
    assert_eq!(get(&p.url("/static-not/x")).await.2, "from app");
    assert_eq!(app.hits(), 3);
}

#[tokio::test]
async fn large_file_arrives_whole() {
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let (p, app) = setup(&[("big.bin", &data)], "").await;
    let resp = client()
        .request(req("GET", &p.url("/static/big.bin"), &[]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], "5000000");
    let body: Bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(body[..] == data[..], "body differs");
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn precompressed_and_fallback_through_the_server() {
    let (p, app) = setup(
        &[
            ("index.html", b"<app>"),
            ("app.js", b"plain"),
            ("app.js.br", b"BR"),
        ],
        r#", precompressed = true, fallback = "index.html""#,
    )
    .await;
    let (s, h, body) = send(req(
        "GET",
        &p.url("/static/app.js"),
        &[("accept-encoding", "gzip, br")],
    ))
    .await;
    assert_eq!((s, body.as_str()), (200, "BR"));
    assert_eq!(h["content-encoding"], "br");
    assert_eq!(h["vary"], "accept-encoding");
    let (_, h, body) = get(&p.url("/static/app.js")).await;
    assert_eq!(body, "plain");
    assert!(h.get("content-encoding").is_none());
    let (s, _, body) = get(&p.url("/static/some/client/route")).await;
    assert_eq!((s, body.as_str()), (200, "<app>"));
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn check_reports_a_missing_root_with_its_place() {
    let errs = compile(
        r#"
[[listen]]
addr = "127.0.0.1:0"
[[route]]
path = "/static/"
static = "/nonexistent/staticfiles"
"#,
    )
    .err()
    .expect("a missing root must not compile")
    .to_string();
    assert!(
        errs.starts_with("route[0].static: /nonexistent/staticfiles"),
        "{errs}"
    );
}

/// Files past one read chunk go out zero-copy on plain TCP (sendfile): a
/// range from the middle must be exact, and the access log must count the
/// bytes that went out that way.
#[tokio::test]
async fn large_ranges_are_exact_and_logged_with_their_size() {
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("public"), "big.bin", &data);
    let log = dir.path().join("access.log");
    let toml = format!(
        "[log]\naccess = \"{}\"\nformat = \"json\"\n[[listen]]\naddr = \"127.0.0.1:0\"\n\
         [[route]]\npath = \"/static/\"\nstatic = \"public\"\n",
        log.display()
    );
    let p = proxy_in(dir, &toml).await;
    let (a, b) = (123_457usize, 2_654_320usize);
    let resp = client()
        .request(req(
            "GET",
            &p.url("/static/big.bin"),
            &[("range", &format!("bytes={a}-{b}"))],
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body.len(), b - a + 1);
    assert!(body[..] == data[a..=b], "range differs");
    // The line is written off the request path: poll for it.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains(&id)) {
            break l.to_string();
        }
        assert!(tokio::time::Instant::now() < deadline, "no access log line");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(json(&line)["bytes"], b - a + 1);
}

/// Over plain HTTP/1 a cached file goes out by sendfile; over TLS it cannot
/// (the bytes must be encrypted), so it is read in chunks. A small file and
/// one of several chunks arrive whole, with their length, over HTTP/1.1 and
/// HTTP/2 on a TLS listener, and over plain HTTP/1.1 on the same files.
#[tokio::test]
async fn files_arrive_whole_over_tls_and_plain_http() {
    use tls_support::{connect, h1_get, h2_get, Ca, ClientOpts};
    let ca = Ca::new("Test CA");
    let dir = tempfile::tempdir().unwrap();
    ca.leaf(&["files.test"]).write(dir.path(), "site");
    let text = |n: usize| -> String { (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect() };
    let (small, large) = (text(16 << 10), text((200 << 10) + 7));
    write(&dir.path().join("www"), "small.txt", small.as_bytes());
    write(&dir.path().join("www"), "large.txt", large.as_bytes());
    let toml = r#"
[log]
access = "off"

[[listen]]
addr = "127.0.0.1:0"
tls = true

[[listen]]
addr = "127.0.0.1:0"

[[tls.cert]]
cert = "site.crt"
key = "site.key"

[[route]]
path = "/static/"
static = "www"
"#;
    let p = proxy_in(dir, toml).await;
    let o = |alpn| ClientOpts {
        roots: Some(ca.roots()),
        alpn,
        ..Default::default()
    };
    for (name, want) in [("small.txt", &small), ("large.txt", &large)] {
        let path = format!("/static/{name}");
        let s = connect(p.addrs[0], Some("files.test"), &o(&[b"h2"]))
            .await
            .unwrap();
        let (status, version, h, body) = h2_get(s, "files.test", &path).await.unwrap();
        assert_eq!((status.as_u16(), version), (200, http::Version::HTTP_2));
        assert_eq!(h["content-length"], want.len().to_string(), "{name} h2");
        assert!(body == *want, "{name} over HTTP/2 differs");

        let s = connect(p.addrs[0], Some("files.test"), &o(&[b"http/1.1"]))
            .await
            .unwrap();
        let (status, version, h, body) = h1_get(s, "files.test", &path).await.unwrap();
        assert_eq!((status.as_u16(), version), (200, http::Version::HTTP_11));
        assert_eq!(h["content-length"], want.len().to_string(), "{name} h1");
        assert!(body == *want, "{name} over HTTP/1.1 and TLS differs");

        let url = format!("http://{}{path}", p.addrs[1]);
        let (status, h, body) = get(&url).await;
        assert_eq!(status, 200);
        assert_eq!(h["content-length"], want.len().to_string(), "{name} plain");
        assert!(body == *want, "{name} over plain HTTP/1.1 differs");
    }
}
