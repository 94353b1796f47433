//! TLS listeners: certificate choice by SNI, HTTP/2 and HTTP/1.1 by ALPN,
//! protocol versions, handshake limits, the redirect listener and HSTS.

mod common;
mod tls_support;

use common::*;
use std::time::{Duration, Instant};
use tls_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn cert_table(file: &str) -> String {
    format!("[[tls.cert]]\ncert = \"{file}.crt\"\nkey = \"{file}.key\"\n")
}

/// A proxy whose TLS listener has certificates for default.test, a.test and
/// *.b.test, each from `ca`.
async fn three_names(ca: &Ca, tls_extra: &str, upstream: &str) -> (Proxy, [Pair; 3]) {
    let dir = tempfile::tempdir().unwrap();
    let pairs = [
        ca.leaf(&["default.test"]),
        ca.leaf(&["a.test"]),
        ca.leaf(&["*.b.test"]),
    ];
    pairs[0].write(dir.path(), "default");
    pairs[1].write(dir.path(), "a");
    pairs[2].write(dir.path(), "b");
    let certs = [cert_table("default"), cert_table("a"), cert_table("b")].join("\n");
    let p = proxy_in(dir, &config(tls_extra, &certs, upstream)).await;
    (p, pairs)
}

#[tokio::test]
async fn sni_picks_each_names_certificate_and_unknown_gets_the_default() {
    let ca = Ca::new("Test CA");
    let up = fixed("ok").await;
    let (p, [default, a, b]) = three_names(&ca, "", &up.addr).await;
    let addr = p.addrs[0];
    assert_eq!(presented(addr, Some("a.test")).await, a.der);
    assert_eq!(presented(addr, Some("A.Test")).await, a.der);
    assert_eq!(presented(addr, Some("www.b.test")).await, b.der);
    assert_eq!(presented(addr, Some("unknown.test")).await, default.der);
    assert_eq!(presented(addr, Some("x.y.b.test")).await, default.der);
    assert_eq!(presented(addr, None).await, default.der);

    // And a verifying client is served by each name.
    for name in ["a.test", "www.b.test", "default.test"] {
        let o = ClientOpts {
            roots: Some(ca.roots()),
            ..Default::default()
        };
        let s = connect(addr, Some(name), &o).await.unwrap();
        let (status, ..) = h1_get(s, name, "/").await.unwrap();
        assert_eq!(status, 200, "{name}");
    }
}

#[tokio::test]
async fn http2_and_http11_both_proxy_as_negotiated_by_alpn() {
    let ca = Ca::new("Test CA");
    let up = echo().await;
    let (p, _) = three_names(&ca, "", &up.addr).await;
    let addr = p.addrs[0];
    let roots = || Some(ca.roots());

    let o = ClientOpts {
        roots: roots(),
        alpn: &[b"h2", b"http/1.1"],
        ..Default::default()
    };
    let s = connect(addr, Some("a.test"), &o).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (status, version, _, body) = h2_get(s, "a.test", "/h2?x=1").await.unwrap();
    assert_eq!((status.as_u16(), version), (200, http::Version::HTTP_2));
    let j = json(&body);
    assert_eq!(j["uri"], "/h2?x=1");
    assert_eq!(j["headers"]["x-forwarded-proto"], "https");
    assert_eq!(j["headers"]["host"], "a.test");

    let o = ClientOpts {
        roots: roots(),
        alpn: &[b"http/1.1"],
        ..Default::default()
    };
    let s = connect(addr, Some("a.test"), &o).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, version, _, body) = h1_get(s, "a.test", "/h1").await.unwrap();
    assert_eq!((status.as_u16(), version), (200, http::Version::HTTP_11));
    assert_eq!(json(&body)["headers"]["x-forwarded-proto"], "https");

    // A client without ALPN (older tools) gets HTTP/1.1.
    let o = ClientOpts {
        roots: roots(),
        ..Default::default()
    };
    let s = connect(addr, Some("a.test"), &o).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), None);
    let (status, version, ..) = h1_get(s, "a.test", "/").await.unwrap();
    assert_eq!((status.as_u16(), version), (200, http::Version::HTTP_11));
    assert_eq!(up.hits(), 3);
}

