//! The upstream HTTP/1.1 codec against a hand-written server on the other
//! end of a socket pair: what goes on the wire, how answers are framed,
//! and when a connection may be reused.

use super::*;
use crate::upstream::body::UpstreamBody;
use crate::upstream::pool::InflightGuard;
use crate::upstream::{ServerAddr, UpstreamSettings};
use http_body_util::BodyExt;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Long enough never to fire in these tests: the exchanges here do not wait.
const T: std::time::Duration = std::time::Duration::from_secs(60);

fn new_conn(io: UnixStream) -> Conn {
    Conn::new(Stream::Unix(io), IdleTimer::new(Arc::default()))
}

fn head_of(raw: &str, method: Method) -> Result<Option<Head>, ProtoError> {
    let mut buf = BytesMut::from(raw.as_bytes());
    parse_head(&mut buf, &method)
}

/// The fields passed on, as a header map.
fn map(h: &Head) -> http::HeaderMap {
    h.fields.clone().into_map(http::HeaderMap::new())
}

fn head(raw: &str) -> Head {
    head_of(raw, Method::GET).unwrap().unwrap()
}

#[test]
fn heads_are_parsed_with_their_framing_and_reuse() {
    let h = head("HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello");
    assert_eq!(h.status, 201);
    assert_eq!(h.framing, Framing::Length(5));
    assert!(h.keep_alive);
    let m = map(&h);
    let a: Vec<_> = m.get_all("x-a").iter().collect();
    assert_eq!(a, ["1", "2"]);

    let h = head("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n");
    assert!(!h.keep_alive);
    assert!(!map(&h).contains_key("connection"), "hop-by-hop");
    let h = head("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n");
    assert!(!h.keep_alive, "HTTP/1.0 closes unless it says keep-alive");
    let h = head("HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: Keep-Alive\r\n\r\n");
    assert!(h.keep_alive);
    // Neither length nor chunked: the body ends with the connection.
    let h = head("HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!(h.framing, Framing::UntilClose);
    assert!(!h.keep_alive);
}

#[test]
fn x_accel_buffering_is_noted_and_left_out_in_any_case() {
    let h = head("HTTP/1.1 200 OK\r\nX-Accel-Buffering: No\r\nDate: d\r\nx-b: b\r\n\r\n");
    assert!(!h.read_ahead);
    assert_eq!(h.fields.get("x-accel-buffering"), None);
    let mut out = Vec::new();
    h.fields.write_to(&mut out, &http::HeaderMap::new());
    assert_eq!(out, b"Date: d\r\nx-b: b\r\n");
    assert!(h.fields.has_date());
    let h = head("HTTP/1.1 200 OK\r\nx-accel-buffering: yes\r\n\r\n");
    assert!(h.read_ahead && h.fields.get("x-accel-buffering").is_none());
    assert!(head("HTTP/1.1 200 OK\r\n\r\n").read_ahead);
}

#[test]
fn hop_by_hop_headers_are_left_out_but_a_101_keeps_its_upgrade() {
    let h = head(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Secret\r\n\
         Keep-Alive: timeout=5\r\nX-Secret: 1\r\nProxy-Connection: x\r\nUpgrade: h2c\r\n\
         Trailer: x\r\nX-Kept: 1\r\n\r\n",
    );
    let m = map(&h);
    let names: Vec<_> = m.keys().map(|n| n.as_str()).collect();
    // The length is stated again by the client's side, from the body.
    assert_eq!(names, ["x-kept"]);
    assert!(h.keep_alive);
    let h = head(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    assert_eq!(map(&h)["upgrade"], "websocket");
    assert_eq!(map(&h)["connection"], "Upgrade");
}

#[test]
fn bodiless_answers_have_no_body_whatever_their_length_says() {
    for raw in [
        "HTTP/1.1 204 No Content\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    ] {
        assert_eq!(head(raw).framing, Framing::Empty, "{raw:?}");
    }
    let h = head_of(
        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
        Method::HEAD,
    )
    .unwrap()
    .unwrap();
    assert_eq!(h.framing, Framing::Empty);
    assert_eq!(map(&h)["content-length"], "10", "HEAD keeps the length");
}

#[test]
fn chunked_wins_over_a_length_but_ends_the_connection_and_other_codings_are_refused() {
    let h = head("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(h.framing, Framing::Chunked);
    assert!(!map(&h).contains_key("content-length"));
    assert!(
        !h.keep_alive,
        "an answer framed two ways ends its connection"
    );
    let h = head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(h.framing, Framing::Chunked);
    assert!(!h.keep_alive, "chunked in HTTP/1.0 ends its connection");
    assert!(head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").keep_alive);
    for raw in [
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        assert!(head_of(raw, Method::GET).is_err(), "{raw:?}");
    }
}

#[test]
fn content_lengths_must_agree_and_be_digits() {
    assert_eq!(
        head("HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\n\r\n").framing,
        Framing::Length(4)
    );
    for bad in ["4, 5", "-1", "+4", "0x10", "", "4 4"] {
        let raw = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
        assert!(head_of(&raw, Method::GET).is_err(), "{bad:?}");
    }
    let raw = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n";
    assert!(head_of(raw, Method::GET).is_err());
}

#[test]
fn incomplete_and_malformed_heads() {
    assert!(head_of("HTTP/1.1 200 OK\r\nContent-Le", Method::GET)
        .unwrap()
        .is_none());
    assert!(head_of("HTTP/1.1 2000 OK\r\n\r\n", Method::GET).is_err());
    assert!(head_of("SSH-2.0-OpenSSH\r\n\r\n", Method::GET).is_err());
    let many: String = (0..MAX_HEADERS + 1)
        .map(|i| format!("x-{i}: v\r\n"))
        .collect();
    let raw = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
    assert!(head_of(&raw, Method::GET).is_err());
    // Whole in one buffer, as one read can bring it: still too large.
    let big = format!("HTTP/1.1 200 OK\r\nx-a: {}\r\n\r\n", "a".repeat(MAX_HEAD));
    assert!(matches!(
        head_of(&big, Method::GET),
        Err(ProtoError::Invalid("response head too large"))
    ));
    // And unfinished at that size: no use waiting for the rest.
    let unfinished = &big[..MAX_HEAD];
    assert!(matches!(
        head_of(unfinished, Method::GET),
        Err(ProtoError::Invalid("response head too large"))
    ));
}

fn server() -> Arc<crate::upstream::Server> {
    let settings = UpstreamSettings {
        keepalive: 4,
        keepalive_timeout: std::time::Duration::from_secs(60),
        ..crate::upstream::tests::settings()
    };
    let addr = ServerAddr::Unix("/nonexistent".into());
    Arc::new(crate::upstream::Server::new(addr, &settings))
}

fn request(method: Method, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

/// Send `parts` on a fresh socket pair; the peer reads the whole request
/// (up to `request_len` bytes), then writes `answer` in pieces of `piece`
/// bytes. Returns what the peer received, the body read whole (or its
/// error) and how many connections went back to the pool.
async fn roundtrip(
    parts: http::request::Parts,
    mut send: SendBody,
    request_len: usize,
    answer: &'static [u8],
    piece: usize,
) -> (String, Result<Bytes, String>, usize) {
    let (a, mut b) = UnixStream::pair().unwrap();
    let peer = tokio::spawn(async move {
        let mut got = vec![0u8; request_len];
        b.read_exact(&mut got).await.unwrap();
        for part in answer.chunks(piece) {
            b.write_all(part).await.unwrap();
            b.flush().await.unwrap();
            tokio::task::yield_now().await;
        }
        // Keep the peer's end open until the proxy side is done.
        let mut rest = Vec::new();
        let _ = b.read_to_end(&mut rest).await;
        String::from_utf8(got).unwrap()
    });
    let srv = server();
    let mut conn = new_conn(a);
    let head = conn.exchange(&parts, &mut send, T).await.unwrap();
    let body = UpstreamBody::new(
        conn,
        head.framing,
        head.keep_alive,
        InflightGuard::new(srv.clone()),
    );
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string());
    let idle = srv.pool.idle_count();
    srv.pool.clear();
    (peer.await.unwrap(), body, idle)
}

#[tokio::test]
async fn the_request_head_carries_the_headers_and_a_length_for_bodiless_posts() {
    let parts = request(
        Method::POST,
        "/form?a=1",
        &[("host", "app"), ("expect", "100-continue"), ("x-a", "1")],
    );
    let want = "POST /form?a=1 HTTP/1.1\r\nhost: app\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n";
    let answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let (sent, body, idle) = roundtrip(parts, SendBody::None, want.len(), answer, 7).await;
    assert_eq!(
        sent, want,
        "Expect is ours to answer; 100 Continue is skipped"
    );
    assert_eq!(body.unwrap(), "ok");
    assert_eq!(idle, 1, "a finished body returns its connection");
}

#[tokio::test]
async fn a_buffered_body_goes_with_the_head() {
    let parts = request(Method::PUT, "/x", &[("content-length", "5")]);
    let want = "PUT /x HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello";
    let answer = b"HTTP/1.1 204 No Content\r\n\r\n";
    let send = SendBody::Full(Bytes::from_static(b"hello"));
    let (sent, body, idle) = roundtrip(parts, send, want.len(), answer, 100).await;
    assert_eq!(sent, want);
    assert_eq!(body.unwrap(), "");
    assert_eq!(idle, 1);
}

#[tokio::test]
async fn chunked_answers_are_decoded_across_any_split() {
    let answer: &'static [u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nx-trailer: t\r\n\r\n";
    let want = "GET / HTTP/1.1\r\n\r\n";
    for piece in [1, 2, 3, 5, 11, answer.len()] {
        let parts = request(Method::GET, "/", &[]);
        let (_, body, idle) = roundtrip(parts, SendBody::None, want.len(), answer, piece).await;
        assert_eq!(body.unwrap(), "hello 0123456789", "pieces of {piece}");
        assert_eq!(idle, 1, "pieces of {piece}");
    }
}

#[tokio::test]
async fn broken_bodies_are_errors_and_their_connections_are_not_reused() {
    let want = "GET / HTTP/1.1\r\n\r\n";
    let cases: [&'static [u8]; 4] = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
        // A body followed by bytes nobody asked for.
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
    ];
    for (i, answer) in cases.into_iter().enumerate() {
        let parts = request(Method::GET, "/", &[]);
        let (a, mut b) = UnixStream::pair().unwrap();
        let peer = tokio::spawn(async move {
            let mut got = vec![0u8; want.len()];
            b.read_exact(&mut got).await.unwrap();
            b.write_all(answer).await.unwrap();
            // Close: a short body must end in an error, not a hang.
        });
        let srv = server();
        let mut conn = new_conn(a);
        let head = conn.exchange(&parts, &mut SendBody::None, T).await.unwrap();
        peer.await.unwrap();
        let body = UpstreamBody::new(
            conn,
            head.framing,
            head.keep_alive,
            InflightGuard::new(srv.clone()),
        );
        let res = body.collect().await.map(|c| c.to_bytes());
        if i == 3 {
            assert_eq!(res.unwrap(), "ok");
        } else {
            assert!(res.is_err(), "case {i}");
        }
        assert_eq!(srv.pool.idle_count(), 0, "case {i}");
    }
}

#[tokio::test]
async fn a_body_until_close_ends_with_the_connection() {
    let parts = request(Method::GET, "/", &[]);
    let (a, mut b) = UnixStream::pair().unwrap();
    tokio::spawn(async move {
        let mut got = [0u8; 18];
        b.read_exact(&mut got).await.unwrap();
        b.write_all(b"HTTP/1.0 200 OK\r\n\r\nall of it")
            .await
            .unwrap();
    });
    let srv = server();
    let mut conn = new_conn(a);
    let head = conn.exchange(&parts, &mut SendBody::None, T).await.unwrap();
    let body = UpstreamBody::new(
        conn,
        head.framing,
        head.keep_alive,
        InflightGuard::new(srv.clone()),
    );
    assert_eq!(body.collect().await.unwrap().to_bytes(), "all of it");
    assert_eq!(srv.pool.idle_count(), 0);
}

#[tokio::test]
async fn a_connection_closed_before_answering_says_so() {
    let parts = request(Method::GET, "/", &[]);
    let (a, b) = UnixStream::pair().unwrap();
    drop(b);
    let mut conn = new_conn(a);
    let e = conn
        .exchange(&parts, &mut SendBody::None, T)
        .await
        .unwrap_err();
    assert!(!e.answered && !e.body_used);
    assert!(!e.sent, "a head that could not be written was not sent");

    // With a body written in the same go, the head may have arrived whole.
    let parts = request(Method::PUT, "/", &[("content-length", "2")]);
    let (a, b) = UnixStream::pair().unwrap();
    drop(b);
    let mut conn = new_conn(a);
    let mut body = SendBody::Full(Bytes::from_static(b"hi"));
    let e = conn.exchange(&parts, &mut body, T).await.unwrap_err();
    assert!(e.sent && !e.body_used);
}

#[tokio::test]
async fn a_server_silent_past_the_timeout_is_a_timeout_and_no_answer() {
    let parts = request(Method::GET, "/", &[]);
    let (a, mut b) = UnixStream::pair().unwrap();
    let mut conn = new_conn(a);
    let start = std::time::Instant::now();
    let limit = std::time::Duration::from_millis(100);
    let e = conn
        .exchange(&parts, &mut SendBody::None, limit)
        .await
        .unwrap_err();
    assert!(matches!(e.error, ProtoError::Timeout), "{:?}", e.error);
    assert!(e.sent && !e.answered);
    // The coarse clock the deadline is kept on lags by a tick at most.
    assert!(start.elapsed() >= limit - std::time::Duration::from_millis(10));
    let mut got = vec![0; 3];
    b.read_exact(&mut got).await.unwrap();
    assert_eq!(got, b"GET", "the request went out before the wait");
}

#[tokio::test]
async fn idle_connections_closed_or_written_to_by_the_server_are_stale() {
    let (a, b) = UnixStream::pair().unwrap();
    let mut quiet = new_conn(a);
    assert!(!quiet.is_stale());
    drop(b);
    let Stream::Unix(s) = &quiet.io else {
        unreachable!()
    };
    s.readable().await.unwrap();
    assert!(quiet.is_stale(), "closed by the server");

    let (a, mut b) = UnixStream::pair().unwrap();
    let mut chatty = new_conn(a);
    b.write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        .await
        .unwrap();
    let Stream::Unix(s) = &chatty.io else {
        unreachable!()
    };
    s.readable().await.unwrap();
    assert!(chatty.is_stale(), "unasked bytes");
}
