//! Helpers shared by the reload tests.
#![allow(dead_code)]

use crate::common::*;
use http_body_util::BodyExt;
use portcullis::reload::ReloadOutcome;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Generous: only a broken watcher takes this long.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub fn config(watch: bool, version: &str, app: &str, route_upstream: &str) -> String {
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

pub fn write_in_place(path: &Path, text: &str) {
    // Truncate and write the same inode, as `echo > file` or an editor
    // without backup copies does.
    std::fs::write(path, text).unwrap();
}

pub fn write_by_rename(path: &Path, text: &str) {
    // Write a new file and rename it over the old one, as vim, `sed -i` and
    // config management do.
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// GET without panicking on a transport error.
pub async fn try_get(client: &HttpClient, url: &str) -> Result<(u16, String), String> {
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
pub async fn served_within(url: &str, body: &str) -> Duration {
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
pub async fn reload_outcome(
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

pub fn failed_with(o: &ReloadOutcome, cause: &str) -> bool {
    matches!(&o.result, Some(Err(errs)) if errs.iter().any(|e| e.to_string().contains(cause)))
}

/// A raw HTTP/1.1 connection kept open by the test, to show that a reload
/// leaves idle keep-alive connections alone.
pub struct KeepAlive {
    send: hyper::client::conn::http1::SendRequest<Body>,
    host: String,
}

impl KeepAlive {
    pub async fn open(addr: std::net::SocketAddr) -> Self {
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

    pub async fn get(&mut self, path: &str) -> Result<(u16, String), String> {
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
