//! The HTTP/1 connection loop end to end, on raw sockets: what a client sees
//! on the wire (pipelining, 100-continue, framing of answers, refused heads)
//! and what reaches the upstream. How a quiet connection ends is in
//! connection_end.rs.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The proxy in front of an upstream that echoes what it received.
async fn echo_proxy() -> (Proxy, Upstream) {
    let e = echo().await;
    let p = proxy(&cfg(&format!(
        "[upstream.app]\nservers = [\"{}\"]\n[[route]]\nupstream = \"app\"\n",
        e.addr
    )))
    .await;
    (p, e)
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (p, e) = echo_proxy().await;
    let mut s = connect(p.addrs[0]).await;
    let mut reqs = String::new();
    for i in 0..5 {
        reqs.push_str(&format!("GET /n{i} HTTP/1.1\r\nHost: x\r\n\r\n"));
    }
    // All five in one write: the server must frame each.
    s.write_all(reqs.as_bytes()).await.unwrap();
    let got = read_until(&mut s, "\"body_len\"", 5).await;
    let order: Vec<usize> = (0..5)
        .map(|i| {
            got.find(&format!("\"/n{i}\""))
                .expect("every request answered")
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{got}");
    assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 5);
    assert_eq!(e.hits(), 5);
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let (p, e) = echo_proxy().await;
    let mut s = connect(p.addrs[0]).await;
    s.write_all(
        b"POST /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n",
    )
    .await
    .unwrap();
    // The client waits for the interim answer before sending the body.
    let interim = read_until(&mut s, "\r\n\r\n", 1).await;
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello world").await.unwrap();
    let answer = read_until(&mut s, "}", 1).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.contains("\"body_len\":11"), "{answer}");
    // Expect is this hop's business: not forwarded.
    assert!(
        !answer.to_ascii_lowercase().contains("100-continue"),
        "{answer}"
    );
    assert_eq!(e.hits(), 1);
}

#[tokio::test]
async fn a_refused_upload_gets_its_answer_without_100_continue_and_the_connection_closes() {
    let e = echo().await;
    let p = proxy(&cfg(&format!(
        "[jwt.api]\nalgorithms = [\"HS256\"]\nsecret = {{ value = \"s3cret-s3cret-s3cret-s3cret-s3cret\" }}\n\
         [upstream.app]\nservers = [\"{}\"]\n[[route]]\nupstream = \"app\"\njwt = \"api\"\n",
        e.addr
    )))
    .await;
    let mut s = connect(p.addrs[0]).await;
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .await
        .unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).await.unwrap();
    assert!(all.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{all}");
    assert!(!all.contains("100 Continue"), "{all}");
    // The unread body would be taken for the next request.
    assert!(all.contains("connection: close\r\n"), "{all}");
    assert_eq!(e.hits(), 0);
}

#[tokio::test]
async fn an_unread_body_does_not_cost_the_client_its_answer() {
    // 413 by Content-Length, the body still on its way: the proxy answers,
    // reads and drops what comes (nginx's lingering close) so the answer is
    // not lost to a reset.
    let p = proxy(&cfg(
        "[server]\nmax_body = \"1KiB\"\n[[route]]\nrespond = { body = \"ok\" }\n",
    ))
    .await;
    let mut s = connect(p.addrs[0]).await;
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n")
        .await
        .unwrap();
    let writer = {
        let (mut r, mut w) = s.into_split();
        let body = vec![b'a'; 300_000];
        let t = tokio::spawn(async move {
            let _ = w.write_all(&body).await;
            w
        });
        let mut all = String::new();
        let _ = r.read_to_string(&mut all).await;
        assert!(all.starts_with("HTTP/1.1 413 "), "{all}");
        assert!(all.contains("connection: close\r\n"), "{all}");
        t
    };
    drop(writer.await);
}

#[tokio::test]
async fn smuggling_shapes_never_reach_the_upstream() {
    let (p, e) = echo_proxy().await;
    let cases: [(&str, &str); 4] = [
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
            "HTTP/1.1 400 ",
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd",
            "HTTP/1.1 400 ",
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "HTTP/1.1 501 ",
        ),
        ("GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 400 "),
    ];
    for (req, want) in cases {
        let got = raw(p.addrs[0], req.as_bytes()).await;
        assert!(got.starts_with(want), "{req:?} -> {got}");
        assert!(got.contains("connection: close\r\n"), "{got}");
    }
    assert_eq!(e.hits(), 0);
}

