//! `error_pages` through the real server: the proxy's own error answers
//! (no route, the app down, a client over its rate) as the site's pages,
//! a route's pages over the server's, the app's own errors untouched, and
//! a page edited on disk served after a reload.

mod common;

use common::*;
use http::Request;
use hyper::Response;

const DOWN: &str = "<!doctype html><h1>Back in a minute</h1>\n";
const API_DOWN: &str = "{\"error\": \"unavailable\"}\n";
const MISSING: &str = "<h1>No such page</h1>\n";
const SLOW_DOWN: &str = "slow down\n";

/// An address that refuses connections: bound, never listening.
fn dead() -> (tokio::net::TcpSocket, String) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = s.local_addr().unwrap().to_string();
    (s, addr)
}

fn config(dead: &str, live: &str) -> String {
    cfg(&format!(
        "[server]\nerror_pages = {{ 502 = \"pages/502.html\", 404 = \"pages/404.html\" }}\n\
         [upstream.down]\nservers = [\"{dead}\"]\n\
         [upstream.live]\nservers = [\"{live}\"]\n\
         [[route]]\npath = \"/api/\"\nupstream = \"down\"\n\
         error_pages = {{ 502 = \"pages/api-502.json\", 429 = \"pages/429.txt\" }}\n\
         rate_limit = {{ rate = \"1/h\" }}\n\
         [[route]]\npath = \"/app/\"\nupstream = \"down\"\n\
         [[route]]\npath = \"/live/\"\nupstream = \"live\"\n"
    ))
}

async fn started(dead: &str, live: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("pages");
    std::fs::create_dir(&pages).unwrap();
    for (name, body) in [
        ("502.html", DOWN),
        ("404.html", MISSING),
        ("api-502.json", API_DOWN),
        ("429.txt", SLOW_DOWN),
    ] {
        std::fs::write(pages.join(name), body).unwrap();
    }
    proxy_in(dir, &config(dead, live)).await
}

#[tokio::test]
async fn the_proxys_own_errors_are_the_sites_pages() {
    let (_sock, dead) = dead();
    // The app's own 502, with its own body: not the proxy's to replace.
    let app = upstream(|_| async {
        Response::builder()
            .status(502)
            .header("content-type", "text/html")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                "django's own",
            )))
            .unwrap()
    })
    .await;
    let p = started(&dead, &app.addr).await;

    let (st, h, body) = get(&p.url("/app/orders")).await;
    assert_eq!((st, body.as_str()), (502, DOWN));
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["content-length"], DOWN.len().to_string().as_str());
    assert!(h.contains_key("x-request-id"), "the proxy's fields stay");

    // No route: the server's 404 page.
    let (st, h, body) = get(&p.url("/nowhere")).await;
    assert_eq!((st, body.as_str()), (404, MISSING));
    assert_eq!(h["content-type"], "text/html; charset=utf-8");

    // A route's pages over the server's: its 502 is JSON.
    let (st, h, body) = get(&p.url("/api/orders")).await;
    assert_eq!((st, body.as_str()), (502, API_DOWN));
    assert_eq!(h["content-type"], "application/json");
    // Over its rate: the route's 429 page, with Retry-After still there.
    let (st, h, body) = get(&p.url("/api/orders")).await;
    assert_eq!((st, body.as_str()), (429, SLOW_DOWN));
    assert!(h.contains_key("retry-after"), "{h:?}");

    // A status with no page keeps the proxy's text.
    let req = Request::post(p.url("/app/x"))
        .header("content-length", "999999999")
        .body(Body::default())
        .unwrap();
    let client = client();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");

    let (st, _, body) = get(&p.url("/live/x")).await;
    assert_eq!((st, body.as_str()), (502, "django's own"));

    // Over HTTP/2 too.
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Body>();
    for head in [false, true] {
        let req = if head {
            Request::head(p.url("/app/x"))
        } else {
            Request::get(p.url("/app/x"))
        };
        let resp = h2
            .request(req.body(Body::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.status(), 502);
        assert_eq!(
            resp.headers()["content-length"],
            DOWN.len().to_string().as_str()
        );
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body, if head { "" } else { DOWN }, "HEAD: {head}");
    }

    // HEAD: the page's fields, no body.
    let head = Request::head(p.url("/app/orders"))
        .body(Body::default())
        .unwrap();
    let (st, h, body) = send(head).await;
    assert_eq!((st, body.as_str()), (502, ""));
    assert_eq!(h["content-length"], DOWN.len().to_string().as_str());
}

#[tokio::test]
async fn a_page_edited_on_disk_is_served_after_a_reload() {
    let (_sock, dead) = dead();
    let live = fixed("ok").await;
    let p = started(&dead, &live.addr).await;
    let page = p.dir.path().join("pages/502.html");
    let config_files = p.server.state().load().files.clone();
    assert!(
        config_files.contains(&page),
        "the page is watched as the config is: {config_files:?}"
    );
    std::fs::write(&page, "<h1>Maintenance until 14:00</h1>\n").unwrap();
    p.server.reload().await.expect("reload");
    let (st, _, body) = get(&p.url("/app/x")).await;
    assert_eq!(
        (st, body.as_str()),
        (502, "<h1>Maintenance until 14:00</h1>\n")
    );

    // A page gone is a broken config: the old one keeps running, with the
    // page it had.
    std::fs::remove_file(&page).unwrap();
    let err = p
        .server
        .reload()
        .await
        .expect_err("a missing page must fail");
    assert!(
        err.to_string()
            .contains("server.error_pages.502: cannot read"),
        "{err}"
    );
    let (st, _, body) = get(&p.url("/app/x")).await;
    assert_eq!(
        (st, body.as_str()),
        (502, "<h1>Maintenance until 14:00</h1>\n")
    );
}

#[tokio::test]
async fn the_proxys_own_answer_to_head_has_a_length_and_no_body_over_http2() {
    // HTTP/1 drops a HEAD answer's body as it writes; HTTP/2 sends what it
    // is given, and DATA on a HEAD answer is a protocol error to clients.
    let p = proxy(&cfg(
        "[[route]]\npath = \"/x/\"\nrespond = { body = \"x\" }\n",
    ))
    .await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Body>();
    let req = Request::head(p.url("/nowhere"))
        .body(Body::default())
        .unwrap();
    let resp = h2.request(req).await.expect("a HEAD answer over HTTP/2");
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.headers()["content-length"],
        "not found\n".len().to_string().as_str()
    );
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(body.is_empty());
    // The same over HTTP/1.1, with the same length.
    let (st, h, body) = send(
        Request::head(p.url("/nowhere"))
            .body(Body::default())
            .unwrap(),
    )
    .await;
    assert_eq!((st, body.as_str()), (404, ""));
    assert_eq!(h["content-length"], "10");
}
