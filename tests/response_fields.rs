//! An upstream answer's header fields reach the client as the upstream sent
//! them, over HTTP/1 and HTTP/2, except hop-by-hop ones and those the proxy
//! sets itself, which replace the upstream's rather than doubling them.

mod common;

use common::*;
use http::{HeaderMap, Request, Response};

async fn app() -> Upstream {
    upstream(|_req| async move {
        Response::builder()
            .header("x-app", "1")
            .header("x-multi", "a")
            .header("x-multi", "b")
            .header("cache-control", "private")
            .header("x-request-id", "from-the-app")
            .header("keep-alive", "timeout=5")
            .header("connection", "x-secret")
            .header("x-secret", "hop")
            .body(Body::from("twelve bytes"))
            .unwrap()
    })
    .await
}

fn app_cfg(app: &Upstream) -> String {
    cfg(&format!(
        "[upstream.app]\nservers = [\"{}\"]\n\
         [[route]]\nupstream = \"app\"\nheaders = {{ \"Cache-Control\" = \"public\" }}\n",
        app.addr
    ))
}

fn check(h: &HeaderMap) {
    assert_eq!(h["x-app"], "1");
    let multi: Vec<_> = h.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["a", "b"]);
    let cc: Vec<_> = h.get_all("cache-control").iter().collect();
    assert_eq!(cc, ["public"], "the route's header replaces the app's");
    let ids: Vec<_> = h.get_all("x-request-id").iter().collect();
    assert_eq!(ids.len(), 1);
    assert_ne!(
        ids[0], "from-the-app",
        "the proxy's request id replaces the app's"
    );
    assert_eq!(h.get_all("date").iter().count(), 1);
    for hop in ["keep-alive", "x-secret"] {
        assert!(!h.contains_key(hop), "{hop} is hop-by-hop");
    }
}

#[tokio::test]
async fn http1_clients_get_the_upstream_fields_once_each() {
    let a = app().await;
    let p = proxy(&app_cfg(&a)).await;
    let (status, headers, body) = get(&p.url("/")).await;
    assert_eq!((status, body.as_str()), (200, "twelve bytes"));
    check(&headers);
    assert_eq!(headers["content-length"], "12");
    // On the wire: no field twice where the map above would fold them.
    let wire = raw(
        p.addrs[0],
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .to_ascii_lowercase();
    assert_eq!(wire.matches("\r\ncontent-length:").count(), 1, "{wire}");
    assert_eq!(wire.matches("\r\nx-request-id:").count(), 1, "{wire}");
    assert_eq!(wire.matches("\r\ndate:").count(), 1, "{wire}");
    assert!(wire.ends_with("\r\n\r\ntwelve bytes"), "{wire}");
}

#[tokio::test]
async fn http2_clients_get_the_same_fields() {
    let a = app().await;
    let p = proxy(&app_cfg(&a)).await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Body>();
    let resp = h2
        .request(Request::get(p.url("/")).body(Body::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    check(resp.headers());
}

#[tokio::test]
async fn a_head_answer_keeps_the_upstreams_length() {
    let a = app().await;
    let p = proxy(&app_cfg(&a)).await;
    let wire = raw(
        p.addrs[0],
        b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .to_ascii_lowercase();
    assert!(wire.contains("\r\ncontent-length: 12\r\n"), "{wire}");
    assert!(wire.ends_with("\r\n\r\n"), "{wire}");
}

/// How an HPACK field is sent: from the table whole, or as a literal value
/// that the decoder adds to its table, leaves out of it, or must never add.
#[derive(Debug, PartialEq)]
enum Form {
    Indexed,
    Incremental,
    Without,
    Never,
}

/// An HPACK integer with a `prefix`-bit first part (RFC 7541, 5.1).
fn hpack_int(b: &[u8], i: &mut usize, prefix: u32) -> usize {
    let max = (1usize << prefix) - 1;
    let mut v = b[*i] as usize & max;
    *i += 1;
    if v < max {
        return v;
    }
    let mut shift = 0;
    loop {
        let c = b[*i];
        *i += 1;
        v += ((c & 0x7f) as usize) << shift;
        shift += 7;
        if c & 0x80 == 0 {
            return v;
        }
    }
}

/// Each field of a header block: its form and its name's table index (0
/// when the name itself is sent). Strings are skipped, not decoded.
fn forms(b: &[u8]) -> Vec<(Form, usize)> {
    let skip = |i: &mut usize| {
        let n = hpack_int(b, i, 7);
        *i += n;
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let (form, prefix) = match c {
            _ if c & 0x80 != 0 => (Form::Indexed, 7),
            _ if c & 0x40 != 0 => (Form::Incremental, 6),
            _ if c & 0x20 != 0 => {
                hpack_int(b, &mut i, 5); // a table size update
                continue;
            }
            _ if c & 0x10 != 0 => (Form::Never, 4),
            _ => (Form::Without, 4),
        };
        let name = hpack_int(b, &mut i, prefix);
        if form != Form::Indexed {
            if name == 0 {
                skip(&mut i);
            }
            skip(&mut i);
        }
        out.push((form, name));
    }
    out
}

/// Each response's id is new, so an HTTP/2 client's header table must not
/// keep it: kept, the ids would push out the fields that do repeat, and the
/// proxy's encoder would compare every new id with every id kept.
#[tokio::test]
async fn http2_sends_the_request_id_never_indexed() {
    use tokio::io::AsyncWriteExt;
    let a = fixed("ok").await;
    let p = proxy(&app_cfg(&a)).await;
    let mut s = tokio::net::TcpStream::connect(p.addrs[0]).await.unwrap();
    // The preface, empty SETTINGS: HTTP/2 with prior knowledge.
    s.write_all(H2_PREFACE).await.unwrap();
    for stream in [1u32, 3, 5] {
        s.write_all(&h2_get_frame(stream)).await.unwrap();
        let mut head = None;
        loop {
            let (kind, flags, id, payload) = h2_frame(&mut s).await;
            match kind {
                0x04 if flags & 0x01 == 0 => s.write_all(b"\0\0\0\x04\x01\0\0\0\0").await.unwrap(),
                0x07 => panic!("GOAWAY: {payload:?}"),
                0x01 if id == stream => {
                    assert_eq!(flags & 0x2c, 0x04, "one whole block, unpadded");
                    head = Some(forms(&payload));
                    if flags & 0x01 != 0 {
                        break;
                    }
                }
                0x00 if id == stream && flags & 0x01 != 0 => break,
                _ => {}
            }
        }
        let head = head.expect("a HEADERS frame");
        assert_eq!(head[0], (Form::Indexed, 8), ":status 200: {head:?}");
        // The upstream's and the route's fields all have names in HPACK's
        // static table; the one name sent as a literal is x-request-id.
        let literal_names: Vec<_> = head
            .iter()
            .filter(|(f, name)| *f != Form::Indexed && *name == 0)
            .collect();
        assert_eq!(
            literal_names,
            [&(Form::Never, 0)],
            "stream {stream}: {head:?}"
        );
    }
}
