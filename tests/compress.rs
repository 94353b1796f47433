//! A route's `compress` through the real server: an app's text answers
//! gzipped for clients that accept gzip (over HTTP/1.1 and HTTP/2), with
//! the fields that say so, and every answer that must stay as it is left
//! as it is, byte for byte.

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::Response;
use std::io::Read;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A page as Django renders one: repetitive markup, about 6 KiB.
fn page() -> String {
    let mut s =
        String::from("<!doctype html><html><head><title>Orders</title></head><body><table>");
    for i in 0..120 {
        s.push_str(&format!(
            "<tr><td class=\"id\">{i}</td><td class=\"state\">shipped</td></tr>"
        ));
    }
    s.push_str("</table></body></html>");
    s
}

fn gunzip(b: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(b)
        .read_to_string(&mut out)
        .expect("a whole gzip stream");
    out
}

/// An upstream that answers `/<case>` with the fields of that case.
async fn app() -> Upstream {
    upstream(|req| async move {
        let case = req.uri().path().trim_start_matches('/').to_string();
        let mut r = Response::builder()
            .header("content-type", "text/html; charset=utf-8")
            .header("etag", "\"v1\"")
            .header("vary", "Cookie")
            .header("accept-ranges", "bytes");
        let body = match case.as_str() {
            "png" => {
                r = Response::builder().header("content-type", "image/png");
                page()
            }
            "small" => "<p>hi</p>".to_string(),
            "encoded" => {
                r = r.header("content-encoding", "br");
                page()
            }
            "no-transform" => {
                r = r.header("cache-control", "public, no-transform");
                page()
            }
            "events" => {
                r = Response::builder().header("content-type", "text/event-stream");
                page()
            }
            _ => page(),
        };
        r.body(Full::new(Bytes::from(body))).unwrap()
    })
    .await
}

fn config(addr: &str) -> String {
    cfg(&format!(
        "[upstream.app]\nservers = [\"{addr}\"]\n\
         [[route]]\npath = \"/plain/\"\nupstream = \"app\"\n\
         [[route]]\nupstream = \"app\"\ncompress = true\n"
    ))
}

