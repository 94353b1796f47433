//! The HTTP/1 server's codec: request heads as the client sends them, and
//! response heads as the client receives them. The connection loop itself is
//! exercised end to end in tests/http1.rs.

use super::request::{parse, Reject};
use super::response::{encode_head, Wire};
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

fn encoded(
    status: u16,
    headers: &[(&str, &str)],
    hint: http_body::SizeHint,
    head_request: bool,
    version: Version,
    keep_alive: bool,
) -> (String, Wire, bool) {
    let mut r = http::Response::new(());
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    for (k, v) in headers {
        r.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    let (parts, ()) = r.into_parts();
    let mut out = Vec::new();
    let mut keep = keep_alive;
    let wire = encode_head(
        &mut out,
        &parts,
        None,
        &hint,
        head_request,
        version,
        &mut keep,
    );
    (String::from_utf8(out).unwrap(), wire, keep)
}

#[test]
fn response_heads_carry_this_hops_framing() {
    use http_body::SizeHint;
    let v11 = Version::HTTP_11;
    let (h, wire, keep) = encoded(
        200,
        &[("x-a", "1")],
        SizeHint::with_exact(5),
        false,
        v11,
        true,
    );
    assert!(h.starts_with("HTTP/1.1 200 OK\r\nx-a: 1\r\ndate: "), "{h}");
    assert!(h.ends_with("content-length: 5\r\n\r\n"), "{h}");
    assert_eq!((wire, keep), (Wire::Length(5), true));

    // A length the handler set is used, not repeated.
    let (h, wire, _) = encoded(
        200,
        &[("content-length", "7")],
        SizeHint::default(),
        false,
        v11,
        true,
    );
    assert_eq!(h.matches("content-length").count(), 1);
    assert_eq!(wire, Wire::Length(7));

    // Unknown length: chunked for HTTP/1.1, the connection's end for 1.0.
    let (h, wire, keep) = encoded(200, &[], SizeHint::default(), false, v11, true);
    assert!(h.contains("transfer-encoding: chunked\r\n"));
    assert_eq!((wire, keep), (Wire::Chunked, true));
    let (h, wire, keep) = encoded(200, &[], SizeHint::default(), false, Version::HTTP_10, true);
    assert!(!h.contains("transfer-encoding") && h.contains("connection: close\r\n"));
    assert_eq!((wire, keep), (Wire::UntilClose, false));
    let (h, _, keep) = encoded(
        200,
        &[],
        SizeHint::with_exact(2),
        false,
        Version::HTTP_10,
        true,
    );
    assert!(h.contains("connection: keep-alive\r\n") && keep);

    // No body on the wire for HEAD, 204 and 304; no length invented.
    for (status, head) in [(200, true), (204, false), (304, false)] {
        let (h, wire, _) = encoded(status, &[], SizeHint::with_exact(9), head, v11, true);
        assert_eq!(wire, Wire::None, "{status}");
        assert!(
            !h.contains("content-length") && !h.contains("chunked"),
            "{h}"
        );
    }
    let (_, wire, _) = encoded(
        200,
        &[("content-length", "9")],
        SizeHint::with_exact(0),
        true,
        v11,
        true,
    );
    assert_eq!(wire, Wire::None);

    let (h, _, _) = encoded(
        404,
        &[("date", "then")],
        SizeHint::with_exact(0),
        false,
        v11,
        false,
    );
    assert!(h.starts_with("HTTP/1.1 404 Not Found\r\n"));
    assert_eq!(h.matches("date").count(), 1);
    assert!(h.contains("connection: close\r\n"));
    // A 101 keeps the upgrade's own Connection field and adds none.
    let (h, wire, _) = encoded(
        101,
        &[("connection", "upgrade"), ("upgrade", "websocket")],
        SizeHint::with_exact(0),
        false,
        v11,
        true,
    );
    assert_eq!(h.matches("connection").count(), 1);
    assert_eq!(wire, Wire::None);
}

/// An idle keep-alive connection is its task's future and little else: the
/// request's state lives in a box only while the request runs, and HTTP/2
/// and TLS (boxed too) do not size a plain connection's task.
#[test]
fn an_idle_connection_holds_a_small_future() {
    fn size_of_future<F, Fut>(_: F) -> usize
    where
        F: Fn(
            tokio::net::TcpStream,
            std::sync::Arc<crate::service::ConnInfo>,
            std::sync::Arc<crate::state::State>,
            tokio::sync::watch::Receiver<bool>,
        ) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }
    let size = size_of_future(crate::http::serve::<tokio::net::TcpStream>);
    assert!(size <= 128, "connection future is {size} bytes");
}

/// The request's future is moved into its box once per request: a rare
/// path's state (a JWKS fetch) must not make every request copy it.
#[test]
fn the_request_future_stays_small() {
    fn size_of_future<F, Fut>(_: F) -> usize
    where
        F: Fn(
            http::Request<crate::body::ReqBody>,
            std::sync::Arc<crate::service::ConnInfo>,
            std::sync::Arc<crate::state::State>,
        ) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }
    let size = size_of_future(crate::service::handle);
    // 2,176 bytes when set; it was 3,064 while each async fn on the way
    // kept its arguments twice; 2,336 once a static body carried a kept
    // file's bytes beside its descriptor (32 bytes, for a 8 % faster
    // small-file path).
    assert!(size <= 2336, "request future is {size} bytes");
}

mod pieces;