/// An upstream answering every request with a chunked body of `parts`
/// pieces, then keeping the connection.
async fn chunked_upstream(parts: usize) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                loop {
                    let head = read_until(&mut s, "\r\n\r\n", 1).await;
                    if head.is_empty() {
                        return;
                    }
                    let mut out =
                        String::from("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
                    for i in 0..parts {
                        let piece = format!("piece{i};");
                        out.push_str(&format!("{:x}\r\n{piece}\r\n", piece.len()));
                    }
                    out.push_str("0\r\n\r\n");
                    if s.write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_body_of_unknown_length_is_chunked_for_http11_and_closes_for_http10() {
    let up = chunked_upstream(3).await;
    let p = proxy(&cfg(&format!(
        "[upstream.app]\nservers = [\"{up}\"]\n[[route]]\nupstream = \"app\"\n"
    )))
    .await;
    let want = "piece0;piece1;piece2;";
    let mut s = connect(p.addrs[0]).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = read_until(&mut s, "0\r\n\r\n", 1).await;
    assert!(got.contains("transfer-encoding: chunked\r\n"), "{got}");
    let body = &got[got.find("\r\n\r\n").unwrap() + 4..];
    let mut decoded = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size, 16).unwrap();
        if n == 0 {
            break;
        }
        decoded.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    assert_eq!(decoded, want);
    // The connection is still good.
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_until(&mut s, "0\r\n\r\n", 1)
        .await
        .starts_with("HTTP/1.1 200"));

    let got = raw(
        p.addrs[0],
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    )
    .await;
    assert!(got.contains("connection: close\r\n"), "{got}");
    assert!(!got.contains("chunked"), "{got}");
    assert!(got.ends_with(&format!("\r\n\r\n{want}")), "{got}");
}

#[tokio::test]
async fn head_answers_carry_the_length_and_no_body() {
    let p = proxy(&cfg("[[route]]\nrespond = { body = \"twelve bytes\" }\n")).await;
    let mut s = connect(p.addrs[0]).await;
    s.write_all(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = read_until(&mut s, "twelve bytes", 1).await;
    // The second answer starts where the first (bodiless) one ends.
    let split = got[1..].find("HTTP/1.1 200").expect("two answers") + 1;
    let (first, second) = got.split_at(split);
    assert!(first.contains("content-length: 12\r\n"), "{first}");
    assert!(
        first.ends_with("\r\n\r\n"),
        "HEAD answer has no body: {first:?}"
    );
    assert!(second.ends_with("\r\n\r\ntwelve bytes"), "{second}");
}

#[tokio::test]
async fn refused_heads_are_in_the_access_log_with_their_first_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let p = proxy(&format!(
        "[log]\naccess = \"{}\"\nformat = \"json\"\n[[listen]]\naddr = \"127.0.0.1:0\"\n\
         [[route]]\nrespond = {{ body = \"ok\" }}\n",
        log.display()
    ))
    .await;
    let got = raw(
        p.addrs[0],
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 400 "), "{got}");
    // The answer names its log line, as every other answer does.
    let id = got
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("no x-request-id: {got}"))
        .to_string();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let got = raw(p.addrs[0], b"\x16\x03\x01\x00\x05hello\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 400 "), "{got}");
    // The lines are written off the request path: poll for them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 2 {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no access log lines: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let v: Vec<serde_json::Value> = lines.lines().map(json).collect();
    assert_eq!(v[0]["status"], 400);
    assert_eq!(v[0]["request_line"], "POST /x HTTP/1.1");
    assert_eq!(v[0]["reason"], "both Content-Length and Transfer-Encoding");
    assert!(v[0]["method"].is_null());
    assert_eq!(v[0]["request_id"], id.as_str());
    assert!(v[1]["request_id"].is_string() && v[1]["request_id"] != v[0]["request_id"]);
    assert_eq!(v[1]["request_line"], "\\x16\\x03\\x01\\x00\\x05hello");
    assert_eq!(v[1]["bytes"], 12);
}
