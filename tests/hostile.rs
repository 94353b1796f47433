//! Requests written to get past the proxy's rules: another spelling of a
//! gated path, a host in the target that differs from Host, forged or
//! named-away forwarding fields, a Content-Length in list form. Sent as raw
//! bytes, since a real client library would tidy most of them up first.

mod common;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

const SECRET: &str = "s3cret-s3cret-s3cret-s3cret-s3cret";

fn token(sub: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// `/api/` and the host `admin.example` need a token (its `sub` forwarded
/// as X-User); `open.example` and every other path are open. All of it
/// goes to `upstream`.
fn config(upstream: &str, extra_server: &str) -> String {
    format!(
        "[server]\n{extra_server}\n[[listen]]\naddr = \"127.0.0.1:0\"\n\n\
         [upstream.app]\nservers = [\"{upstream}\"]\n\n\
         [jwt.api]\nalgorithms = [\"HS256\"]\nsecret = {{ value = \"{SECRET}\" }}\n\
         forward_claims = {{ sub = \"X-User\" }}\n\n\
         [[route]]\npath = \"/api/\"\nupstream = \"app\"\njwt = \"api\"\n\n\
         [[route]]\nhost = \"open.example\"\npath = \"/\"\nupstream = \"app\"\n\n\
         [[route]]\nhost = \"admin.example\"\npath = \"/\"\nupstream = \"app\"\njwt = \"api\"\n\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n"
    )
}

/// One request (its head's lines, then a body) on its own connection: the
/// status and the body of the answer.
async fn ask_with(addr: SocketAddr, head: &str, body: &str) -> (u16, String) {
    let resp = raw(
        addr,
        format!("{head}Connection: close\r\n\r\n{body}").as_bytes(),
    )
    .await;
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {resp:?}"));
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

async fn ask(addr: SocketAddr, head: &str) -> (u16, String) {
    ask_with(addr, head, "").await
}

async fn get(addr: SocketAddr, target: &str, fields: &str) -> (u16, String) {
    ask(
        addr,
        &format!("GET {target} HTTP/1.1\r\nHost: x\r\n{fields}"),
    )
    .await
}

#[tokio::test]
async fn a_gated_path_cannot_be_reached_by_spelling_it_another_way() {
    let up = echo().await;
    let p = proxy(&config(&up.addr, "")).await;
    let a = p.addrs[0];
    let spellings = [
        ("/api/x", "/api/x"),
        ("/%61pi/x", "/api/x"),
        ("/%61%70%69/x", "/api/x"),
        ("//api/x", "/api/x"),
        ("/./api/x", "/api/x"),
        ("/z/../api/x", "/api/x"),
        ("/z/%2e%2e/api/x", "/api/x"),
        ("/api%2fx", "/api%2Fx"),
        ("/api%2Fx?q=1", "/api%2Fx?q=1"),
        // A servlet container drops `;x`: under /api/ for it, so here too.
        ("/api;x/x", "/api;x/x"),
    ];
    for (path, _) in spellings {
        assert_eq!(get(a, path, "").await.0, 401, "{path} got past the policy");
    }
    assert_eq!(up.hits(), 0);
    // With a token each goes through, and the upstream is sent the path
    // the route was chosen on.
    let auth = format!("Authorization: Bearer {}\r\n", token("alice"));
    for (path, forwarded) in spellings {
        let (st, body) = get(a, path, &auth).await;
        assert_eq!(st, 200, "{path}");
        assert_eq!(json(&body)["uri"], forwarded, "{path}");
        assert_eq!(json(&body)["headers"]["x-user"], "alice");
    }
    let hits = up.hits();
    // Paths a backend could read another way than the router are refused.
    for path in [
        "/../api/x",
        "/public/..%2Fapi/x",
        "/%2Fapi/x",
        "/a%zz",
        "/a%00",
        "*",
        "/api\\x",
        "/z\\..\\api/x",
        "/z%5C..%5Capi/x",
    ] {
        assert_eq!(get(a, path, "").await.0, 400, "{path}");
    }
    assert_eq!(up.hits(), hits, "a refused path reached the upstream");
}

#[tokio::test]
async fn the_upstream_is_told_the_host_the_route_was_chosen_for() {
    let up = echo().await;
    let p = proxy(&config(&up.addr, "")).await;
    let a = p.addrs[0];
    // The target's host chose the open route; the upstream must not be
    // told another host, which it could serve gated content for.
    let (st, body) = ask(
        a,
        "GET http://open.example/x HTTP/1.1\r\nHost: gated.example\r\n",
    )
    .await;
    assert_eq!(st, 200);
    let h = &json(&body)["headers"];
    assert_eq!(h["host"], "open.example");
    assert_eq!(h["x-forwarded-host"], "open.example");
    assert_eq!(json(&body)["uri"], "/x");
    // A trailing dot names the same host (DNS, nginx and Django agree).
    let (st, _) = ask(a, "GET /x HTTP/1.1\r\nHost: admin.example.\r\n").await;
    assert_eq!(st, 401, "admin.example. got past admin.example's policy");
    let hits = up.hits();
    for head in [
        "GET open.example:80 HTTP/1.1\r\nHost: open.example\r\n",
        "GET http://u:p@open.example/ HTTP/1.1\r\nHost: open.example\r\n",
        "GET / HTTP/1.1\r\nHost: \r\n",
        "GET / HTTP/1.1\r\nHost: a@open.example\r\n",
        "GET / HTTP/1.1\r\nHost: open.example/api\r\n",
    ] {
        assert_eq!(ask(a, head).await.0, 400, "{head:?}");
    }
    assert_eq!(up.hits(), hits);
}

#[tokio::test]
async fn forwarding_fields_cannot_be_forged_or_named_away() {
    let up = echo().await;
    let p = proxy(&config(&up.addr, "")).await;
    let a = p.addrs[0];

    // HTTP/1.0 without Host: the upstream still gets a Host, and the
    // client's X-Forwarded-Host is not passed on.
    let (st, body) = ask(a, "GET /x HTTP/1.0\r\nX-Forwarded-Host: evil.example\r\n").await;
    assert_eq!(st, 200);
    let h = &json(&body)["headers"];
    assert_eq!(h["host"], a.to_string());
    assert_eq!(h["x-forwarded-host"], a.to_string());

    // Connection may name the client's own fields away, not Host, the
    // request id or what the proxy sets.
    let (st, body) = get(
        a,
        "/api/x",
        &format!(
            "Authorization: Bearer {}\r\nX-Secret: 1\r\nX-Request-Id: client-id-1\r\n\
             Connection: Host, X-Forwarded-Host, X-Forwarded-For, X-Request-Id, X-User, X-Secret\r\n",
            token("bob")
        ),
    )
    .await;
    assert_eq!(st, 200);
    let h = &json(&body)["headers"];
    assert_eq!(h["host"], "x");
    assert_eq!(h["x-forwarded-host"], "x");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-user"], "bob");
    assert!(h["x-request-id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(
        h.get("x-secret").is_none(),
        "a field Connection names went on"
    );

    // A claim header is the proxy's to set, on open routes too: the app
    // behind them trusts it as much.
    let (st, body) = get(a, "/open", "X-User: admin\r\n").await;
    assert_eq!(st, 200);
    assert!(json(&body)["headers"].get("x-user").is_none(), "{body}");

    // Only WebSocket is joined end to end: an h2c upgrade would be a
    // tunnel past routes and policies. It goes on as a plain request.
    let (st, body) = get(
        a,
        "/open",
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n",
    )
    .await;
    assert_eq!(st, 200);
    let h = &json(&body)["headers"];
    assert!(
        h.get("upgrade").is_none() && h.get("http2-settings").is_none(),
        "{body}"
    );
}

type H2Send = hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// An HTTP/2 connection (prior knowledge), its task running.
async fn h2_connect(addr: SocketAddr) -> (H2Send, tokio::task::JoinHandle<hyper::Result<()>>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    (send, tokio::spawn(conn))
}

/// One HTTP/2 request (prior knowledge) on its own connection.
async fn h2(
    addr: SocketAddr,
    req: http::Request<http_body_util::Empty<bytes::Bytes>>,
) -> (u16, String) {
    use http_body_util::BodyExt;
    let (mut send, _conn) = h2_connect(addr).await;
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn http2_requests_meet_the_same_host_and_field_rules() {
    let up = echo().await;
    let p = proxy(&config(&up.addr, "")).await;
    let a = p.addrs[0];
    let req = |uri: &str, fields: &[(&str, &str)]| {
        let mut b = http::Request::get(uri);
        for (k, v) in fields {
            b = b.header(*k, *v);
        }
        b.body(http_body_util::Empty::new()).unwrap()
    };
    // Without :authority the Host field is the host, checked as over
    // HTTP/1: exactly one, a real host name.
    let (st, _) = h2(a, req("/x", &[("host", "admin.example")])).await;
    assert_eq!(st, 401);
    let hits = up.hits();
    for fields in [
        &[("host", "admin.example\t")][..],
        &[("host", " admin.example")],
        &[("host", "a@admin.example")],
        &[("host", "other.example"), ("host", "admin.example")],
    ] {
        assert_eq!(h2(a, req("/x", fields)).await.0, 400, "{fields:?}");
    }
    assert_eq!(up.hits(), hits);
    // No tunnel and no echo, over either protocol.
    let trace = http::Request::builder()
        .method("TRACE")
        .uri(format!("http://open.example:{}/x", a.port()))
        .body(http_body_util::Empty::new())
        .unwrap();
    assert_eq!(h2(a, trace).await.0, 405);
    assert_eq!(get(a, "/x", "").await.0, 200);
    let (st, _) = ask(a, "TRACE /x HTTP/1.1\r\nHost: x\r\n").await;
    assert_eq!(st, 405);
    assert_eq!(up.hits(), hits + 1);
    // Cookies split into fields go on as one Cookie line.
    let (st, body) = h2(
        a,
        req(
            &format!("http://open.example:{}/x", a.port()),
            &[("cookie", "a=1"), ("cookie", "b=2")],
        ),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(json(&body)["headers"]["cookie"], "a=1; b=2");
    // A Host field beside :authority that names another host: the route is
    // :authority's, and so is the one Host the app is told, so an open
    // route cannot bring a request to the app as admin.example.
    let (st, body) = h2(
        a,
        req(
            &format!("http://open.example:{}/x", a.port()),
            &[("host", "admin.example")],
        ),
    )
    .await;
    assert_eq!(st, 200);
    let open = format!("open.example:{}", a.port());
    assert_eq!(json(&body)["headers"]["host"], open.as_str(), "{body}");
    assert_eq!(json(&body)["headers"]["x-forwarded-host"], open.as_str());
}

#[tokio::test]
async fn agreeing_content_lengths_go_on_as_one_and_count_against_max_body() {
    let up = echo().await;
    let p = proxy(&config(&up.addr, "max_body = \"8B\"")).await;
    let a = p.addrs[0];
    let (st, body) = ask_with(
        a,
        "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n",
        "abc",
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(json(&body)["headers"]["content-length"], "3");
    assert_eq!(json(&body)["body_len"], 3);
    let hits = up.hits();
    let (st, _) = ask_with(
        a,
        "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 20, 20\r\n",
        "01234567890123456789",
    )
    .await;
    assert_eq!(st, 413);
    assert_eq!(up.hits(), hits, "a body over max_body reached the upstream");
}

#[tokio::test]
async fn an_http2_client_that_takes_no_data_is_cut_off() {
    // An answer far larger than any window: the proxy can send the first
    // 64 KiB and then only waits on the client.
    let big = bytes::Bytes::from(vec![b'x'; 8 << 20]);
    let up = upstream(move |_req| {
        let big = big.clone();
        async move { hyper::Response::new(http_body_util::Full::new(big)) }
    })
    .await;
    let p = proxy(&config(&up.addr, "idle_timeout = \"1s\"")).await;
    let tcp = tokio::net::TcpStream::connect(p.addrs[0]).await.unwrap();
    // PINGs every 100 ms keep the socket busy: they must not keep the
    // connection.
    let (mut send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(std::time::Duration::from_millis(100))
            .keep_alive_while_idle(true)
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!("http://open.example:{}/big", p.addrs[0].port()))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    // The body is never read, so its window never opens again: the proxy
    // ends the connection. The guard only stops a hang.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
    assert!(
        ended.is_ok(),
        "a client that takes nothing was kept for ever"
    );
    drop(resp);
    // The proxy itself is fine.
    assert_eq!(get(p.addrs[0], "/x", "").await.0, 200);
}

#[tokio::test]
async fn an_http2_client_that_never_answers_the_closing_ping_is_let_go() {
    use tokio::io::AsyncWriteExt;
    let up = fixed("ok").await;
    let p = proxy(&config(&up.addr, "idle_timeout = \"1s\"")).await;
    // The preface and nothing more: idle after it, the proxy sends GOAWAY
    // and a PING, which this client never answers.
    let mut silent = tokio::net::TcpStream::connect(p.addrs[0]).await.unwrap();
    silent.write_all(H2_PREFACE).await.unwrap();
    // A client that is there: it answers every PING, and asks for nothing.
    let (_send, conn) = h2_connect(p.addrs[0]).await;
    assert!(
        closed_by_server(&mut silent).await,
        "a client that never answered GOAWAY's PING was kept"
    );
    // The answering one ended the usual way, after its PING's answer.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(20), conn).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
}
