//! The proxy core end to end: real upstreams (TCP and Unix socket), the real
//! server in-process, a real HTTP client.

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::Response;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

#[tokio::test]
async fn weighted_round_robin_over_tcp_and_unix_servers() {
    let dir = tempfile::tempdir().unwrap();
    let a = fixed("a").await;
    let b = fixed("b").await;
    let u = unix_upstream(&dir.path().join("app.sock"), |_req| async {
        Response::new(Full::new(Bytes::from_static(b"u")))
    })
    .await;
    let p = proxy(&cfg(&format!(
        r#"
[upstream.app]
servers = ["{}", "{}", {{ addr = "{}", weight = 2 }}]
[[route]]
upstream = "app"
"#,
        a.addr, b.addr, u.addr
    )))
    .await;
    let mut seen = String::new();
    for _ in 0..40 {
        let (status, _, body) = get(&p.url("/")).await;
        assert_eq!(status, 200);
        seen.push_str(&body);
    }
    // Smooth weighted round robin: exactly 1:1:2 over whole cycles, and the
    // weight-2 server never gets two in a row more than the weights require.
    assert_eq!(
        (a.hits(), b.hits(), u.hits()),
        (10, 10, 20),
        "sequence {seen}"
    );
    assert!(!seen.contains("uuu"), "not smooth: {seen}");
}

/// `requests` requests one after another through a proxy to one upstream
/// whose settings get `extra`: the connections the upstream accepted.
async fn upstream_conns_for(requests: usize, extra: &str) -> usize {
    let a = fixed("a").await;
    let p = proxy(&cfg(&format!(
        "[upstream.app]\nservers = [\"{}\"]\n{extra}[[route]]\nupstream = \"app\"\n",
        a.addr
    )))
    .await;
    for _ in 0..requests {
        assert_eq!(get(&p.url("/")).await.0, 200);
    }
    assert_eq!(a.hits(), requests);
    a.conns()
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    assert_eq!(
        upstream_conns_for(20, "").await,
        1,
        "each request opened a new upstream connection"
    );
}

#[tokio::test]
async fn an_upstream_connection_is_closed_after_keepalive_requests() {
    let conns = upstream_conns_for(20, "keepalive_requests = 5\n").await;
    assert_eq!(conns, 4, "five requests a connection");
}

#[tokio::test]
async fn forwarded_headers_replace_spoofed_values() {
    let e = echo().await;
    let p = proxy(&cfg(&format!(
        "[upstream.app]\nservers = [\"{}\"]\n[[route]]\nupstream = \"app\"\n",
        e.addr
    )))
    .await;
    let req = Request::get(p.url("/a/b?x=1&y=%20z"))
        .header("host", "shop.example.com")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("x-app", "kept")
        .body(Body::default())
        .unwrap();
    let (status, headers, body) = send(req).await;
    assert_eq!(status, 200);
    let v = json(&body);
    let h = &v["headers"];
    assert_eq!(v["uri"], "/a/b?x=1&y=%20z");
    assert_eq!(h["host"], "shop.example.com");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example.com");
    assert_eq!(h["x-app"], "kept");
    assert!(
        h.get("x-hop").is_none() && h.get("keep-alive").is_none(),
        "hop-by-hop forwarded: {h}"
    );
    let id = headers
        .get("x-request-id")
        .expect("x-request-id in response")
        .to_str()
        .unwrap();
    assert_eq!(
        h["x-request-id"], id,
        "upstream and client see the same request id"
    );
    assert_eq!(id.len(), 32);
}

