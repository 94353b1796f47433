//! A route's `basic_auth` through the real server: 401 with the realm
//! until the right name and password come, the app reached after, other
//! routes open, and the users file edited on disk in force after a reload
//! (the password it replaced refused, though it had passed before).

mod common;

use base64::Engine;
use common::jwt::eventually_contains;
use common::*;
use http::Request;

fn basic(user_pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

/// An htpasswd line as `htpasswd -nbB` writes it (`$2y$`), at bcrypt's
/// lowest cost so the test is quick.
fn line(user: &str, password: &str) -> String {
    let h = bcrypt::hash(password, 4)
        .unwrap()
        .replacen("$2b$", "$2y$", 1);
    format!("{user}:{h}\n")
}

async fn status(p: &Proxy, path: &str, auth: Option<&str>) -> (u16, http::HeaderMap) {
    let mut r = Request::get(p.url(path));
    if let Some(a) = auth {
        r = r.header("authorization", basic(a));
    }
    let (st, h, _) = send(r.body(Body::default()).unwrap()).await;
    (st, h)
}

#[tokio::test]
async fn a_route_asks_for_a_name_and_password_and_a_reload_changes_them() {
    let app = echo().await;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("htpasswd");
    std::fs::write(
        &users,
        format!(
            "# staff\n{}{}",
            line("alice", "s3cret"),
            line("bob", "hunter2")
        ),
    )
    .unwrap();
    let p = proxy_in(
        dir,
        &format!(
            "[log]\naccess = \"access.log\"\n[[listen]]\naddr = \"127.0.0.1:0\"\n\
             [upstream.app]\nservers = [\"{}\"]\n\
             [[route]]\npath = \"/staging/\"\nupstream = \"app\"\n\
             basic_auth = {{ users = \"htpasswd\", realm = \"Staging\" }}\n\
             request_headers = {{ X-Remote-User = \"{{user}}\" }}\n\
             [[route]]\nupstream = \"app\"\n",
            app.addr
        ),
    )
    .await;

    let (st, h) = status(&p, "/staging/", None).await;
    assert_eq!(st, 401);
    assert_eq!(
        h["www-authenticate"],
        "Basic realm=\"Staging\", charset=\"UTF-8\""
    );
    for wrong in ["alice:S3cret", "mallory:s3cret", "alice:", "alice"] {
        let (st, _) = status(&p, "/staging/", Some(wrong)).await;
        assert_eq!(st, 401, "{wrong}");
    }
    assert_eq!(app.hits(), 0, "nothing refused reached the app");
    for _ in 0..2 {
        // Twice: the second from the remembered credentials.
        assert_eq!(status(&p, "/staging/x", Some("alice:s3cret")).await.0, 200);
    }
    assert_eq!(status(&p, "/staging/x", Some("bob:hunter2")).await.0, 200);
    // The app is told who passed (Django's RemoteUserMiddleware, with its
    // header set to HTTP_X_REMOTE_USER), whatever the client claimed.
    let req = Request::get(p.url("/staging/who"))
        .header("authorization", basic("bob:hunter2"))
        .header("x-remote-user", "alice")
        .body(Body::default())
        .unwrap();
    let (_, _, body) = send(req).await;
    assert_eq!(json(&body)["headers"]["x-remote-user"], "bob");
    // On a route without basic_auth a client cannot name itself, in either
    // spelling of the field.
    let req = Request::get(p.url("/open"))
        .header("x-remote-user", "admin")
        .header("x_remote_user", "admin")
        .body(Body::default())
        .unwrap();
    let (_, _, body) = send(req).await;
    let seen = &json(&body)["headers"];
    assert!(
        seen.get("x-remote-user").is_none() && seen.get("x_remote_user").is_none(),
        "{seen}"
    );
    // And the access log names them, as nginx's $remote_user.
    let log = p.dir.path().join("access.log");
    eventually_contains(&log, "\"GET /staging/who HTTP/1.1\"").await;
    let lines = std::fs::read_to_string(&log).unwrap();
    let who = lines.lines().find(|l| l.contains("/staging/who")).unwrap();
    assert!(who.contains(" - bob ["), "{who}");
    assert_eq!(
        status(&p, "/open", None).await.0,
        200,
        "another route is open"
    );
    assert_eq!(app.hits(), 6);

    // alice's password changes on disk: after the reload the old one is
    // refused, though it had passed (and was remembered) before.
    std::fs::write(&users, line("alice", "n3w")).unwrap();
    p.server.reload().await.expect("reload");
    assert_eq!(status(&p, "/staging/", Some("alice:s3cret")).await.0, 401);
    assert_eq!(status(&p, "/staging/", Some("bob:hunter2")).await.0, 401);
    assert_eq!(status(&p, "/staging/", Some("alice:n3w")).await.0, 200);

    // A users file that goes bad keeps the running one.
    std::fs::write(&users, "alice:$apr1$xyz$abc\n").unwrap();
    let e = p
        .server
        .reload()
        .await
        .expect_err("an MD5 hash must be refused");
    assert!(e.to_string().contains("route[0].basic_auth.users"), "{e}");
    assert!(e.to_string().contains("only bcrypt"), "{e}");
    assert_eq!(status(&p, "/staging/", Some("alice:n3w")).await.0, 200);
}

#[test]
fn basic_auth_and_jwt_on_one_route_is_an_error() {
    let Err(e) = compile(&cfg(
        "[jwt.api]\nalgorithms = [\"HS256\"]\nsecret = \"0123456789abcdef0123456789abcdef\"\n\
         [[route]]\nrespond = { body = \"x\" }\njwt = \"api\"\n\
         basic_auth = { users = \"/nonexistent/htpasswd\" }\n",
    )) else {
        panic!("compiled");
    };
    let e = e.to_string();
    assert!(
        e.contains("route[0].basic_auth: a route asks for one kind"),
        "{e}"
    );
    assert!(
        e.contains("route[0].basic_auth.users: cannot read /nonexistent/htpasswd"),
        "{e}"
    );
}

#[test]
fn user_in_request_headers_needs_basic_auth() {
    let Err(e) = compile(&cfg(
        "[upstream.app]\nservers = [\"127.0.0.1:9\"]\n\
         [[route]]\nupstream = \"app\"\nrequest_headers = { X-Remote-User = \"{user}\" }\n",
    )) else {
        panic!("compiled");
    };
    assert!(
        e.to_string().contains(
            "route[0].request_headers.x-remote-user: {user} is the name basic_auth lets through"
        ),
        "{e}"
    );
}
