//! Reload triggers, in-process: the file watcher under load, the ways
//! editors, Kubernetes and certbot replace a file, broken configs. What a
//! reload keeps is in `tests/reload_apply.rs`; the real binary under a fake
//! systemd in `tests/systemd.rs`.

mod common;
mod reload_util;

use common::*;
use portcullis::reload;
use portcullis::Server;
use reload_util::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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
async fn a_failed_reload_is_retried_when_what_it_missed_appears() {
    // The config names something not there yet (here a log directory; a
    // certificate named before it is copied is the common case).
    let app = fixed("app").await;
    let p = proxy(&config(true, "v0", &app.addr, "app")).await;
    let _w = reload::watch(p.server.clone()).unwrap();
    let mut outcomes = p.server.subscribe_reloads();
    let text = config(true, "v1", &app.addr, "app")
        .replace("access = \"off\"", "access = \"logs/access.log\"");
    write_by_rename(&p.config_path, &text);
    reload_outcome(&mut outcomes, |o| failed_with(o, "log.access")).await;
    assert_eq!(get(&p.url("/version")).await.2, "v0");
    // The config file is not touched again: the directory appearing is enough.
    std::fs::create_dir(p.dir.path().join("logs")).unwrap();
    served_within(&p.url("/version"), "v1").await;
    assert!(p.dir.path().join("logs/access.log").exists());
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
