//! A route's rules on the client through the real server: `allow`/`deny`
//! and `rate_limit`. The address is the one `server.trusted_proxies` makes
//! the client's, a refusal (403, 429) reaches no upstream, and it comes
//! before the route's JWT policy.

mod common;

use common::jwt::*;
use common::*;
use http::Request;

fn from(url: &str, xff: Option<&str>) -> Request<Body> {
    let mut b = Request::get(url);
    if let Some(x) = xff {
        b = b.header("x-forwarded-for", x);
    }
    b.body(Body::default()).unwrap()
}

/// `/admin/` behind `rules`, everything else open; both to `addr`.
fn admin_config(server: &str, rules: &str, addr: &str) -> String {
    cfg(&format!(
        "{server}\n[upstream.app]\nservers = [\"{addr}\"]\n\
         [[route]]\npath = \"/admin/\"\nupstream = \"app\"\n{rules}\n\
         [[route]]\nupstream = \"app\"\n"
    ))
}

#[tokio::test]
async fn a_client_outside_allow_gets_403_and_reaches_nothing() {
    let e = echo().await;
    let p = proxy(&admin_config("", "allow = [\"10.0.0.0/8\"]", &e.addr)).await;
    let (st, _, body) = get(&p.url("/admin/users")).await;
    assert_eq!((st, body.as_str()), (403, "forbidden\n"));
    assert_eq!(e.hits(), 0, "a refused request reached the upstream");
    // The rules are the route's: the rest of the site is open.
    assert_eq!(get(&p.url("/about")).await.0, 200);
    assert_eq!(e.hits(), 1);
    // A client cannot name itself: X-Forwarded-For from a peer that is
    // not a trusted proxy is not read.
    let (st, _, _) = send(from(&p.url("/admin/users"), Some("10.1.2.3"))).await;
    assert_eq!(st, 403);
    assert_eq!(e.hits(), 1);
}

#[tokio::test]
async fn an_allowed_client_gets_through_unless_denied() {
    let e = echo().await;
    let p = proxy(&admin_config(
        "",
        "allow = [\"127.0.0.0/8\", \"::1\"]",
        &e.addr,
    ))
    .await;
    assert_eq!(get(&p.url("/admin/users")).await.0, 200);
    assert_eq!(e.hits(), 1);

    // deny wins over a network allow admits.
    let p = proxy(&admin_config(
        "",
        "allow = [\"127.0.0.0/8\"]\ndeny = [\"127.0.0.1\"]",
        &e.addr,
    ))
    .await;
    assert_eq!(get(&p.url("/admin/users")).await.0, 403);
    assert_eq!(e.hits(), 1);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_checked() {
    let e = echo().await;
    let p = proxy(&admin_config(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]",
        "allow = [\"10.0.0.0/8\"]\ndeny = [\"10.6.6.6\"]",
        &e.addr,
    ))
    .await;
    let url = p.url("/admin/users");
    // The load balancer in front (the loopback peer, trusted) names the
    // client: the right-most address that is not a trusted proxy counts.
    assert_eq!(send(from(&url, Some("10.1.2.3"))).await.0, 200);
    assert_eq!(send(from(&url, Some("10.1.2.3, 127.0.0.1"))).await.0, 200);
    assert_eq!(e.hits(), 2);
    // What the client itself put to the left of it is not believed.
    assert_eq!(send(from(&url, Some("10.1.2.3, 192.0.2.7"))).await.0, 403);
    assert_eq!(send(from(&url, Some("10.6.6.6"))).await.0, 403);
    // Two X-Forwarded-For fields read as one list, the last field last.
    let two = |first: &str, second: &str| {
        Request::get(&url)
            .header("x-forwarded-for", first)
            .header("x-forwarded-for", second)
            .body(Body::default())
            .unwrap()
    };
    assert_eq!(send(two("192.0.2.7", "10.1.2.3")).await.0, 200);
    assert_eq!(send(two("10.1.2.3", "192.0.2.7, 127.0.0.1")).await.0, 403);
    // No forwarded address: the trusted peer itself, outside allow.
    assert_eq!(send(from(&url, None)).await.0, 403);
    assert_eq!(e.hits(), 3);
}

