//! Pooled upstream connections the server closed: upstreams written byte by
//! byte, which drop a kept-alive connection at the moment a test needs.

mod common;

use common::*;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A raw TCP upstream: `serve` gets each accepted connection; the counter
/// is the number of connections accepted.
async fn raw_upstream<F, Fut>(
    serve: F,
) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = conns.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(serve(s));
        }
    });
    (addr, conns)
}

/// Read one request head; false when the connection ended first.
async fn read_head(s: &mut tokio::net::TcpStream) -> bool {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(k) => got.extend_from_slice(&buf[..k]),
        }
    }
    true
}

const RAW_OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// The keep-alive race: the server drops a kept-alive connection just as the
/// proxy reuses it. The request must go through on a fresh connection, even
/// with one server and `retries = 0`.
#[tokio::test]
async fn a_reused_connection_dropped_by_the_server_is_retried_fresh() {
    // Answer the first request, keep the connection open, then read the
    // second request and close without a word.
    let (addr, conns) = raw_upstream(|mut s| async move {
        if read_head(&mut s).await {
            s.write_all(RAW_OK).await.unwrap();
            read_head(&mut s).await;
        }
    })
    .await;
    let p = proxy(&cfg(&format!(
        "[upstream.app]\nservers = [\"{addr}\"]\nretries = 0\nkeepalive_timeout = \"60s\"\n[[route]]\nupstream = \"app\"\n"
    )))
    .await;
    for _ in 0..4 {
        let (status, _, body) = get(&p.url("/")).await;
        assert_eq!((status, body.as_str()), (200, "ok"));
    }
    assert!(
        conns.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "the connection was never reused"
    );
}

/// A server that closes every connection right after its answer, without
/// saying `Connection: close`: the pooled connection is found closed (or
/// fails as the next request goes out) and the next request still gets
/// through, with no retries allowed and one failure enough to take the
/// server out.
#[tokio::test]
async fn a_connection_the_server_closed_after_answering_is_not_a_failure() {
    let (addr, conns) = raw_upstream(|mut s| async move {
        if read_head(&mut s).await {
            // Then dropped: closed with no warning.
            let _ = s.write_all(RAW_OK).await;
        }
    })
    .await;
    let p = proxy(&cfg(&format!(
        "[upstream.app]\nservers = [\"{addr}\"]\nretries = 0\nmax_fails = 1\nkeepalive_timeout = \"60s\"\n[[route]]\nupstream = \"app\"\n"
    )))
    .await;
    for i in 0..6 {
        let (status, _, body) = get(&p.url("/")).await;
        assert_eq!((status, body.as_str()), (200, "ok"), "request {i}");
    }
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 6);
}

/// A pooled connection left idle is closed after `keepalive_timeout` even
/// when no request comes to look at it, as nginx's upstream
/// `keepalive_timeout` does: it would otherwise stay open, and in
/// CLOSE_WAIT once the app gave up on it.
#[tokio::test]
async fn an_idle_pooled_connection_is_closed_after_keepalive_timeout_with_no_traffic() {
    let (closed_tx, closed_rx) = tokio::sync::mpsc::unbounded_channel();
    let (addr, conns) = raw_upstream(move |mut s| {
        let closed = closed_tx.clone();
        async move {
            if read_head(&mut s).await {
                s.write_all(RAW_OK).await.unwrap();
                // Kept alive: the next thing is the proxy's close.
                let ended_by_proxy = !read_head(&mut s).await;
                let _ = closed.send(ended_by_proxy);
            }
        }
    })
    .await;
    let p = proxy(&cfg(&format!(
        "[upstream.app]\nservers = [\"{addr}\"]\nkeepalive_timeout = \"200ms\"\n[[route]]\nupstream = \"app\"\n"
    )))
    .await;
    let (status, _, body) = get(&p.url("/")).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    // No more requests. The guard only stops a hang.
    let mut closed_rx = closed_rx;
    let closed = tokio::time::timeout(std::time::Duration::from_secs(20), closed_rx.recv())
        .await
        .expect("the idle pooled connection was kept");
    assert_eq!(closed, Some(true));
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1);
}