#[tokio::test]
async fn trusted_proxy_chain_is_extended() {
    let e = echo().await;
    let p = proxy(&cfg(&format!(
        "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n[upstream.app]\nservers = [\"{}\"]\n[[route]]\nupstream = \"app\"\n",
        e.addr
    )))
    .await;
    let req = Request::get(p.url("/"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("x-request-id", "abc-123")
        .body(Body::default())
        .unwrap();
    let (_, headers, body) = send(req).await;
    let h = &json(&body)["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(headers["x-request-id"], "abc-123");
}

#[tokio::test]
async fn no_route_is_404_and_respond_and_redirect_routes_answer() {
    let p = proxy(&cfg(r#"
[[route]]
host = "example.com"
path = "/healthz"
respond = { status = 200, body = "ok" }
[[route]]
host = "example.com"
path = "/old/"
redirect = "https://example.com/new{rest}"
status = 301
"#))
    .await;
    let with_host = |path: &str| {
        Request::get(p.url(path))
            .header("host", "example.com")
            .body(Body::default())
            .unwrap()
    };
    assert_eq!(send(with_host("/healthz")).await.2, "ok");
    let (status, headers, _) = send(with_host("/old/a/b")).await;
    assert_eq!(status, 301);
    assert_eq!(headers["location"], "https://example.com/new/a/b");
    assert_eq!(send(with_host("/other")).await.0, 404);
    // Any other host matches nothing.
    let (status, _, body) = get(&p.url("/healthz")).await;
    assert_eq!((status, body.as_str()), (404, "not found\n"));
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(s).await.unwrap();
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() || m.is_binary() {
                        ws.send(m).await.unwrap();
                    }
                }
            });
        }
    });
    let p = proxy(&cfg(&format!(
        "[upstream.ws]\nservers = [\"{ws_addr}\"]\n[[route]]\npath = \"/ws/\"\nupstream = \"ws\"\n"
    )))
    .await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws/chat", p.addrs[0]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..5 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let m = ws.next().await.unwrap().unwrap();
        assert_eq!(m.into_text().unwrap().as_str(), format!("hello {i}"));
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let big = upstream(|req| async move {
        if req.uri().path() == "/download" {
            return Response::new(Full::new(Bytes::from(vec![7u8; 8 << 20])));
        }
        echo_response(req).await
    })
    .await;
    let p = proxy(&cfg(&format!(
        "[server]\nmax_body = \"20MiB\"\n[upstream.app]\nservers = [\"{}\"]\n[[route]]\nupstream = \"app\"\n",
        big.addr
    )))
    .await;
    let resp = client()
        .request(
            Request::get(p.url("/download"))
                .body(Body::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 8 << 20);
    assert!(body.iter().all(|&b| b == 7));
    let (status, _, body) = send(
        Request::post(p.url("/upload"))
            .body(Full::new(Bytes::from(vec![1u8; 12 << 20])))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["body_len"], 12 << 20);
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_request_finish() {
    let arrived = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (a2, r2) = (arrived.clone(), release.clone());
    let slow = upstream(move |_req| {
        let (a, r) = (a2.clone(), r2.clone());
        async move {
            a.notify_one();
            r.notified().await;
            Response::new(Full::new(Bytes::from_static(b"finished")))
        }
    })
    .await;
    let p = proxy(&cfg(&format!(
        "[server]\nshutdown_timeout = \"30s\"\n[upstream.app]\nservers = [\"{}\"]\n[[route]]\nupstream = \"app\"\n",
        slow.addr
    )))
    .await;
    let url = p.url("/slow");
    let in_flight = tokio::spawn(async move { get(&url).await });
    arrived.notified().await;
    let server = p.server.clone();
    let shutdown = tokio::spawn(async move { server.shutdown().await });
    // New connections are refused once the listener has stopped.
    let addr = p.addrs[0];
    let refused = async {
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), refused)
        .await
        .expect("listener still accepting");
    assert!(
        !shutdown.is_finished(),
        "shutdown did not wait for the request in flight"
    );
    release.notify_one();
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "finished"));
    assert!(shutdown.await.unwrap(), "shutdown hit its timeout");
}

#[tokio::test]
async fn http2_cleartext_with_prior_knowledge_is_proxied() {
    let e = echo().await;
    let p = proxy(&cfg(&format!(
        "[upstream.app]\nservers = [\"{}\"]\n[[route]]\nupstream = \"app\"\n",
        e.addr
    )))
    .await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Body>();
    for _ in 0..3 {
        let resp = h2
            .request(
                Request::get(p.url("/h2?x=1"))
                    .body(Body::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v = json(&String::from_utf8_lossy(&body));
        assert_eq!(v["uri"], "/h2?x=1");
        // The HTTP/1.1 upstream gets a Host header built from :authority.
        assert_eq!(v["headers"]["host"], p.addrs[0].to_string());
    }
}

#[tokio::test]
async fn max_connections_makes_extra_clients_wait_not_fail() {
    let p = proxy(&cfg(
        "[server]\nmax_connections = 1\n[[route]]\nrespond = { body = \"ok\" }\n",
    ))
    .await;
    let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut first = tokio::net::TcpStream::connect(p.addrs[0]).await.unwrap();
    first.write_all(req).await.unwrap();
    let mut buf = [0u8; 512];
    let n = first.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // The second client connects (the kernel's backlog) but is not served
    // while the first connection holds the only slot.
    let mut second = tokio::net::TcpStream::connect(p.addrs[0]).await.unwrap();
    second.write_all(req).await.unwrap();
    let mut buf2 = [0u8; 512];
    let early = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf2)).await;
    assert!(
        early.is_err(),
        "second connection served beyond max_connections"
    );
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(10), second.read(&mut buf2))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf2[..n]).starts_with("HTTP/1.1 200"));
}

/// gunicorn hands a chunked body to a WSGI app as empty; the proxy sends
/// bodies that came without a length whole, with one, unless told not to.
#[tokio::test]
async fn chunked_request_bodies_reach_the_upstream_with_a_length() {
    let e = echo().await;
    let p = proxy(&cfg(&format!(
        r#"
[upstream.app]
servers = ["{0}"]
[upstream.streaming]
servers = ["{0}"]
buffer_chunked = false
[[route]]
path = "/buffered"
upstream = "app"
[[route]]
path = "/streamed"
upstream = "streaming"
"#,
        e.addr
    )))
    .await;
    let chunked = |path: &str| {
        let chunks = (0..4).map(|_| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(vec![
                b'z';
                1000
            ])))
        });
        Request::post(p.url(path))
            .body(StreamBody::new(futures_util::stream::iter(chunks)))
            .unwrap()
    };
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    for (path, length, te) in [
        ("/buffered", Some("4000"), None),
        ("/streamed", None, Some("chunked")),
    ] {
        let resp = client.request(chunked(path)).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v = json(&String::from_utf8_lossy(&body));
        assert_eq!(v["body_len"], 4000, "{path}");
        assert_eq!(v["headers"]["content-length"].as_str(), length, "{path}");
        assert_eq!(v["headers"]["transfer-encoding"].as_str(), te, "{path}");
    }
}
