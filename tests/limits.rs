//! The limits a client or an upstream runs into, end to end: body, head and
//! target sizes (413, 431, 414), an upstream that is dead (502) or slow
//! (504), a client that sends its head too slowly, an idle keep-alive
//! connection that must outlive the head's timeout, and HTTP/2 streams past
//! `max_concurrent_streams`.

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{Full, StreamBody};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn body_over_max_body_is_413_by_length_and_while_streaming() {
    let e = echo().await;
    let p = proxy(&cfg(&format!(
        "[server]\nmax_body = \"1KiB\"\n[upstream.app]\nservers = [\"{}\"]\n[[route]]\nupstream = \"app\"\n",
        e.addr
    )))
    .await;
    let (status, _, body) = send(
        Request::post(p.url("/"))
            .body(Full::new(Bytes::from(vec![b'x'; 1024])))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["body_len"], 1024);
    let (status, _, _) = send(
        Request::post(p.url("/"))
            .body(Full::new(Bytes::from(vec![b'x'; 1025])))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(
        e.hits(),
        1,
        "the oversized request with Content-Length reached the upstream"
    );

    // Chunked: no length up front, the limit trips while streaming.
    let chunks = (0..8).map(|_| {
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(vec![b'y'; 512])))
    });
    let stream = StreamBody::new(futures_util::stream::iter(chunks));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let resp = client
        .request(Request::post(p.url("/")).body(stream).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
}

#[tokio::test]
async fn a_route_max_body_overrides_the_server_one_both_ways() {
    // An upload route that takes more than the server's 1 KiB, and an API
    // route that takes less; /stream sends bodies on as they come rather
    // than read whole first, so its limit trips mid-stream.
    let e = echo().await;
    let p = proxy(&cfg(&format!(
        "[server]\nmax_body = \"1KiB\"\n\
         [upstream.app]\nservers = [\"{0}\"]\n\
         [upstream.streamed]\nservers = [\"{0}\"]\nbuffer_requests = false\nbuffer_chunked = false\n\
         [[route]]\npath = \"/upload\"\nupstream = \"app\"\nmax_body = \"4KiB\"\n\
         [[route]]\npath = \"/stream\"\nupstream = \"streamed\"\nmax_body = \"4KiB\"\n\
         [[route]]\npath = \"/api\"\nupstream = \"app\"\nmax_body = \"100\"\n\
         [[route]]\nupstream = \"app\"\n",
        e.addr
    )))
    .await;
    let post = |path: &str, n: usize| {
        Request::post(p.url(path))
            .body(Full::new(Bytes::from(vec![b'x'; n])))
            .unwrap()
    };
    let chunked = |path: &str, pieces: usize| {
        let chunks = (0..pieces).map(|_| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(vec![
                b'y';
                512
            ])))
        });
        Request::post(p.url(path))
            .body(StreamBody::new(futures_util::stream::iter(chunks)))
            .unwrap()
    };
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    for path in ["/upload", "/stream"] {
        let (status, _, body) = send(post(path, 4096)).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(json(&body)["body_len"], 4096, "{path}");
        let (status, _, _) = send(post(path, 4097)).await;
        assert_eq!(status, 413, "{path} by length");
        // 3 KiB chunked is over the server's limit but within the route's.
        let resp = client.request(chunked(path, 6)).await.unwrap();
        assert_eq!(resp.status(), 200, "{path} chunked within");
        let resp = client.request(chunked(path, 10)).await.unwrap();
        assert_eq!(resp.status(), 413, "{path} chunked past");
    }
    let (status, _, _) = send(post("/api", 100)).await;
    assert_eq!(status, 200);
    let (status, _, _) = send(post("/api", 101)).await;
    assert_eq!(status, 413, "below the server's limit, above the route's");
    let resp = client.request(chunked("/api", 1)).await.unwrap();
    assert_eq!(resp.status(), 413, "a chunked body past the route's limit");
    let (status, _, _) = send(post("/other", 1025)).await;
    assert_eq!(status, 413, "a route without its own takes the server's");
}

