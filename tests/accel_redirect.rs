//! X-Accel-Redirect: the app decides who gets a file, the proxy sends it
//! from an internal static route, as nginx does for Django's protected
//! downloads.

mod common;

use common::{cfg, proxy_in, send, upstream, Body, Proxy, Upstream};
use hyper::{Request, Response};

/// The app: `/download/N` answers with the file's path as nginx would be
/// told it, and a cookie, a disposition and Django's default type;
/// `/bad` names a path no internal route serves, `/plain` is an ordinary page.
async fn app() -> Upstream {
    upstream(|req| async move {
        let path = req.uri().path().to_string();
        let r = Response::builder()
            .header("Content-Type", "application/pdf")
            .header("Content-Disposition", "attachment; filename=\"report.pdf\"")
            .header("Set-Cookie", "seen=1")
            .header("X-App-Only", "dropped");
        let r = match path.as_str() {
            "/download/1" => r.header("X-Accel-Redirect", "/protected/report.pdf"),
            "/download/missing" => r.header("X-Accel-Redirect", "/protected/nothing.pdf"),
            // As django-sendfile2 sends a name with a space: percent-encoded.
            "/download/spaced" => r.header("X-Accel-Redirect", "/protected/my%20notes.txt"),
            "/download/escape" => r.header("X-Accel-Redirect", "/protected/../secret.txt"),
            "/bad" => r.header("X-Accel-Redirect", "/download/1"),
            _ => r,
        };
        r.body(Body::from("app body")).unwrap()
    })
    .await
}

async fn setup() -> (Proxy, Upstream) {
    let app = app().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), "SECRET").unwrap();
    std::fs::create_dir(dir.path().join("private")).unwrap();
    let pdf: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("private/report.pdf"), pdf).unwrap();
    std::fs::write(dir.path().join("private/my notes.txt"), "notes").unwrap();
    let toml = cfg(&format!(
        r#"
[upstream.app]
servers = ["{}"]
[[route]]
path = "/protected/"
static = "private"
internal = true
headers = {{ "X-Served-By" = "internal" }}
[[route]]
path = "/"
upstream = "app"
compress = true
"#,
        app.addr
    ));
    (proxy_in(dir, &toml).await, app)
}

async fn get(p: &Proxy, path: &str, headers: &[(&str, &str)]) -> (u16, http::HeaderMap, Vec<u8>) {
    let mut b = Request::get(p.url(path));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let r = common::client()
        .request(b.body(Body::default()).unwrap())
        .await
        .unwrap();
    let (parts, body) = r.into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    (parts.status.as_u16(), parts.headers, body.to_vec())
}

#[tokio::test]
async fn the_app_names_a_file_and_the_proxy_sends_it() {
    let (p, app) = setup().await;
    let want: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let (status, h, body) = get(&p, "/download/1", &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(status, 200);
    assert!(
        body == want,
        "the file, whole and not gzipped: {} bytes",
        body.len()
    );
    assert_eq!(h["content-length"], "10000");
    // The app's fields that describe the file stay; the rest goes.
    assert_eq!(h["content-type"], "application/pdf");
    assert_eq!(
        h["content-disposition"],
        "attachment; filename=\"report.pdf\""
    );
    assert_eq!(h["set-cookie"], "seen=1");
    assert!(h.get("x-accel-redirect").is_none(), "{h:?}");
    assert!(h.get("x-app-only").is_none(), "{h:?}");
    assert!(h.get("content-encoding").is_none(), "{h:?}");
    assert_eq!(h["x-served-by"], "internal", "the internal route's headers");
    assert_eq!(app.hits.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Ranges and validators work as for any static file.
    let (status, h, body) = get(&p, "/download/1", &[("Range", "bytes=100-199")]).await;
    assert_eq!(status, 206);
    assert!(body == want[100..200], "{} bytes", body.len());
    assert_eq!(h["content-range"], "bytes 100-199/10000");
    let (_, h, _) = get(&p, "/download/1", &[]).await;
    let etag = h["etag"].to_str().unwrap().to_string();
    let (status, _, body) = get(&p, "/download/1", &[("If-None-Match", &etag)]).await;
    assert_eq!((status, body.len()), (304, 0));
}

#[tokio::test]
async fn an_internal_route_is_not_for_clients_and_a_bad_redirect_is_refused() {
    let (p, _app) = setup().await;
    // Asked directly: 404, though the file is there.
    let (status, _, body) = get(&p, "/protected/report.pdf", &[]).await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    // A percent-encoded name is decoded once, as a client's would be.
    let (status, _, body) = get(&p, "/download/spaced", &[]).await;
    assert_eq!((status, body.as_slice()), (200, &b"notes"[..]));
    // A file the internal route does not have: 404.
    assert_eq!(get(&p, "/download/missing", &[]).await.0, 404);
    // Out of the root by ..: normalized to /secret.txt, which no internal
    // route serves, so it is refused, and the secret is never sent.
    let (status, _, body) = get(&p, "/download/escape", &[]).await;
    assert_eq!(status, 502);
    assert!(!String::from_utf8_lossy(&body).contains("SECRET"));
    // A path of a route that is not internal: the app is misconfigured, 502.
    assert_eq!(get(&p, "/bad", &[]).await.0, 502);
    // An ordinary answer passes as ever.
    let (status, h, body) = get(&p, "/plain", &[]).await;
    assert_eq!((status, body.as_slice()), (200, &b"app body"[..]));
    assert_eq!(h["x-app-only"], "dropped");
}

#[tokio::test]
async fn without_an_internal_route_the_field_passes_untouched() {
    let app = app().await;
    let toml = cfg(&format!(
        "[upstream.app]\nservers = [\"{}\"]\n[[route]]\nupstream = \"app\"\n",
        app.addr
    ));
    let p = proxy_in(tempfile::tempdir().unwrap(), &toml).await;
    let (status, h, body) = send_get(&p, "/download/1").await;
    assert_eq!((status, body.as_str()), (200, "app body"));
    assert_eq!(h["x-accel-redirect"], "/protected/report.pdf");
}

async fn send_get(p: &Proxy, path: &str) -> (u16, http::HeaderMap, String) {
    send(Request::get(p.url(path)).body(Body::default()).unwrap()).await
}

#[tokio::test]
async fn over_http2_too_with_a_range_and_head() {
    let (p, _app) = setup().await;
    let want: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Body>();
    let req = Request::get(p.url("/download/1"))
        .header("Range", "bytes=9000-")
        .body(Body::default())
        .unwrap();
    let r = h2.request(req).await.unwrap();
    assert_eq!(r.version(), http::Version::HTTP_2);
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"report.pdf\""
    );
    assert!(r.headers().get("x-accel-redirect").is_none());
    let body = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(body[..] == want[9000..], "{} bytes", body.len());
    // HEAD: the file's length, no body.
    let req = Request::head(p.url("/download/1"))
        .body(Body::default())
        .unwrap();
    let r = h2.request(req).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "10000");
    let body = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(body.is_empty());
}