/// A ClientHello built by hand: rustls clients cannot offer TLS 1.1 at all.
/// `version` is the highest version offered (0x0302 = TLS 1.1, 0x0303 =
/// TLS 1.2); the suites and extensions are ones a TLS 1.2 server accepts.
fn client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(version);
    body.extend([7u8; 32]); // random
    body.push(0); // no session id
    let suites: [u16; 6] = [0xc02b, 0xc02f, 0xc009, 0xc013, 0x002f, 0x0035];
    body.extend(((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend(s.to_be_bytes());
    }
    body.extend([1, 0]); // compression: null
    let mut ext = Vec::new();
    ext.extend([0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]); // groups: x25519, P-256
    ext.extend([0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]); // point formats: uncompressed
    ext.extend([
        0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01,
    ]); // signature algorithms
    body.extend((ext.len() as u16).to_be_bytes());
    body.extend(ext);
    let mut hs = vec![1]; // ClientHello
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

/// Send a hand-made ClientHello; the first bytes of the answer.
async fn hello_answer(addr: std::net::SocketAddr, version: [u8; 2]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&client_hello(version)).await.unwrap();
    let mut buf = vec![0u8; 7];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .expect("no answer to the ClientHello")
        .expect("connection closed without an answer");
    buf
}

fn is_protocol_version_alert(b: &[u8]) -> bool {
    // Alert record, 2 bytes: fatal (2), protocol_version (70).
    b[0] == 0x15 && b[3..5] == [0, 2] && b[5] == 2 && b[6] == 70
}

#[tokio::test]
async fn tls_1_1_is_refused_and_1_2_accepted_by_default() {
    let ca = Ca::new("Test CA");
    let up = fixed("ok").await;
    let (p, _) = three_names(&ca, "", &up.addr).await;
    let addr = p.addrs[0];
    let a = hello_answer(addr, [3, 2]).await;
    assert!(is_protocol_version_alert(&a), "TLS 1.1 answer: {a:?}");
    // The same hand-made hello offering 1.2 gets a ServerHello: the refusal
    // above is about the version, not a malformed hello.
    let a = hello_answer(addr, [3, 3]).await;
    assert_eq!(
        (a[0], a[1], a[2], a[5]),
        (0x16, 3, 3, 2),
        "TLS 1.2 answer: {a:?}"
    );

    // A rustls client limited to TLS 1.2 completes a request.
    let o = ClientOpts {
        roots: Some(ca.roots()),
        versions: &[&rustls::version::TLS12],
        ..Default::default()
    };
    let s = connect(addr, Some("a.test"), &o).await.unwrap();
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(h1_get(s, "a.test", "/").await.unwrap().0, 200);
}

#[tokio::test]
async fn min_version_1_3_refuses_tls_1_2() {
    let ca = Ca::new("Test CA");
    let up = fixed("ok").await;
    let (p, _) = three_names(&ca, "min_version = \"1.3\"", &up.addr).await;
    let addr = p.addrs[0];
    let a = hello_answer(addr, [3, 3]).await;
    assert!(is_protocol_version_alert(&a), "TLS 1.2 answer: {a:?}");
    let o = ClientOpts {
        roots: Some(ca.roots()),
        versions: &[&rustls::version::TLS12],
        ..Default::default()
    };
    assert!(connect(addr, Some("a.test"), &o).await.is_err());
    let o = ClientOpts {
        roots: Some(ca.roots()),
        ..Default::default()
    };
    let s = connect(addr, Some("a.test"), &o).await.unwrap();
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(h1_get(s, "a.test", "/").await.unwrap().0, 200);
}

#[tokio::test]
async fn silent_client_is_dropped_after_the_handshake_timeout_while_others_are_served() {
    let ca = Ca::new("Test CA");
    let up = fixed("ok").await;
    let (p, _) = three_names(&ca, "handshake_timeout = \"300ms\"", &up.addr).await;
    let addr = p.addrs[0];
    let start = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();

    let o = ClientOpts {
        roots: Some(ca.roots()),
        ..Default::default()
    };
    let s = connect(addr, Some("a.test"), &o).await.unwrap();
    assert_eq!(h1_get(s, "a.test", "/").await.unwrap().0, 200);

    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("silent client still connected after 5s");
    assert!(matches!(r, Ok(0) | Err(_)), "expected close, got {r:?}");
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn garbage_and_plain_http_close_only_their_connection() {
    let ca = Ca::new("Test CA");
    let up = fixed("ok").await;
    let (p, _) = three_names(&ca, "", &up.addr).await;
    let addr = p.addrs[0];
    for bytes in [
        &b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5][..],
        &[0xff; 600][..],
    ] {
        let answer = tokio::time::timeout(Duration::from_secs(5), raw(addr, bytes))
            .await
            .expect("connection not closed");
        assert!(!answer.contains("HTTP/1.1"), "{answer:?}");
    }
    let o = ClientOpts {
        roots: Some(ca.roots()),
        ..Default::default()
    };
    let s = connect(addr, Some("a.test"), &o).await.unwrap();
    assert_eq!(h1_get(s, "a.test", "/").await.unwrap().0, 200);
}

async fn tls_and_redirect(ca: &Ca, up: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    ca.leaf(&["a.test"]).write(dir.path(), "a");
    let toml = format!(
        r#"
[log]
access = "off"

[[listen]]
addr = "127.0.0.1:0"
redirect_https = true

[[listen]]
addr = "127.0.0.1:0"
tls = true

[tls]
hsts = "max-age=63072000; includeSubDomains"
{}

[upstream.app]
servers = ["{up}"]

[[route]]
upstream = "app"
"#,
        cert_table("a")
    );
    proxy_in(dir, &toml).await
}

#[tokio::test]
async fn redirect_listener_sends_every_request_to_https_on_the_tls_port() {
    let ca = Ca::new("Test CA");
    let up = fixed("ok").await;
    let p = tls_and_redirect(&ca, &up.addr).await;
    let (plain, tls_port) = (p.addrs[0], p.addrs[1].port());
    let cases = [
        (
            "GET",
            "example.com",
            "/",
            format!("https://example.com:{tls_port}/"),
        ),
        (
            "GET",
            "example.com:8080",
            "/a/b%20c?x=1&y=%2F",
            format!("https://example.com:{tls_port}/a/b%20c?x=1&y=%2F"),
        ),
        (
            "POST",
            "Example.COM:80",
            "/form",
            format!("https://Example.COM:{tls_port}/form"),
        ),
        (
            "GET",
            "[::1]:8080",
            "/v6?q",
            format!("https://[::1]:{tls_port}/v6?q"),
        ),
        (
            "DELETE",
            "10.0.0.1",
            "/x",
            format!("https://10.0.0.1:{tls_port}/x"),
        ),
    ];
    for (method, host, path, want) in cases {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("http://{plain}{path}"))
            .header("host", host)
            .body(Body::default())
            .unwrap();
        let (status, headers, _) = send(req).await;
        assert_eq!(status, 308, "{method} {host}{path}");
        assert_eq!(headers["location"], want.as_str(), "{method} {host}{path}");
        assert!(headers.get("strict-transport-security").is_none());
    }
    // No Host (HTTP/1.0) or a Host that would change the target: 400.
    let a = raw(plain, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(
        a.starts_with("HTTP/1.0 400") || a.starts_with("HTTP/1.1 400"),
        "{a}"
    );
    for bad in ["evil.test/x", "a@evil.test", "evil.test#"] {
        let req = format!("GET / HTTP/1.1\r\nHost: {bad}\r\nConnection: close\r\n\r\n");
        let a = raw(plain, req.as_bytes()).await;
        assert!(a.starts_with("HTTP/1.1 400"), "{bad}: {a}");
    }
    assert_eq!(up.hits(), 0, "the redirect listener never proxies");
}

#[test]
fn redirect_on_port_443_has_no_port() {
    let parts = |uri: &str, host: &str| {
        http::Request::get(uri)
            .header("host", host)
            .body(())
            .unwrap()
            .into_parts()
            .0
    };
    let loc = |r: portcullis::handler::Resp| r.headers()["location"].to_str().unwrap().to_string();
    let r = portcullis::handler::redirect_https(&parts("/p?q=1", "example.com:80"), Some(443));
    assert_eq!(r.status(), 308);
    assert_eq!(loc(r), "https://example.com/p?q=1");
    let r = portcullis::handler::redirect_https(&parts("/", "example.com"), Some(8443));
    assert_eq!(loc(r), "https://example.com:8443/");
    // `OPTIONS *` has no path: the site's root.
    let r = portcullis::handler::redirect_https(&parts("*", "example.com"), Some(443));
    assert_eq!(loc(r), "https://example.com/");
}

#[tokio::test]
async fn hsts_is_added_to_tls_responses() {
    let ca = Ca::new("Test CA");
    let up = fixed("ok").await;
    let p = tls_and_redirect(&ca, &up.addr).await;
    let o = ClientOpts {
        roots: Some(ca.roots()),
        alpn: &[b"h2"],
        ..Default::default()
    };
    let s = connect(p.addrs[1], Some("a.test"), &o).await.unwrap();
    let (status, _, headers, body) = h2_get(s, "a.test", "/").await.unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "ok"));
    assert_eq!(
        headers["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );
}