#[tokio::test]
async fn huge_headers_get_431_and_long_uri_414() {
    let e = echo().await;
    let p = proxy(&cfg(&format!(
        "[upstream.app]\nservers = [\"{}\"]\n[[route]]\nupstream = \"app\"\n",
        e.addr
    )))
    .await;
    let big = "a".repeat(70 * 1024);
    let resp = raw(
        p.addrs[0],
        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 431"),
        "{}",
        &resp[..resp.len().min(80)]
    );
    // Over 8 KiB, and over the whole head's limit too: 414 either way.
    for n in [9000, 100 * 1024] {
        let long = format!("/{}", "b".repeat(n));
        let resp = raw(
            p.addrs[0],
            format!("GET {long} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(
            resp.starts_with("HTTP/1.1 414"),
            "{n}: {}",
            &resp[..resp.len().min(80)]
        );
    }
    assert_eq!(e.hits(), 0);
}

#[tokio::test]
async fn dead_upstream_is_502_and_connect_failure_moves_to_next_server() {
    // A port that was just free: nothing listens there.
    // Bound but never listening: connecting is refused, and no other test
    // can take the port while the socket lives.
    let dead_sock = tokio::net::TcpSocket::new_v4().unwrap();
    dead_sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead = dead_sock.local_addr().unwrap().to_string();
    let a = fixed("alive").await;
    let p = proxy(&cfg(&format!(
        r#"
[upstream.dead]
servers = ["{dead}"]
[upstream.mixed]
servers = ["{dead}", "{}"]
retries = 1
[[route]]
path = "/dead"
upstream = "dead"
[[route]]
path = "/mixed"
upstream = "mixed"
"#,
        a.addr
    )))
    .await;
    let (status, _, body) = get(&p.url("/dead")).await;
    assert_eq!((status, body.as_str()), (502, "bad gateway\n"));
    for _ in 0..6 {
        let (status, _, body) = get(&p.url("/mixed")).await;
        assert_eq!((status, body.as_str()), (200, "alive"));
    }
}

#[tokio::test]
async fn slow_upstream_is_504_after_timeout() {
    let hang = upstream(|_req| async {
        std::future::pending::<()>().await;
        unreachable!()
    })
    .await;
    let p = proxy(&cfg(&format!(
        "[upstream.app]\nservers = [\"{}\"]\ntimeout = \"300ms\"\nretries = 0\n[[route]]\nupstream = \"app\"\n",
        hang.addr
    )))
    .await;
    let (status, _, body) = get(&p.url("/")).await;
    assert_eq!((status, body.as_str()), (504, "gateway timeout\n"));
}

#[tokio::test]
async fn slow_header_client_is_cut_off_while_others_are_served() {
    let a = fixed("fine").await;
    let p = proxy(&cfg(&format!(
        "[server]\nheader_timeout = \"500ms\"\n[upstream.app]\nservers = [\"{}\"]\n[[route]]\nupstream = \"app\"\n",
        a.addr
    )))
    .await;
    let mut slow = tokio::net::TcpStream::connect(p.addrs[0]).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Dribble: 1")
        .await
        .unwrap();
    // Others are served while the slow head is pending.
    for _ in 0..3 {
        assert_eq!(get(&p.url("/")).await.2, "fine");
    }
    // The server closes the slow connection; the guard only stops a hang.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "slow-header connection was never closed");
    assert_eq!(a.hits(), 3);
}

#[tokio::test]
async fn idle_keepalive_connection_outlives_header_timeout() {
    // header_timeout bounds a head that has started, not the idle wait
    // between requests on a keep-alive connection.
    let p = proxy(&cfg("[server]\nheader_timeout = \"200ms\"\nidle_timeout = \"60s\"\n[[route]]\nrespond = { body = \"ok\" }\n")).await;
    let mut s = tokio::net::TcpStream::connect(p.addrs[0]).await.unwrap();
    let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(req).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Wait well past header_timeout with the connection idle. The wait is
    // not a synchronisation: the assertion holds for any longer wait too.
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.write_all(req).await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        n > 0 && String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "idle connection was closed"
    );
}

/// What the proxy's SETTINGS frame announces as SETTINGS_MAX_CONCURRENT_STREAMS
/// on a new HTTP/2 connection (prior knowledge), and that connection.
async fn announced_streams(addr: std::net::SocketAddr) -> (u32, tokio::net::TcpStream) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(H2_PREFACE).await.unwrap();
    loop {
        let (kind, flags, stream, payload) = h2_frame(&mut s).await;
        if kind == 0x04 && flags & 0x01 == 0 && stream == 0 {
            let n = payload
                .chunks(6)
                .find(|e| e[..2] == [0, 3])
                .map(|e| u32::from_be_bytes([e[2], e[3], e[4], e[5]]))
                .expect("SETTINGS_MAX_CONCURRENT_STREAMS announced");
            // Acknowledged: from here the limit holds.
            s.write_all(b"\0\0\0\x04\x01\0\0\0\0").await.unwrap();
            return (n, s);
        }
    }
}