#[tokio::test]
async fn the_address_is_checked_before_the_token() {
    let e = echo().await;
    let secret = "s3cret-s3cret-s3cret-s3cret-s3cret";
    let p = proxy(&format!(
        "[log]\naccess = \"off\"\n[[listen]]\naddr = \"127.0.0.1:0\"\n\
         [upstream.app]\nservers = [\"{}\"]\n\
         [jwt.api]\nalgorithms = [\"HS256\"]\nsecret = {{ value = \"{secret}\" }}\n\
         [[route]]\npath = \"/api/\"\nupstream = \"app\"\njwt = \"api\"\ndeny = [\"127.0.0.1\"]\n\
         [[route]]\npath = \"/open/\"\nupstream = \"app\"\njwt = \"api\"\n",
        e.addr
    ))
    .await;
    let token = hs256(secret.as_bytes());
    // A refused address gets 403 with or without a token, and no
    // challenge: it learns nothing of the route's policy.
    let (st, h, _) = get(&p.url("/api/x")).await;
    assert_eq!(st, 403);
    assert!(!h.contains_key("www-authenticate"));
    assert_eq!(with_token(&p.url("/api/x"), &token).await.0, 403);
    assert_eq!(e.hits(), 0);
    // The same token passes where the address is not refused.
    assert_eq!(with_token(&p.url("/open/x"), &token).await.0, 200);
    assert_eq!(get(&p.url("/open/x")).await.0, 401);
    assert_eq!(e.hits(), 1);
}

/// The access log names the client the trusted proxy forwarded, as the
/// README's "Coming from nginx" table says (nginx's realip module).
#[tokio::test]
async fn the_access_log_names_the_forwarded_client() {
    let e = echo().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let toml = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n\
         [log]\naccess = \"{}\"\nformat = \"json\"\n[[listen]]\naddr = \"127.0.0.1:0\"\n\
         [upstream.app]\nservers = [\"{}\"]\n[[route]]\nupstream = \"app\"\ndeny = [\"198.51.100.0/24\"]\n",
        log.display(),
        e.addr
    );
    let p = proxy(&toml).await;
    let (st, h, _) = send(from(&p.url("/a"), Some("203.0.113.9"))).await;
    assert_eq!(st, 200);
    assert_eq!(json(&log_line(&log, &h).await)["client"], "203.0.113.9");
    let (st, h, _) = send(from(&p.url("/b"), Some("198.51.100.4"))).await;
    assert_eq!(st, 403);
    let v = json(&log_line(&log, &h).await);
    assert_eq!(v["client"], "198.51.100.4");
    assert_eq!(v["status"], 403);
    // Without a forwarded address, the peer.
    let (_, h, _) = get(&p.url("/c")).await;
    assert_eq!(json(&log_line(&log, &h).await)["client"], "127.0.0.1");
}

/// `/login/` limited to one request an hour past a burst of 2: no request
/// in a test waits for the bucket, so no timing is involved.
fn login_config(rate: &str, addr: &str) -> String {
    cfg(&format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n[upstream.app]\nservers = [\"{addr}\"]\n\
         [[route]]\npath = \"/login/\"\nupstream = \"app\"\nrate_limit = {{ rate = \"{rate}\", burst = 2 }}\n\
         [[route]]\nupstream = \"app\"\n"
    ))
}

#[tokio::test]
async fn a_client_past_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let e = echo().await;
    let p = proxy(&login_config("1/h", &e.addr)).await;
    let url = p.url("/login/");
    let alice = || send(from(&url, Some("203.0.113.1")));
    for i in 0..3 {
        assert_eq!(alice().await.0, 200, "request {i} of the burst");
    }
    let (st, h, body) = alice().await;
    assert_eq!((st, body.as_str()), (429, "too many requests\n"));
    let wait: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((3000..=3600).contains(&wait), "retry-after {wait}");
    assert_eq!(e.hits(), 3, "a limited request reached the upstream");
    // Another client has its own bucket; the rest of the site no limit.
    assert_eq!(send(from(&url, Some("203.0.113.2"))).await.0, 200);
    for _ in 0..5 {
        assert_eq!(
            send(from(&p.url("/home"), Some("203.0.113.1"))).await.0,
            200
        );
    }
    assert_eq!(e.hits(), 9);
}

