//! Reloads, in-process: the file watcher under load, editors' ways of
//! writing a file, broken configs, SIGHUP's code path, listeners and pools
//! across a reload. The real binary under a fake systemd is in
//! `tests/systemd.rs`.

mod common;

use common::*;
use http_body_util::BodyExt;
use portcullis::reload::{self, ReloadOutcome};
use portcullis::Server;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Generous: only a broken watcher takes this long.
const DEADLINE: Duration = Duration::from_secs(10);

fn config(watch: bool, version: &str, app: &str, route_upstream: &str) -> String {
    format!(
        r#"
[server]
watch = {watch}
[log]
access = "off"
[[listen]]
addr = "127.0.0.1:0"
[upstream.app]
servers = ["{app}"]
keepalive_timeout = "60s"
[[route]]
path = "/version"
respond = {{ status = 200, body = "{version}" }}
[[route]]
path = "/"
upstream = "{route_upstream}"
"#
    )
}

fn write_in_place(path: &Path, text: &str) {
    // Truncate and write the same inode, as `echo > file` or an editor
    // without backup copies does.
    std::fs::write(path, text).unwrap();
}

fn write_by_rename(path: &Path, text: &str) {
    // Write a new file and rename it over the old one, as vim, `sed -i` and
    // config management do.
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// GET without panicking on a transport error.
async fn try_get(client: &HttpClient, url: &str) -> Result<(u16, String), String> {
    let req = hyper::Request::get(url).body(Body::default()).unwrap();
    let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Poll until `url` answers 200 with `body`; returns how long it took.
async fn served_within(url: &str, body: &str) -> Duration {
    let client = client();
    let start = Instant::now();
    loop {
        if let Ok((200, b)) = try_get(&client, url).await {
            if b == body {
                return start.elapsed();
            }
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{url} did not serve {body:?} within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until the latest reload outcome satisfies `pred`.
async fn reload_outcome(
    rx: &mut watch::Receiver<ReloadOutcome>,
    pred: impl Fn(&ReloadOutcome) -> bool,
) -> ReloadOutcome {
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        {
            let o = rx.borrow_and_update();
            if pred(&o) {
                return o.clone();
            }
        }
        match tokio::time::timeout_at(end, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => panic!(
                "no such reload outcome within {DEADLINE:?}: last {:?}",
                *rx.borrow()
            ),
        }
    }
}

fn failed_with(o: &ReloadOutcome, cause: &str) -> bool {
    matches!(&o.result, Some(Err(errs)) if errs.iter().any(|e| e.to_string().contains(cause)))
}

/// A raw HTTP/1.1 connection kept open by the test, to show that a reload
/// leaves idle keep-alive connections alone.
struct KeepAlive {
    send: hyper::client::conn::http1::SendRequest<Body>,
    host: String,
}

impl KeepAlive {
    async fn open(addr: std::net::SocketAddr) -> Self {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        KeepAlive {
            send,
            host: addr.to_string(),
        }
    }

    async fn get(&mut self, path: &str) -> Result<(u16, String), String> {
        self.send
            .ready()
            .await
            .map_err(|e| format!("connection gone: {e}"))?;
        let req = hyper::Request::get(path)
            .header("host", &self.host)
            .body(Body::default())
            .unwrap();
        let resp = self
            .send
            .send_request(req)
            .await
            .map_err(|e| format!("{e}"))?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rewrites_under_load_lose_no_request() {
    let app = fixed("app").await;
    let p = proxy(&config(true, "v0", &app.addr, "app")).await;
    let _w = reload::watch(p.server.clone()).unwrap();
    let mut outcomes = p.server.subscribe_reloads();
    let mut idle = KeepAlive::open(p.addrs[0]).await;
    assert_eq!(idle.get("/version").await.unwrap(), (200, "v0".into()));

    // Several clients, each with its own keep-alive pool, request without pause.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for i in 0..6 {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        let base = p.url("");
        clients.push(tokio::spawn(async move {
            let c = client();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let path = if (n + i) % 2 == 0 { "/" } else { "/version" };
                match try_get(&c, &format!("{base}{path}")).await {
                    Ok((200, body)) if path == "/version" || body == "app" => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failures.lock().unwrap().push(format!("{path}: {other:?}")),
                }
                n += 1;
            }
            n
        }));
    }

    let path = p.config_path.clone();
    let mut last_good = "v0".to_string();
    for i in 1..=12 {
        let version = format!("v{i}");
        let broken = i == 7;
        let text = config(
            true,
            &version,
            &app.addr,
            if broken { "nope" } else { "app" },
        );
        if i % 2 == 0 {
            write_in_place(&path, &text);
        } else {
            write_by_rename(&path, &text);
        }
        if broken {
            let o = reload_outcome(&mut outcomes, |o| failed_with(o, "route[1].upstream")).await;
            let Some(Err(errs)) = o.result else {
                unreachable!()
            };
            assert!(errs[0].to_string().contains("nope"), "{errs:?}");
            // The old config keeps serving.
            let c = client();
            assert_eq!(
                try_get(&c, &p.url("/version")).await.unwrap(),
                (200, last_good.clone())
            );
        } else {
            served_within(&p.url("/version"), &version).await;
            last_good = version;
        }
    }

    stop.store(true, Ordering::Relaxed);
    let mut per_client = Vec::new();
    for c in clients {
        per_client.push(c.await.unwrap());
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed requests: {failures:?}",
        failures.len()
    );
    assert!(
        per_client.iter().all(|&n| n > 12),
        "every client kept requesting through the reloads: {per_client:?}"
    );
    // The connection opened before the first reload and idle since is still
    // open and sees the newest config.
    assert_eq!(idle.get("/version").await.unwrap(), (200, "v12".into()));
    eprintln!(
        "{} requests served across 12 rewrites, none failed",
        ok.load(Ordering::Relaxed)
    );
}

#[tokio::test]
async fn an_added_route_is_served_within_seconds() {
    let app = fixed("app").await;
    let p = proxy(&config(true, "v0", &app.addr, "app")).await;
    let _w = reload::watch(p.server.clone()).unwrap();
    let added = config(true, "v0", &app.addr, "app")
        + "[[route]]\npath = \"/new\"\nrespond = { status = 200, body = \"new\" }\n";
    write_by_rename(&p.config_path, &added);
    let took = served_within(&p.url("/new"), "new").await;
    eprintln!("added route served after {took:?}");
}

#[tokio::test]
async fn a_broken_config_keeps_the_old_one_and_says_why() {
    let app = fixed("app").await;
    let p = proxy(&config(true, "v0", &app.addr, "app")).await;
    let _w = reload::watch(p.server.clone()).unwrap();
    let mut outcomes = p.server.subscribe_reloads();
    write_in_place(&p.config_path, "[server]\nwatch = true\n[[route]]\npath = \"/\"\nupstream = \"gone\"\n[[listen]]\naddr = \"nonsense\"\n");
    let o = reload_outcome(&mut outcomes, |o| o.result.is_some()).await;
    let Some(Err(errs)) = o.result else {
        panic!("broken config accepted: {o:?}")
    };
    let all: Vec<String> = errs.iter().map(ToString::to_string).collect();
    // Every problem, each with its place.
    assert!(all.iter().any(|e| e.starts_with("listen[0]")), "{all:?}");
    assert!(
        all.iter()
            .any(|e| e.starts_with("route[0].upstream") && e.contains("gone")),
        "{all:?}"
    );
    let (status, _, body) = get(&p.url("/version")).await;
    assert_eq!((status, body.as_str()), (200, "v0"));
    assert_eq!(p.server.local_addrs(), p.addrs, "listeners untouched");
}

/// SIGHUP calls `Server::reload`; with `watch = false` it is the only way
/// in. The signal itself is sent to the real binary in `tests/systemd.rs`.
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
async fn a_kubernetes_configmap_symlink_swap_is_picked_up_twice() {
    // The layout kubelet writes: the file is a symlink into ..data, a
    // symlink to a timestamped directory that a swap replaces whole.
    let app = fixed("app").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let publish = |n: u32, text: &str| {
        let ts = d.join(format!("..2026_{n}"));
        std::fs::create_dir(&ts).unwrap();
        std::fs::write(ts.join("portcullis.toml"), text).unwrap();
        std::os::unix::fs::symlink(format!("..2026_{n}"), d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        if n > 1 {
            std::fs::remove_dir_all(d.join(format!("..2026_{}", n - 1))).unwrap();
        }
    };
    publish(1, &config(true, "v1", &app.addr, "app"));
    let path = d.join("portcullis.toml");
    std::os::unix::fs::symlink("..data/portcullis.toml", &path).unwrap();
    let snap = portcullis::config::load_file(&path, None).unwrap();
    let server = Server::start(snap, Some(path.clone())).await.unwrap();
    let _w = reload::watch(server.clone()).unwrap();
    let url = format!("http://{}/version", server.local_addrs()[0]);
    assert_eq!(get(&url).await.2, "v1");
    publish(2, &config(true, "v2", &app.addr, "app"));
    served_within(&url, "v2").await;
    // The second swap proves the watches followed the first.
    publish(3, &config(true, "v3", &app.addr, "app"));
    served_within(&url, "v3").await;
}

#[tokio::test]
async fn a_changed_file_named_by_the_config_reloads() {
    // Until TLS and JWT name their files, put one into the snapshot's list
    // by hand: a key in another directory, replaced by rename.
    let app = fixed("app").await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let jwks = keys.join("jwks.json");
    std::fs::write(&jwks, r#"{"keys":[]}"#).unwrap();
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, config(true, "v0", &app.addr, "app")).unwrap();
    let mut snap = portcullis::config::load_file(&path, None).unwrap();
    snap.files.push(jwks.clone());
    let server = Server::start(snap, Some(path)).await.unwrap();
    let _w = reload::watch(server.clone()).unwrap();
    let mut outcomes = server.subscribe_reloads();
    let tmp = keys.join(".jwks.json.new");
    std::fs::write(&tmp, r#"{"keys":[{"kty":"oct"}]}"#).unwrap();
    std::fs::rename(&tmp, &jwks).unwrap();
    let o = reload_outcome(&mut outcomes, |o| o.seq >= 1).await;
    let Some(Ok(summary)) = o.result else {
        panic!("{o:?}")
    };
    assert_eq!(
        summary.hash, summary.previous_hash,
        "the config text itself did not change"
    );
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
async fn a_reload_that_turns_watching_on_starts_the_watches() {
    let app = fixed("app").await;
    let p = proxy(&config(false, "v0", &app.addr, "app")).await;
    let _w = reload::watch(p.server.clone()).unwrap();
    write_in_place(&p.config_path, &config(true, "v1", &app.addr, "app"));
    p.server.reload().await.unwrap();
    assert_eq!(get(&p.url("/version")).await.2, "v1");
    // No SIGHUP from here on: the watcher alone.
    write_by_rename(&p.config_path, &config(true, "v2", &app.addr, "app"));
    served_within(&p.url("/version"), "v2").await;
}

#[tokio::test]
async fn a_certbot_style_link_swap_of_a_named_file_reloads() {
    // config dir: cert.pem -> le/live/site/fullchain.pem -> ../../archive/site/fullchain1.pem
    // Renewal writes fullchain2.pem and renames a new `live` link over the old.
    let app = fixed("app").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (live, archive) = (d.join("le/live/site"), d.join("le/archive/site"));
    std::fs::create_dir_all(&live).unwrap();
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::write(archive.join("fullchain1.pem"), "one").unwrap();
    std::os::unix::fs::symlink(
        "../../archive/site/fullchain1.pem",
        live.join("fullchain.pem"),
    )
    .unwrap();
    let conf = d.join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::os::unix::fs::symlink(live.join("fullchain.pem"), conf.join("cert.pem")).unwrap();
    let path = conf.join("portcullis.toml");
    std::fs::write(&path, config(true, "v0", &app.addr, "app")).unwrap();
    let mut snap = portcullis::config::load_file(&path, None).unwrap();
    snap.files.push(conf.join("cert.pem"));
    let server = Server::start(snap, Some(path)).await.unwrap();
    let _w = reload::watch(server.clone()).unwrap();
    let mut outcomes = server.subscribe_reloads();

    std::fs::write(archive.join("fullchain2.pem"), "two").unwrap();
    std::os::unix::fs::symlink("../../archive/site/fullchain2.pem", live.join("new.pem")).unwrap();
    std::fs::rename(live.join("new.pem"), live.join("fullchain.pem")).unwrap();
    let o = reload_outcome(&mut outcomes, |o| o.seq >= 1).await;
    assert!(matches!(o.result, Some(Ok(_))), "{o:?}");
}
