//! Request bodies through the proxy at a client's pace: a slow upload that
//! keeps moving goes through whatever its length, one that stops is the
//! client's failure (408), never the upstream's.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A proxy that lets a request body pause 300 ms at most, in front of an
/// echo upstream that one failure would take out of service.
async fn impatient_proxy() -> (Proxy, Upstream) {
    let e = echo().await;
    let p = proxy(&cfg(&format!(
        "[server]\nidle_timeout = \"300ms\"\n[upstream.app]\nservers = [\"{}\"]\nmax_fails = 1\n\
         [[route]]\nupstream = \"app\"\n",
        e.addr
    )))
    .await;
    (p, e)
}

async fn connect(addr: std::net::SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

#[tokio::test]
async fn a_client_that_pauses_inside_its_body_gets_408_and_the_upstream_no_blame() {
    let (p, _e) = impatient_proxy().await;
    // A body with a length streams to the upstream; a chunked one is read
    // whole first. Either way the client stops halfway and keeps the
    // connection open.
    let stalls: [&[u8]; 2] = [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nten bytes.",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\na\r\nten bytes.\r\n",
    ];
    for req in stalls {
        let mut s = connect(p.addrs[0]).await;
        s.write_all(req).await.unwrap();
        let mut all = String::new();
        // The guard only stops a hang.
        tokio::time::timeout(Duration::from_secs(30), s.read_to_string(&mut all))
            .await
            .expect("a stalled upload was kept forever")
            .unwrap();
        assert!(all.starts_with("HTTP/1.1 408 "), "{all}");
        assert!(all.contains("connection: close\r\n"), "{all}");
    }
    // With max_fails = 1, one failure blamed on the server would have taken
    // it out of service (503).
    let (status, _, body) = get(&p.url("/after")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_slow_upload_that_keeps_moving_outlasts_the_upstream_timeout() {
    // The upstream `timeout` bounds the wait for the answer and each write
    // to the server, not the whole upload: a client on a slow line sending
    // a body over longer than `timeout` must not get 504.
    let e = echo().await;
    let p = proxy(&cfg(&format!(
        "[upstream.app]\nservers = [\"{}\"]\ntimeout = \"1s\"\nretries = 0\nmax_fails = 1\n\
         [[route]]\nupstream = \"app\"\n",
        e.addr
    )))
    .await;
    let mut s = connect(p.addrs[0]).await;
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    // Ten pieces a quarter second apart: at least 2.5 s in all, more than
    // twice the timeout (pacing the client, not waiting for the proxy).
    for _ in 0..10 {
        s.write_all(&[b'u'; 10]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains('}') {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.contains("\"body_len\":100"), "{answer}");
}

#[tokio::test]
async fn an_http2_upload_that_stops_gets_408_too() {
    use bytes::Bytes;
    use http_body::Frame;
    let (p, _e) = impatient_proxy().await;
    // Ten bytes of a hundred, then nothing (the sender stays alive).
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    tx.send(Bytes::from_static(b"ten bytes.")).await.unwrap();
    let stream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        let b = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
    }));
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = http::Request::post(p.url("/upload"))
        .header("content-length", "100")
        .body(http_body_util::StreamBody::new(stream))
        .unwrap();
    // The guard only stops a hang.
    let resp = tokio::time::timeout(Duration::from_secs(30), h2.request(req))
        .await
        .expect("a stalled HTTP/2 upload was kept forever")
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 408);
    drop(tx);
    let (status, _, body) = get(&p.url("/after")).await;
    assert_eq!(status, 200, "{body}");
}