#[tokio::test]
async fn http2_streams_past_max_concurrent_streams_are_refused_and_a_reload_changes_it() {
    // An app that never answers: the streams stay open.
    let app = upstream(|_req| std::future::pending()).await;
    let toml = |n: u32| {
        cfg(&format!(
            "[server]\nmax_concurrent_streams = {n}\n[upstream.app]\nservers = [\"{}\"]\n\
             [[route]]\nupstream = \"app\"\n",
            app.addr
        ))
    };
    let p = proxy(&toml(2)).await;
    let (n, mut s) = announced_streams(p.addrs[0]).await;
    assert_eq!(n, 2);
    for stream in [1u32, 3, 5] {
        s.write_all(&h2_get_frame(stream)).await.unwrap();
    }
    // The third is refused (RST_STREAM, REFUSED_STREAM), the first two are
    // left waiting for the app.
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match h2_frame(&mut s).await {
                (0x03, _, id, code) => return (id, code),
                (0x07, _, _, payload) => panic!("GOAWAY: {payload:?}"),
                _ => {}
            }
        }
    })
    .await
    .expect("no RST_STREAM");
    assert_eq!(refused, (5, vec![0, 0, 0, 7]));
    // A reload applies to the connections that come after it.
    std::fs::write(&p.config_path, toml(7)).unwrap();
    p.server.reload().await.unwrap();
    assert_eq!(announced_streams(p.addrs[0]).await.0, 7);
}

#[tokio::test]
async fn an_http2_connection_kept_busy_by_pings_alone_is_closed_after_idle_timeout() {
    let up = fixed("ok").await;
    let p = proxy(&cfg(&format!(
        "[server]\nidle_timeout = \"1s\"\n[upstream.app]\nservers = [\"{}\"]\n\
         [[route]]\nupstream = \"app\"\n",
        up.addr
    )))
    .await;
    let tcp = tokio::net::TcpStream::connect(p.addrs[0]).await.unwrap();
    // A PING every 100 ms: the socket is never quiet for idle_timeout.
    let (mut send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_millis(100))
            .keep_alive_while_idle(true)
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::get(format!("http://x:{}/", p.addrs[0].port()))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    // Then no request: the PINGs alone must not keep the connection. The
    // guard only stops a hang.
    let ended = tokio::time::timeout(Duration::from_secs(20), conn).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "a connection with no requests was kept by its PINGs: {ended:?}"
    );
}

#[tokio::test]
async fn a_route_timeout_outlasts_its_upstreams() {
    // /report/ answers only once the test says so; anything else never.
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<()>();
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let app = {
        let release = release.clone();
        upstream(move |req| {
            let (arrived_tx, release) = (arrived_tx.clone(), release.clone());
            async move {
                if req.uri().path().starts_with("/report/") {
                    let _ = arrived_tx.send(());
                    release.notified().await;
                    return http::Response::new(Full::new(Bytes::from("report")));
                }
                std::future::pending::<()>().await;
                unreachable!()
            }
        })
        .await
    };
    let p = proxy(&cfg(&format!(
        "[upstream.app]\nservers = [\"{}\"]\ntimeout = \"200ms\"\nretries = 0\n\
         [[route]]\npath = \"/report/\"\nupstream = \"app\"\ntimeout = \"1h\"\n\
         [[route]]\nupstream = \"app\"\n",
        app.addr
    )))
    .await;
    let report = tokio::spawn(get_owned(p.url("/report/2026")));
    arrived.recv().await.unwrap();
    // The upstream's own timeout, on another route, runs out in full while
    // the report, asked first, waits: had it the same timeout, it would
    // have had its 504 by then.
    let (status, _, _) = get(&p.url("/other")).await;
    assert_eq!(status, 504);
    release.notify_one();
    let (status, _, body) = report.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "report"));
}

async fn get_owned(url: String) -> (u16, http::HeaderMap, String) {
    get(&url).await
}