async fn fetch(url: &str, gzip: bool) -> (u16, http::HeaderMap, Bytes) {
    let mut b = Request::get(url);
    if gzip {
        b = b.header("accept-encoding", "gzip, deflate, br");
    }
    let resp = client()
        .request(b.body(Body::default()).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    (
        parts.status.as_u16(),
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn a_text_answer_is_gzipped_for_a_client_that_accepts_it() {
    let a = app().await;
    let p = proxy(&config(&a.addr)).await;
    let (st, h, body) = fetch(&p.url("/orders"), true).await;
    assert_eq!(st, 200);
    assert_eq!(h["content-encoding"], "gzip");
    assert_eq!(gunzip(&body), page());
    assert!(
        body.len() * 5 < page().len(),
        "{} bytes of {}",
        body.len(),
        page().len()
    );
    // Fields that described the upstream's bytes now describe these.
    assert_eq!(h["etag"], "W/\"v1\"");
    assert_eq!(h["vary"], "Cookie, Accept-Encoding");
    assert_eq!(h["accept-ranges"], "none");
    assert!(!h.contains_key("content-length"), "{h:?}");
    assert_eq!(h.get_all("content-encoding").iter().count(), 1);

    // Without Accept-Encoding, or on a route without compress, the
    // upstream's answer as it was.
    for (url, gzip) in [(p.url("/orders"), false), (p.url("/plain/orders"), true)] {
        let (st, h, body) = fetch(&url, gzip).await;
        assert_eq!(st, 200);
        assert!(!h.contains_key("content-encoding"), "{url}");
        assert_eq!(h["etag"], "\"v1\"");
        assert_eq!(h["vary"], "Cookie");
        assert_eq!(h["content-length"], page().len().to_string().as_str());
        assert_eq!(body, page());
    }
}

#[tokio::test]
async fn a_route_vary_joins_the_answers_rather_than_replacing_it() {
    // A route's other headers replace the app's; Vary is a list a cache
    // keys on, and losing the app's Cookie or gzip's Accept-Encoding from
    // it would let the cache serve one client's answer to another.
    let a = app().await;
    let p = proxy(&cfg(&format!(
        "[upstream.app]\nservers = [\"{}\"]\n\
         [[route]]\npath = \"/gz/\"\nupstream = \"app\"\ncompress = true\n\
         headers = {{ Vary = \"Origin\", ETag = \"route\" }}\n\
         [[route]]\nupstream = \"app\"\nheaders = {{ Vary = \"origin, cookie\" }}\n",
        a.addr
    )))
    .await;
    let (st, h, body) = fetch(&p.url("/gz/orders"), true).await;
    assert_eq!(st, 200);
    assert_eq!(gunzip(&body), page());
    assert_eq!(h["vary"], "Origin, Cookie, Accept-Encoding");
    assert_eq!(h["etag"], "route", "other fields are still replaced");
    let (_, h, _) = fetch(&p.url("/gz/orders"), false).await;
    assert_eq!(h["vary"], "Origin, Cookie");
    // An item in both, in any case, is there once.
    let (_, h, _) = fetch(&p.url("/orders"), true).await;
    assert_eq!(h["vary"], "origin, cookie");
    assert_eq!(h.get_all("vary").iter().count(), 1);
}

#[tokio::test]
async fn answers_that_must_stay_as_they_are_are_not_touched() {
    let a = app().await;
    let p = proxy(&config(&a.addr)).await;
    for case in ["png", "small", "encoded", "no-transform", "events"] {
        let (st, h, body) = fetch(&p.url(&format!("/{case}")), true).await;
        assert_eq!(st, 200, "{case}");
        let coding = h.get("content-encoding").map(|v| v.to_str().unwrap());
        assert_eq!(coding, (case == "encoded").then_some("br"), "{case}");
        assert!(h.contains_key("content-length"), "{case}: {h:?}");
        let want = if case == "small" {
            "<p>hi</p>".to_string()
        } else {
            page()
        };
        assert_eq!(body, want, "{case}");
    }
    // A HEAD answer keeps the fields a GET without gzip would have.
    let req = Request::head(p.url("/orders"))
        .header("accept-encoding", "gzip")
        .body(Body::default())
        .unwrap();
    let (st, h, _) = send(req).await;
    assert_eq!(st, 200);
    assert!(!h.contains_key("content-encoding"));
}

#[tokio::test]
async fn http2_clients_get_it_too() {
    let a = app().await;
    let p = proxy(&config(&a.addr)).await;
    let (mut send, _conn) = h2_connect(p.addrs[0]).await;
    let req = Request::get(p.url("/orders"))
        .header("accept-encoding", "gzip")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    assert_eq!(resp.headers()["vary"], "Cookie, Accept-Encoding");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(gunzip(&body), page());
}

/// What the upstream has sent reaches the client before the upstream sends
/// the rest: the encoder is flushed with each piece, not at the end. The
/// upstream waits for the test to have read the first part.
#[tokio::test]
async fn a_streamed_answer_streams_compressed() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let up = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the proxy closed before its request head");
            head.extend_from_slice(&buf[..n]);
        }
        let first = "data: the first part of a slow page\n".repeat(20);
        s.write_all(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n",
                first.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        wait.await.unwrap();
        s.write_all(b"5\r\n, end\r\n0\r\n\r\n").await.unwrap();
    });
    let p = proxy(&cfg(&format!(
        "[upstream.app]\nservers = [\"{addr}\"]\n[[route]]\nupstream = \"app\"\ncompress = true\n"
    )))
    .await;
    let req = Request::get(p.url("/slow"))
        .header("accept-encoding", "gzip")
        .body(Body::default())
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let mut dec = flate2::write::GzDecoder::new(Vec::new());
    let first = "data: the first part of a slow page\n".repeat(20);
    // Until the first part is readable; the upstream has sent nothing more.
    // The guard only stops a hang.
    let first_part = async {
        while dec.get_ref().len() < first.len() {
            let frame = body
                .frame()
                .await
                .expect("the body ended before its first part")
                .unwrap();
            if let Ok(d) = frame.into_data() {
                std::io::Write::write_all(&mut dec, &d).unwrap();
                std::io::Write::flush(&mut dec).unwrap();
                got.extend_from_slice(&d);
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), first_part)
        .await
        .expect("the first part did not come before the rest was sent");
    assert_eq!(String::from_utf8_lossy(dec.get_ref()), first);
    go.send(()).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    got.extend_from_slice(&rest);
    assert_eq!(gunzip(&got), format!("{first}, end"));
    up.await.unwrap();
}
