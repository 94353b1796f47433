//! What a reload applies and what it keeps: `Server::reload` (SIGHUP's code
//! path) without the watcher, listeners kept, moved and drained, upstream
//! pools and server state carried over.

mod common;
mod reload_util;

use common::*;
use portcullis::reload;
use reload_util::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test]
async fn reload_without_watching_applies_and_reports() {
    let app = fixed("app").await;
    let p = proxy(&config(false, "v0", &app.addr, "app")).await;
    let _w = reload::watch(p.server.clone()).unwrap();
    write_by_rename(&p.config_path, &config(false, "v0", &app.addr, "nope"));
    let errs = p.server.reload().await.unwrap_err();
    assert!(
        errs.to_string()
            .contains("route[1].upstream: no upstream named \"nope\""),
        "{errs}"
    );
    let added = config(false, "v1", &app.addr, "app")
        + "[[route]]\npath = \"/new\"\nrespond = { status = 200, body = \"new\" }\n";
    write_in_place(&p.config_path, &added);
    let summary = p.server.reload().await.unwrap();
    assert_eq!((summary.before.routes, summary.now.routes), (2, 3));
    assert_ne!(summary.hash, summary.previous_hash);
    let line = summary.to_string();
    assert!(
        line.contains("routes 2->3") && line.contains("upstreams 1"),
        "{line}"
    );
    assert_eq!(get(&p.url("/new")).await.2, "new");
    assert_eq!(get(&p.url("/version")).await.2, "v1");
    assert_eq!(p.server.subscribe_reloads().borrow().seq, 2);
}

#[tokio::test]
async fn listeners_keep_move_and_drain_across_a_reload() {
    let app = fixed("app").await;
    let listen = |addrs: &[&str]| {
        let mut text = config(true, "v0", &app.addr, "app")
            .replace("[[listen]]\naddr = \"127.0.0.1:0\"\n", "");
        for a in addrs {
            text += &format!("[[listen]]\naddr = \"{a}\"\n");
        }
        text
    };
    let p = proxy(&listen(&["127.0.0.1:0", "127.0.0.2:0"])).await;
    let (kept, removed) = (p.addrs[0], p.addrs[1]);
    let mut on_removed = KeepAlive::open(removed).await;
    assert_eq!(on_removed.get("/version").await.unwrap().0, 200);

    write_by_rename(&p.config_path, &listen(&["127.0.0.1:0", "127.0.0.3:0"]));
    p.server.reload().await.unwrap();
    let now = p.server.local_addrs();
    assert_eq!(
        now[0], kept,
        "an unchanged address keeps its socket (same port 0 pick)"
    );
    assert_eq!(now[1].ip().to_string(), "127.0.0.3");
    assert_eq!(get(&format!("http://{}/version", now[1])).await.0, 200);
    assert_eq!(get(&format!("http://{kept}/version")).await.0, 200);

    // The removed address stops accepting...
    let start = Instant::now();
    while tokio::net::TcpStream::connect(removed).await.is_ok() {
        assert!(start.elapsed() < DEADLINE, "{removed} still accepts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...but a connection it accepted before is still served.
    assert_eq!(
        on_removed.get("/version").await.unwrap(),
        (200, "v0".into())
    );
}

/// `TCP_DEFER_ACCEPT` as the kernel holds it for the socket listening on
/// `addr` in this process, in seconds (0: off).
fn defer_accept_of(addr: std::net::SocketAddr) -> libc::c_int {
    use std::os::fd::{AsRawFd, BorrowedFd};
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let Ok(fd) = entry.unwrap().file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: only borrowed for the calls below; a descriptor closed
        // meanwhile makes them fail, which skips it.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&fd);
        let ours = sock.local_addr().ok().and_then(|a| a.as_socket()) == Some(addr);
        if !(ours && sock.is_listener().unwrap_or(false)) {
            continue;
        }
        let mut secs: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a c_int out-value and its size.
        let r = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&mut secs as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0, "getsockopt: {}", std::io::Error::last_os_error());
        return secs;
    }
    panic!("no socket listens on {addr}");
}

#[tokio::test]
async fn defer_accept_is_on_by_default_and_a_reload_turns_it_off_on_the_same_socket() {
    let app = fixed("app").await;
    let text = config(false, "v0", &app.addr, "app");
    let p = proxy(&text).await;
    let addr = p.addrs[0];
    assert!(defer_accept_of(addr) > 0, "defer_accept off by default");

    let off = text.replace(
        "addr = \"127.0.0.1:0\"\n",
        "addr = \"127.0.0.1:0\"\ndefer_accept = false\n",
    );
    assert_ne!(off, text);
    write_by_rename(&p.config_path, &off);
    p.server.reload().await.unwrap();
    assert_eq!(p.server.local_addrs(), vec![addr], "the socket was rebound");
    assert_eq!(defer_accept_of(addr), 0);
    assert_eq!(get(&format!("http://{addr}/version")).await.2, "v0");

    write_by_rename(&p.config_path, &text);
    p.server.reload().await.unwrap();
    assert!(defer_accept_of(addr) > 0);
    assert_eq!(get(&format!("http://{addr}/")).await.2, "app");
}

