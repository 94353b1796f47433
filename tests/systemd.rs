//! The real binary as systemd runs it: notifications in order around
//! start, reload and stop, and a drain on SIGTERM that logs the drained
//! request before the process ends.

mod common;

use common::child::*;
use common::*;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

#[tokio::test]
async fn notifications_arrive_in_order_around_start_reload_and_stop() {
    let mut p = Portcullis::start(&config(&respond("/a", "a")));
    let ready = p.next().await;
    assert!(has(&ready, "READY=1"), "{ready:?}");
    let addr = served_addr(&ready);
    assert_eq!(get(&format!("http://{addr}/a")).await.2, "a");

    // SIGHUP with watch = false: the added route is served after READY=1.
    write(
        &p.config,
        &(config(&respond("/a", "a")) + &respond("/b", "b")),
    );
    p.signal("HUP");
    let reloading = p.next().await;
    assert!(has(&reloading, "RELOADING=1"), "{reloading:?}");
    let usec: u64 = value(&reloading, "MONOTONIC_USEC")
        .expect("RELOADING=1 carries MONOTONIC_USEC")
        .parse()
        .unwrap();
    assert!(usec > 0);
    let reloaded = p.next().await;
    assert!(has(&reloaded, "READY=1"), "{reloaded:?}");
    assert!(
        value(&reloaded, "STATUS").unwrap().contains("reloaded"),
        "{reloaded:?}"
    );
    assert_eq!(get(&format!("http://{addr}/b")).await.2, "b");

    // A broken file: still RELOADING then READY (systemd waits for it), the
    // status says it failed, the old config serves.
    write(&p.config, "[[route]]\npath = 1\n");
    p.signal("HUP");
    assert!(has(&p.next().await, "RELOADING=1"));
    let failed = p.next().await;
    assert!(has(&failed, "READY=1"), "{failed:?}");
    assert!(
        value(&failed, "STATUS").unwrap().contains("failed"),
        "{failed:?}"
    );
    assert_eq!(get(&format!("http://{addr}/b")).await.2, "b");

    p.signal("TERM");
    let stopping = p.next().await;
    assert!(has(&stopping, "STOPPING=1"), "{stopping:?}");
    assert!(p.exited().await.success());
    let log = p.log();
    assert!(log.contains("config reloaded"), "{log}");
    assert!(
        log.contains("routes 1->2"),
        "the reload line says what changed:\n{log}"
    );
    assert!(
        log.contains("route[0]"),
        "the failed reload's cause is logged:\n{log}"
    );
}

/// nginx's logrotate scripts send SIGUSR1, whose default action would
/// end the process: here it opens the access log again, made anew if it
/// was moved away, and nothing else happens.
#[tokio::test]
async fn sigusr1_reopens_the_access_log_and_the_proxy_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access.log");
    let text = config(&respond("/a", "a")).replace(
        "access = \"off\"",
        &format!("access = \"{}\"", access.display()),
    );
    let mut p = Portcullis::start(&text);
    let addr = served_addr(&p.next().await);
    let (status, headers, _) = get(&format!("http://{addr}/a")).await;
    assert_eq!(status, 200);
    log_line(&access, &headers).await;

    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&access, &rotated).unwrap();
    p.signal("USR1");
    // No request since the move: only the signal makes the file again.
    let start = Instant::now();
    while !access.exists() {
        assert!(
            start.elapsed() < DEADLINE,
            "no new access.log after SIGUSR1; log:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(p.child.try_wait().unwrap().is_none(), "{}", p.log());
    let (status, headers, _) = get(&format!("http://{addr}/a")).await;
    assert_eq!(status, 200);
    let id = headers["x-request-id"].to_str().unwrap().to_string();
    log_line(&access, &headers).await;
    assert!(!std::fs::read_to_string(&rotated).unwrap().contains(&id));
    let log = p.log();
    assert!(
        log.contains("access log reopened") && log.contains("SIGUSR1"),
        "{log}"
    );

    p.signal("TERM");
    assert!(p.exited().await.success(), "{}", p.log());
}

#[tokio::test]
async fn sigterm_drains_the_request_in_flight_and_refuses_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access.log");
    // An upstream that holds its answer until the test lets it go.
    let release = Arc::new(tokio::sync::Notify::new());
    let r = release.clone();
    let app = upstream(move |_req| {
        let r = r.clone();
        async move {
            r.notified().await;
            hyper::Response::new(Body::from("finished"))
        }
    })
    .await;
    let text = config(&format!(
        "[upstream.app]\nservers = [\"{}\"]\n[[route]]\npath = \"/\"\nupstream = \"app\"\n",
        app.addr
    ))
    .replace(
        "access = \"off\"",
        &format!("access = \"{}\"", access.display()),
    );
    let mut p = Portcullis::start(&text);
    let addr = served_addr(&p.next().await);
    let url = format!("http://{addr}/slow");
    let in_flight = tokio::spawn(async move { get(&url).await });
    let start = Instant::now();
    while app.hits() == 0 {
        assert!(
            start.elapsed() < DEADLINE,
            "request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    p.signal("TERM");
    assert!(has(&p.next().await, "STOPPING=1"));
    // New connections are refused while the old request is still running.
    while tokio::net::TcpStream::connect(&addr).await.is_ok() {
        assert!(
            start.elapsed() < DEADLINE,
            "{addr} still accepts after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );

    release.notify_one();
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "finished"));
    assert!(p.exited().await.success(), "{}", p.log());
    assert!(p.log().contains("all connections drained"), "{}", p.log());
    // The drained request's line was written before the process ended,
    // not left in a buffer that died with it.
    let lines = std::fs::read_to_string(&access).unwrap();
    assert!(
        lines
            .lines()
            .any(|l| l.contains("\"GET /slow HTTP/1.1\" 200 8 ")),
        "{lines:?}"
    );
}
