//! The HTTP/1 server's codec: request heads as the client sends them, and
//! response heads as the client receives them. The connection loop itself is
//! exercised end to end in tests/http1.rs.

use super::request::{parse, Reject};
use bytes::BytesMut;
use http::{StatusCode, Version};

const MAX: usize = 64 * 1024;

fn head(raw: &str) -> Result<Option<super::request::Head>, Reject> {
    parse(&mut BytesMut::from(raw), MAX)
}

fn refused(raw: &str) -> u16 {
    match head(raw) {
        Err(Reject(status, _)) => status.as_u16(),
        Ok(h) => panic!("accepted {raw:?}: complete={}", h.is_some()),
    }
}

#[test]
fn a_plain_get_is_parsed_with_its_fields() {
    let h = head("GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nX-Two: 1\r\nx-two: 2\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(h.parts.method, http::Method::GET);
    assert_eq!(h.parts.uri.path(), "/a");
    assert_eq!(h.parts.uri.query(), Some("b=1"));
    assert_eq!(h.parts.version, Version::HTTP_11);
    assert_eq!(h.parts.headers["host"], "example.com");
    assert_eq!(h.parts.headers.get_all("x-two").iter().count(), 2);
    assert!(h.keep_alive && !h.upgrade && !h.expect_continue);
    assert!(h.body.is_done());
}

#[test]
fn an_incomplete_head_waits_and_pipelined_heads_come_one_at_a_time() {
    let mut buf = BytesMut::from("GET / HTTP/1.1\r\nHost: x\r\n");
    assert!(parse(&mut buf, MAX).unwrap().is_none());
    assert_eq!(buf.len(), 25, "nothing is consumed until the head is whole");
    buf.extend_from_slice(b"\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n");
    let first = parse(&mut buf, MAX).unwrap().unwrap();
    assert_eq!(first.parts.uri.path(), "/");
    let second = parse(&mut buf, MAX).unwrap().unwrap();
    assert_eq!(second.parts.uri.path(), "/second");
    assert!(buf.is_empty());
}

#[test]
fn body_framing_follows_the_rfc_and_refuses_smuggling() {
    let h = head("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(h.body.remaining(), Some(5));
    // Agreeing lengths are allowed and go on as one value, the one the
    // body limits read.
    for agreeing in [
        "Content-Length: 5, 5",
        "Content-Length: 5\r\nContent-Length: 5",
    ] {
        let h = head(&format!("POST / HTTP/1.1\r\nHost: x\r\n{agreeing}\r\n\r\n"))
            .unwrap()
            .unwrap();
        assert_eq!(h.body.remaining(), Some(5));
        let cl: Vec<_> = h.parts.headers.get_all("content-length").iter().collect();
        assert_eq!(cl, ["5"], "{agreeing}");
    }
    let h = head("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(!h.body.is_done() && h.body.remaining().is_none());
    // Two framings, or two lengths: a request the next hop could read
    // differently.
    let both =
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(refused(both), 400);
    let both =
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
    assert_eq!(refused(both), 400);
    assert_eq!(
        refused("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
        400
    );
    assert_eq!(
        refused("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
        400
    );
    assert_eq!(
        refused("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n"),
        400
    );
    assert_eq!(
        refused("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
        501
    );
    assert_eq!(
        refused("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        501
    );
    assert_eq!(
        refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        400
    );
}

#[test]
fn host_rules() {
    assert_eq!(refused("GET / HTTP/1.1\r\n\r\n"), 400);
    assert_eq!(refused("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
    // HTTP/1.0 predates Host.
    assert!(head("GET / HTTP/1.0\r\n\r\n").unwrap().is_some());
    for good in [
        "example.com",
        "EXAMPLE.com:8080",
        "127.0.0.1:80",
        "[::1]:8443",
        "[::1]",
        "a-b.c_d",
    ] {
        let raw = format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n");
        assert!(head(&raw).unwrap().is_some(), "{good}");
    }
    for bad in [
        "",
        " ",
        "a b",
        "user@example.com",
        "example.com/x",
        "a:b:c",
        "a:http",
        "[::1",
        "[::1]x",
        "a\\b",
    ] {
        let raw = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
        assert_eq!(refused(&raw), 400, "{bad:?}");
    }
}

#[test]
fn request_target_forms() {
    let h = |raw: &str| head(raw).unwrap().unwrap();
    // Absolute-form is allowed; its host is the request's (see router).
    let abs = h("GET http://example.com/a?b HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_eq!(abs.parts.uri.host(), Some("example.com"));
    assert_eq!(abs.parts.uri.path(), "/a");
    // Authority-form belongs to CONNECT; a scheme other than http(s) or
    // userinfo has no place in a request to a reverse proxy.
    for bad in [
        "GET example.com:80 HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET ftp://example.com/ HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET http://user:pw@example.com/ HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        assert_eq!(refused(bad), 400, "{bad:?}");
    }
}

#[test]
fn fields_named_by_connection_go_but_host_length_and_upgrade_stay() {
    let h = head(
        "POST / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nX-B: 2\r\nContent-Length: 1\r\n\
         Connection: x-a, Host, content-length, keep-alive\r\n\r\n",
    )
    .unwrap()
    .unwrap();
    let hs = &h.parts.headers;
    assert!(!hs.contains_key("x-a"));
    assert_eq!(hs["x-b"], "2");
    assert_eq!(hs["host"], "x");
    assert_eq!(hs["content-length"], "1");
    let ws = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    let h = head(ws).unwrap().unwrap();
    assert!(h.upgrade);
    assert_eq!(h.parts.headers["upgrade"], "websocket");
}

#[test]
fn malformed_or_oversized_heads_are_refused() {
    assert_eq!(refused("GET / HTTP/1.1\r\nHost x\r\n\r\n"), 400);
    assert_eq!(refused("GET  / HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    // A TLS ClientHello on a plain listener.
    assert_eq!(refused("\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03"), 400);
    assert_eq!(refused("G\0T / HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    assert_eq!(refused("GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n"), 400);
    assert_eq!(refused("GET / HTTP/2.0\r\nHost: x\r\n\r\n"), 505);
    assert_eq!(
        refused("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
        405
    );
    assert_eq!(refused("GET / HTTP/3.1\r\nHost: x\r\n\r\n"), 505);
    let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(
        refused(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")),
        431
    );
    // Too large while still incomplete, and complete but over the limit.
    let mut buf = BytesMut::from(format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(100)).as_str());
    assert_eq!(
        parse(&mut buf, 64).err().map(|r| r.0),
        Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
    );
    let mut buf =
        BytesMut::from(format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", "a".repeat(100)).as_str());
    assert_eq!(
        parse(&mut buf, 64).err().map(|r| r.0),
        Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
    );
    // The request line alone past the limit: its target is too long.
    for raw in [
        format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100)),
        format!("GET /{}", "a".repeat(100)),
    ] {
        let mut buf = BytesMut::from(raw.as_str());
        assert_eq!(
            parse(&mut buf, 64).err().map(|r| r.0),
            Some(StatusCode::URI_TOO_LONG),
            "{raw}"
        );
    }
}

#[test]
fn connection_reuse_expect_and_upgrade() {
    let h = |raw: &str| head(raw).unwrap().unwrap();
    assert!(!h("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").keep_alive);
    assert!(!h("GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert!(h("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    assert!(!h("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);

    let with_body =
        "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
    assert!(h(with_body).expect_continue);
    // Nothing to wait for: no 100 is owed.
    assert!(!h("GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n").expect_continue);
    assert!(
        !h("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n").expect_continue
    );

    let ws = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
    assert!(h(ws).upgrade);
    assert!(!h("GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n").upgrade);
    assert!(!h("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n").upgrade);
    assert!(!h("GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n").upgrade);
    // Only WebSocket is an upgrade here; h2c is not joined end to end.
    let h2c = "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AA\r\n\r\n";
    assert!(!h(h2c).upgrade);
    assert!(
        h("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n").upgrade
    );
}

mod pieces;
mod response;
mod sizes;
