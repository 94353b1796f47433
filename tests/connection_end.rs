//! How an HTTP/1 connection ends when its client goes quiet: a keep-alive
//! connection left idle, a new connection that never sends, a client that
//! stops reading its answer, and the server's shutdown.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn a_client_that_stops_reading_is_let_go_after_idle_timeout() {
    // The upstream sends a body far larger than the socket buffers and all
    // the proxy may read ahead of its client; the client never reads it.
    // The proxy gives up after idle_timeout, which the upstream sees as its
    // connection closing. Read ahead without a cap, the 256 MiB could all
    // reach the proxy's file before the timeout (it did, on a fast disk):
    // the cap keeps the test about the stalled client.
    for upstream in ["buffer_responses = false", "max_read_ahead = \"1MiB\""] {
        let cut = stalled_download_is_cut(upstream).await;
        assert!(
            cut,
            "{upstream}: the whole body went out though the client read nothing"
        );
    }
}

/// Whether the upstream's 256 MiB answer was cut short, for a client that
/// reads none of it, with `upstream` in the upstream's table.
async fn stalled_download_is_cut(upstream: &str) -> bool {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        read_until(&mut s, "\r\n\r\n", 1).await;
        let total = 256 << 20;
        s.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {total}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let chunk = vec![b'x'; 1 << 16];
        let mut sent = 0;
        while sent < total {
            if s.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        let _ = closed_tx.send(sent < total);
    });
    let p = proxy(&cfg(&format!(
        "[server]\nidle_timeout = \"300ms\"\n[upstream.app]\nservers = [\"{up}\"]\n{upstream}\n\
         [[route]]\nupstream = \"app\"\n"
    )))
    .await;
    let mut s = TcpStream::connect(p.addrs[0]).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The guard only stops a hang; the proxy lets go long before.
    let cut = tokio::time::timeout(Duration::from_secs(30), closed_rx)
        .await
        .expect("the proxy kept a stalled download forever")
        .unwrap();
    drop(s);
    cut
}

/// A proxy with `server` settings answering "ok", and a connection to it
/// that has had one answer and is now idle.
async fn idle_after_one_answer(server: &str) -> (Proxy, TcpStream) {
    let p = proxy(&cfg(&format!(
        "[server]\n{server}\n[[route]]\nrespond = {{ body = \"ok\" }}\n"
    )))
    .await;
    let mut s = TcpStream::connect(p.addrs[0]).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until(&mut s, "\r\n\r\nok", 1).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    (p, s)
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let (_p, mut idle) = idle_after_one_answer("idle_timeout = \"300ms\"").await;
    assert!(
        closed_by_server(&mut idle).await,
        "idle connection never closed"
    );
}

#[tokio::test]
async fn a_new_connection_that_sends_nothing_meets_header_timeout() {
    // idle_timeout far longer than the guard: only header_timeout can
    // close the silent connection in time.
    let p = proxy(
        "[log]\naccess = \"off\"\n[server]\nheader_timeout = \"300ms\"\nidle_timeout = \"600s\"\n\
         [[listen]]\naddr = \"127.0.0.1:0\"\ndefer_accept = false\n\
         [[route]]\nrespond = { body = \"ok\" }\n",
    )
    .await;
    let mut silent = TcpStream::connect(p.addrs[0]).await.unwrap();
    assert!(
        closed_by_server(&mut silent).await,
        "a silent new connection was kept past header_timeout"
    );
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    // idle_timeout and shutdown_timeout are far longer than the guard: only
    // the shutdown's own wake-up can close the idle connection in time.
    let (p, mut idle) =
        idle_after_one_answer("idle_timeout = \"600s\"\nshutdown_timeout = \"600s\"").await;
    let finished = tokio::time::timeout(Duration::from_secs(20), p.server.shutdown())
        .await
        .expect("shutdown waited on an idle connection");
    assert!(finished, "shutdown hit its timeout");
    assert!(closed_by_server(&mut idle).await);
}
