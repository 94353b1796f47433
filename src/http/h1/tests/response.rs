//! Response heads as the client receives them: this hop's framing, its
//! connection fields, and the body a HEAD request, a 204 or a 304 never has.

use super::super::response::{encode_head, Wire};
use http::{StatusCode, Version};

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
