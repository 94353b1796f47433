//! What a route changes in the request the app is sent, through the real
//! server: `strip_prefix` (an app mounted under a path gets the path after
//! it, with `X-Forwarded-Prefix` saying what was taken, over HTTP/1.1 and
//! HTTP/2; a route without it passes the path whole) and
//! `request_headers` (nginx's `proxy_set_header`).

mod common;

use common::*;
use http::Request;
use http_body_util::BodyExt;

fn config(addr: &str) -> String {
    cfg(&format!(
        "[upstream.app]\nservers = [\"{addr}\"]\n\
         [[route]]\npath = \"/grafana/\"\nupstream = \"app\"\nstrip_prefix = true\n\
         [[route]]\npath = \"/api\"\nupstream = \"app\"\nstrip_prefix = true\n\
         [[route]]\nupstream = \"app\"\n"
    ))
}

/// What the app was sent: its request target and X-Forwarded-Prefix.
async fn seen(req: Request<Body>, h2: bool) -> (String, Option<String>) {
    let c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(h2)
        .build_http::<Body>();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v = json(&String::from_utf8_lossy(&body));
    let prefix = v["headers"]["x-forwarded-prefix"]
        .as_str()
        .map(str::to_string);
    (v["uri"].as_str().unwrap().to_string(), prefix)
}

#[tokio::test]
async fn the_app_gets_the_path_after_the_prefix() {
    let e = echo().await;
    let p = proxy(&config(&e.addr)).await;
    let grafana = Some("/grafana".to_string());
    for h2 in [false, true] {
        for (path, want, prefix) in [
            (
                "/grafana/api/dashboards?orgId=1",
                "/api/dashboards?orgId=1",
                &grafana,
            ),
            ("/grafana/", "/", &grafana),
            // "/grafana/" matches "/grafana" too, as nginx's location does.
            ("/grafana", "/", &grafana),
            ("/grafana?x=1", "/?x=1", &grafana),
            // The %2F gunicorn would read as the prefix's slash.
            ("/grafana%2Fpublic/x.js", "/public/x.js", &grafana),
            ("/api/v1/users", "/v1/users", &Some("/api".to_string())),
            // A parameter ends the prefix's segment, as Java servers read it.
            (
                "/api;jsessionid=1/v1",
                "/;jsessionid=1/v1",
                &Some("/api".to_string()),
            ),
            ("/apix/v1", "/apix/v1", &None),
            ("/other/grafana/x", "/other/grafana/x", &None),
        ] {
            let req = Request::get(p.url(path))
                .header("x-forwarded-prefix", "/spoofed")
                .body(Body::default())
                .unwrap();
            let (uri, got_prefix) = seen(req, h2).await;
            assert_eq!(uri, want, "{path} (h2: {h2})");
            match prefix {
                Some(p) => assert_eq!(got_prefix.as_ref(), Some(p), "{path}"),
                // A route without strip_prefix leaves the field alone.
                None => assert_eq!(got_prefix.as_deref(), Some("/spoofed"), "{path}"),
            }
        }
    }
}

#[test]
fn these_keys_go_with_upstream_only() {
    let Err(e) = compile(&cfg(
        "[[route]]\npath = \"/s/\"\nstatic = \"/srv\"\nstrip_prefix = true\n\
         request_headers = { X-A = \"1\", Connection = \"close\" }\n",
    )) else {
        panic!("compiled");
    };
    let e = e.to_string();
    for want in [
        "route[0].strip_prefix: goes with upstream",
        "route[0].request_headers: goes with upstream",
        "route[0].request_headers.Connection: connection is set by the proxy",
    ] {
        assert!(e.contains(want), "{want:?} in {e}");
    }
}

#[tokio::test]
async fn request_headers_are_set_after_the_forwarding_fields() {
    let e = echo().await;
    let p = proxy(&cfg(&format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n\
         [upstream.app]\nservers = [\"{}\"]\n\
         [[route]]\npath = \"/set/\"\nupstream = \"app\"\n\
         request_headers = {{ X-Real-IP = \"{{client_ip}}\", X-Origin = \"{{scheme}}://{{host}}\", \
         X-Debug = \"\", Host = \"app.internal\" }}\n\
         [[route]]\nupstream = \"app\"\n",
        e.addr
    )))
    .await;
    let get = |path: &str| {
        Request::get(p.url(path))
            .header("host", "shop.example")
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-real-ip", "6.6.6.6")
            .header("x-debug", "1")
            .body(Body::default())
            .unwrap()
    };
    let c = client();
    let body = |r: http::Response<hyper::body::Incoming>| async move {
        json(&String::from_utf8_lossy(
            &r.into_body().collect().await.unwrap().to_bytes(),
        ))
    };
    let v = body(c.request(get("/set/x")).await.unwrap()).await;
    let h = &v["headers"];
    // The client behind the trusted proxy (127.0.0.1), not what it claimed.
    assert_eq!(h["x-real-ip"], "203.0.113.9");
    // {host} is the Host the app would have been sent before this list.
    assert_eq!(h["x-origin"], "http://shop.example");
    assert_eq!(h["host"], "app.internal");
    assert_eq!(h["x-forwarded-host"], "shop.example");
    assert!(h.get("x-debug").is_none(), "an empty value removes: {h}");
    // Another route: the client's fields as they were.
    let v = body(c.request(get("/other")).await.unwrap()).await;
    assert_eq!(v["headers"]["x-real-ip"], "6.6.6.6");
    assert_eq!(v["headers"]["host"], "shop.example");
    assert_eq!(v["headers"]["x-debug"], "1");
}
