//! An upstream answer's header fields reach the client as the upstream sent
//! them, over HTTP/1 and HTTP/2, except hop-by-hop ones and those the proxy
//! sets itself, which replace the upstream's rather than doubling them.

mod common;

use common::*;
use http::{HeaderMap, Request, Response};

async fn app() -> Upstream {
    upstream(|_req| async move {
        Response::builder()
            .header("x-app", "1")
            .header("x-multi", "a")
            .header("x-multi", "b")
            .header("cache-control", "private")
            .header("x-request-id", "from-the-app")
            .header("keep-alive", "timeout=5")
            .header("connection", "x-secret")
            .header("x-secret", "hop")
            .body(Body::from("twelve bytes"))
            .unwrap()
    })
    .await
}

fn cfg(app: &Upstream) -> String {
    format!(
        "[log]\naccess = \"off\"\n[[listen]]\naddr = \"127.0.0.1:0\"\n\
         [upstream.app]\nservers = [\"{}\"]\n\
         [[route]]\nupstream = \"app\"\nheaders = {{ \"Cache-Control\" = \"public\" }}\n",
        app.addr
    )
}

fn check(h: &HeaderMap) {
    assert_eq!(h["x-app"], "1");
    let multi: Vec<_> = h.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["a", "b"]);
    let cc: Vec<_> = h.get_all("cache-control").iter().collect();
    assert_eq!(cc, ["public"], "the route's header replaces the app's");
    let ids: Vec<_> = h.get_all("x-request-id").iter().collect();
    assert_eq!(ids.len(), 1);
    assert_ne!(
        ids[0], "from-the-app",
        "the proxy's request id replaces the app's"
    );
    assert_eq!(h.get_all("date").iter().count(), 1);
    for hop in ["keep-alive", "x-secret"] {
        assert!(!h.contains_key(hop), "{hop} is hop-by-hop");
    }
}

#[tokio::test]
async fn http1_clients_get_the_upstream_fields_once_each() {
    let a = app().await;
    let p = proxy(&cfg(&a)).await;
    let (status, headers, body) = get(&p.url("/")).await;
    assert_eq!((status, body.as_str()), (200, "twelve bytes"));
    check(&headers);
    assert_eq!(headers["content-length"], "12");
    // On the wire: no field twice where the map above would fold them.
    let wire = raw(
        p.addrs[0],
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .to_ascii_lowercase();
    assert_eq!(wire.matches("\r\ncontent-length:").count(), 1, "{wire}");
    assert_eq!(wire.matches("\r\nx-request-id:").count(), 1, "{wire}");
    assert_eq!(wire.matches("\r\ndate:").count(), 1, "{wire}");
    assert!(wire.ends_with("\r\n\r\ntwelve bytes"), "{wire}");
}

#[tokio::test]
async fn http2_clients_get_the_same_fields() {
    let a = app().await;
    let p = proxy(&cfg(&a)).await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Body>();
    let resp = h2
        .request(Request::get(p.url("/")).body(Body::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    check(resp.headers());
}

#[tokio::test]
async fn a_head_answer_keeps_the_upstreams_length() {
    let a = app().await;
    let p = proxy(&cfg(&a)).await;
    let wire = raw(
        p.addrs[0],
        b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .to_ascii_lowercase();
    assert!(wire.contains("\r\ncontent-length: 12\r\n"), "{wire}");
    assert!(wire.ends_with("\r\n\r\n"), "{wire}");
}
