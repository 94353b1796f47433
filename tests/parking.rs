//! Idle keep-alive connections parked without a task (`http::park`): the
//! client sees the same connection as before, whatever it does next: a
//! request is answered, silence is closed at `idle_timeout`, a shutdown
//! closes it, a hang-up frees its place under `max_connections`.

mod common;

use common::backend::until;
use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn cfg(server: &str) -> String {
    format!(
        "[server]\n{server}\n[log]\naccess = \"off\"\n[[listen]]\naddr = \"127.0.0.1:0\"\n\
         [[route]]\nrespond = {{ body = \"ok\" }}\n"
    )
}

/// One request on `s`, its answer read whole.
async fn ask(s: &mut TcpStream) -> String {
    ask_rest(s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await
}

/// Send `rest` (what is left of a request, or all of it), read the answer.
async fn ask_rest(s: &mut TcpStream, rest: &[u8]) -> String {
    s.write_all(rest).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"\r\n\r\nok") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(k) => got.extend_from_slice(&buf[..k]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn parked(p: &Proxy) -> usize {
    p.server.state().parked.count()
}

/// A proxy with `server` settings and a connection to it that had one
/// answer.
async fn answered_once(server: &str) -> (Proxy, TcpStream) {
    let p = proxy(&cfg(server)).await;
    let mut s = TcpStream::connect(p.addrs[0]).await.unwrap();
    let answer = ask(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    (p, s)
}

/// The same, once the connection is parked.
async fn parked_after_one_answer(server: &str) -> (Proxy, TcpStream) {
    let (p, s) = answered_once(server).await;
    until("the idle connection to be parked", || parked(&p) == 1).await;
    (p, s)
}

#[tokio::test]
async fn a_parked_connection_answers_its_next_requests() {
    let (p, mut s) = parked_after_one_answer("idle_timeout = \"60s\"").await;
    for _ in 0..3 {
        let answer = ask(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nok"), "{answer}");
    }
    // Idle again: parked again.
    until("the connection to be parked again", || parked(&p) == 1).await;
    let answer = ask(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_request_sent_in_pieces_to_a_parked_connection_is_answered() {
    let (_p, mut s) = parked_after_one_answer("idle_timeout = \"60s\"").await;
    // The first bytes wake it; the rest arrive after it is served again.
    s.write_all(b"GET / HT").await.unwrap();
    s.flush().await.unwrap();
    tokio::task::yield_now().await;
    let answer = ask_rest(&mut s, b"TP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_parked_connection_is_closed_at_its_idle_timeout_not_before() {
    let (p, mut s) = answered_once("idle_timeout = \"2s\"").await;
    // Taken after the answer: a close before the timeout shows all the same.
    let answered = Instant::now();
    until("the idle connection to be parked", || parked(&p) == 1).await;
    assert!(closed_by_server(&mut s).await, "never closed");
    assert!(
        answered.elapsed() >= Duration::from_millis(1900),
        "closed {:?} after the answer, before idle_timeout",
        answered.elapsed()
    );
    until("the lot to forget it", || parked(&p) == 0).await;
}

#[tokio::test]
async fn shutdown_closes_parked_connections_at_once() {
    let (p, mut s) =
        parked_after_one_answer("idle_timeout = \"600s\"\nshutdown_timeout = \"600s\"").await;
    let finished = tokio::time::timeout(Duration::from_secs(20), p.server.shutdown())
        .await
        .expect("shutdown waited on a parked connection");
    assert!(finished, "shutdown hit its timeout");
    assert!(closed_by_server(&mut s).await);
    assert_eq!(parked(&p), 0);
}

#[tokio::test]
async fn a_parked_connection_keeps_its_place_until_its_client_hangs_up() {
    let (p, s) = parked_after_one_answer("idle_timeout = \"60s\"\nmax_connections = 1").await;
    // The one place is the parked connection's: a second one waits.
    let mut second = TcpStream::connect(p.addrs[0]).await.unwrap();
    second
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
    assert!(early.is_err(), "served past max_connections: {early:?}");
    drop(s);
    until("the hung-up connection to leave the lot", || {
        parked(&p) == 0
    })
    .await;
    // Its request went out above: only the answer is left to read.
    let answer = ask_rest(&mut second, b"").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn short_idle_timeouts_are_kept_by_the_connection_itself() {
    let (p, mut s) = answered_once("idle_timeout = \"300ms\"").await;
    assert!(closed_by_server(&mut s).await, "never closed");
    assert_eq!(parked(&p), 0, "a 300 ms timeout is not worth parking");
}