#[tokio::test]
async fn an_untouched_upstream_keeps_its_pool_and_health() {
    // An upstream that counts TCP connections: a reused pooled connection
    // shows up as no new one.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let conns = Arc::new(AtomicUsize::new(0));
    let c = conns.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Body::from("app")))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let other = fixed("other").await;
    let text = |extra: &str| {
        format!(
            "{}[upstream.other]\nservers = [\"{}\"{extra}]\n[[route]]\npath = \"/other\"\nupstream = \"other\"\n",
            config(true, "v0", &addr, "app"),
            other.addr
        )
    };
    let p = proxy(&text("")).await;
    assert_eq!(get(&p.url("/")).await.2, "app");
    assert_eq!(conns.load(Ordering::SeqCst), 1);
    let before = p.server.state().load();
    // Passive health: `other`'s server has just been taken out.
    let now = portcullis::upstream::now_ms;
    before.upstreams["other"].servers[0]
        .health
        .record_failure(1, Duration::from_secs(600));
    assert!(before.upstreams["other"].servers[0].health.is_down(now()));

    // Change everything around `app` but not `app` itself, and replace
    // `other`'s server list.
    let changed = text(", \"127.0.0.1:9\"").replace("v0", "v1");
    write_in_place(&p.config_path, &changed);
    p.server.reload().await.unwrap();
    let after = p.server.state().load();
    assert!(Arc::ptr_eq(
        &before.upstreams["app"].servers[0],
        &after.upstreams["app"].servers[0]
    ));
    assert!(
        Arc::ptr_eq(
            &before.upstreams["other"].servers[0],
            &after.upstreams["other"].servers[0]
        ),
        "a server still listed keeps its state even when the list changes"
    );
    assert!(
        after.upstreams["other"].servers[0].health.is_down(now()),
        "its failure state came along"
    );
    assert_eq!(get(&p.url("/version")).await.2, "v1");
    assert_eq!(get(&p.url("/")).await.2, "app");
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "the pooled connection was reused after the reload"
    );
    task.abort();
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_the_config_it_started_with() {
    let release = Arc::new(tokio::sync::Notify::new());
    let r = release.clone();
    let app = upstream(move |_req| {
        let r = r.clone();
        async move {
            r.notified().await;
            hyper::Response::new(Body::from("from app"))
        }
    })
    .await;
    let p = proxy(&config(false, "v0", &app.addr, "app")).await;
    let url = p.url("/slow");
    let in_flight = tokio::spawn(async move { get(&url).await });
    let start = Instant::now();
    while app.hits() == 0 {
        assert!(
            start.elapsed() < DEADLINE,
            "request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The new config has neither the route nor the upstream.
    let text =
        "[server]\nwatch = false\n[log]\naccess = \"off\"\n[[listen]]\naddr = \"127.0.0.1:0\"\n\
                [[route]]\npath = \"/\"\nrespond = { status = 410, body = \"gone\" }\n";
    write_by_rename(&p.config_path, text);
    let summary = p.server.reload().await.unwrap();
    assert_eq!((summary.before.upstreams, summary.now.upstreams), (1, 0));
    assert_eq!(get(&p.url("/slow")).await.0, 410);

    release.notify_one();
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "from app"));
}

/// A reload that lowers `max_connections` below what is open: the places
/// of the connections that end are not given to new ones until the open
/// ones are under the new limit.
#[tokio::test]
async fn a_lowered_max_connections_applies_while_connections_are_open() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let text = |max: usize| {
        cfg(&format!(
            "[server]\nmax_connections = {max}\nidle_timeout = \"1h\"\n\
             [[route]]\nrespond = {{ body = \"ok\" }}\n"
        ))
    };
    let p = proxy(&text(3)).await;
    let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(p.addrs[0]).await.unwrap();
        s.write_all(req).await.unwrap();
        read_until(&mut s, "\r\n\r\nok", 1).await;
        open.push(s);
    }
    std::fs::write(&p.config_path, text(1)).unwrap();
    p.server.reload().await.expect("reload");

    let mut waiting = tokio::net::TcpStream::connect(p.addrs[0]).await.unwrap();
    waiting.write_all(req).await.unwrap();
    let mut buf = [0u8; 512];
    // Two of three end: one still open, at the new limit of one.
    for _ in 0..2 {
        let mut s = open.pop().unwrap();
        s.shutdown().await.unwrap();
        assert!(closed_by_server(&mut s).await);
    }
    let early = tokio::time::timeout(Duration::from_millis(300), waiting.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "served past the lowered max_connections: {early:?}"
    );
    // The last one ends: the waiting client gets its place.
    drop(open);
    let n = tokio::time::timeout(Duration::from_secs(10), waiting.read(&mut buf))
        .await
        .expect("never served once the open connections had ended")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}