#[tokio::test]
async fn a_reload_keeps_what_an_unchanged_limit_knows() {
    let e = echo().await;
    let p = proxy(&login_config("1/h", &e.addr)).await;
    let url = p.url("/login/");
    for _ in 0..3 {
        assert_eq!(send(from(&url, Some("203.0.113.1"))).await.0, 200);
    }
    assert_eq!(send(from(&url, Some("203.0.113.1"))).await.0, 429);
    // Another route added: the limited route and its limit stay, and so
    // does the client's empty bucket. A reload is no fresh burst.
    let mut toml = login_config("1/h", &e.addr);
    toml.push_str("[[route]]\npath = \"/healthz\"\nrespond = { body = \"ok\" }\n");
    std::fs::write(&p.config_path, &toml).unwrap();
    p.server.reload().await.unwrap();
    assert_eq!(get(&p.url("/healthz")).await.2, "ok");
    assert_eq!(send(from(&url, Some("203.0.113.1"))).await.0, 429);
    // A new rate is a new limit.
    std::fs::write(&p.config_path, login_config("2/h", &e.addr)).unwrap();
    p.server.reload().await.unwrap();
    assert_eq!(send(from(&url, Some("203.0.113.1"))).await.0, 200);
    assert_eq!(e.hits(), 4);
}

#[tokio::test]
async fn routes_that_name_one_zone_share_each_clients_bucket() {
    // Two login forms in one zone, an API route with a limit of its own:
    // a client's burst of 2 is spent across the zone, not per route.
    let e = echo().await;
    let limit = |zone: &str| format!("rate_limit = {{ rate = \"1/h\", burst = 1{zone} }}\n");
    let toml = |with_zone: bool| {
        let z = if with_zone { ", zone = \"login\"" } else { "" };
        cfg(&format!(
            "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n[upstream.app]\nservers = [\"{}\"]\n\
             [[route]]\npath = \"/login/\"\nupstream = \"app\"\n{}\
             [[route]]\npath = \"/admin/login/\"\nupstream = \"app\"\n{}\
             [[route]]\npath = \"/api/\"\nupstream = \"app\"\n{}",
            e.addr,
            limit(z),
            limit(z),
            limit("")
        ))
    };
    let p = proxy(&toml(true)).await;
    let hit = |path: &str| send(from(&p.url(path), Some("203.0.113.1")));
    assert_eq!(hit("/login/").await.0, 200);
    assert_eq!(hit("/admin/login/").await.0, 200);
    assert_eq!(hit("/login/").await.0, 429, "the zone's burst is spent");
    assert_eq!(hit("/admin/login/").await.0, 429);
    // A route with a limit of its own is not in the zone.
    assert_eq!(hit("/api/").await.0, 200);
    assert_eq!(hit("/api/").await.0, 200);
    assert_eq!(hit("/api/").await.0, 429);
    // A reload that keeps the zone keeps what it knows; without the zone
    // each route has its own bucket again.
    let mut more = toml(true);
    more.push_str("[[route]]\npath = \"/healthz\"\nrespond = { body = \"ok\" }\n");
    std::fs::write(&p.config_path, more).unwrap();
    p.server.reload().await.unwrap();
    assert_eq!(get(&p.url("/healthz")).await.2, "ok", "the reload took");
    assert_eq!(hit("/admin/login/").await.0, 429);
    std::fs::write(&p.config_path, toml(false)).unwrap();
    p.server.reload().await.unwrap();
    assert_eq!(hit("/login/").await.0, 200);
    assert_eq!(hit("/admin/login/").await.0, 200);
}
