//! Which answers are compressed and the fields that say so, without sockets;
//! the bodies themselves in tests/compress.rs.

use super::*;

#[test]
fn text_like_types_are_compressible_and_others_not() {
    for t in [
        "text/html; charset=utf-8",
        "TEXT/CSS",
        "application/json",
        "application/problem+json",
        "application/javascript",
        "image/svg+xml",
        "application/atom+xml; charset=utf-8",
    ] {
        assert!(compressible_type(t.as_bytes()), "{t}");
    }
    for t in [
        "text/event-stream",
        "image/png",
        "application/octet-stream",
        "application/zip",
        "video/mp4",
        "",
    ] {
        assert!(!compressible_type(t.as_bytes()), "{t}");
    }
    assert!(!compressible_type(b"text/\xff"));
}

#[test]
fn vary_gets_accept_encoding_once() {
    let v = |list: &[&str]| {
        merged_vary(
            &list
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect::<Vec<_>>(),
        )
        .map(|h| h.to_str().unwrap().to_string())
    };
    assert_eq!(v(&[]).as_deref(), Some("Accept-Encoding"));
    assert_eq!(v(&["Cookie"]).as_deref(), Some("Cookie, Accept-Encoding"));
    assert_eq!(
        v(&["Cookie", "Origin"]).as_deref(),
        Some("Cookie, Origin, Accept-Encoding")
    );
    assert_eq!(v(&["Cookie, accept-encoding"]), None);
    assert_eq!(v(&["*"]), None);
}

#[test]
fn only_a_gzip_accepting_request_other_than_head_wants_it() {
    let req = |method: Method, ae: Option<&str>| {
        let mut b = http::Request::builder().method(method).uri("/");
        if let Some(v) = ae {
            b = b.header(header::ACCEPT_ENCODING, v);
        }
        b.body(()).unwrap().into_parts().0
    };
    assert!(wanted(&req(Method::GET, Some("gzip, deflate, br"))));
    assert!(wanted(&req(Method::POST, Some("br;q=1, gzip;q=0.5"))));
    assert!(wanted(&req(Method::GET, Some("*"))));
    assert!(!wanted(&req(Method::GET, None)));
    assert!(!wanted(&req(Method::GET, Some("br"))));
    assert!(!wanted(&req(Method::GET, Some("gzip;q=0"))));
    assert!(!wanted(&req(Method::HEAD, Some("gzip"))));
}
