//! The access log through the running proxy: one JSON line per request,
//! found by its request id, with the upstream's own time apart, and a 499
//! line for a request its client gave up on.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::Response;
use std::time::Duration;

#[tokio::test]
async fn access_log_json_line_per_request() {
    let a = fixed("x").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let toml = format!(
        "[log]\naccess = \"{}\"\nformat = \"json\"\n[[listen]]\naddr = \"127.0.0.1:0\"\n[upstream.app]\nservers = [\"{}\"]\n[[route]]\nupstream = \"app\"\n",
        log.display(),
        a.addr
    );
    let p = proxy(&toml).await;
    let (_, headers, _) = get(&p.url("/logged?q=1")).await;
    let v = json(&log_line(&log, &headers).await);
    assert_eq!(v["uri"], "/logged?q=1");
    assert_eq!(v["status"], 200);
    assert_eq!(v["bytes"], 1);
    assert_eq!(v["upstream"], a.addr.as_str());
    assert_eq!(v["method"], "GET");
}

/// The upstream's time to its response head is logged apart from the
/// request's: the app's share of a slow request, as nginx's
/// `$upstream_header_time`.
#[tokio::test]
async fn access_log_separates_the_upstreams_time() {
    // The app takes at least this long before its head: a lower bound
    // that holds however loaded the machine is.
    const APP_MS: u64 = 200;
    let app = upstream(|_req| async {
        tokio::time::sleep(Duration::from_millis(APP_MS)).await;
        Response::new(Full::new(Bytes::from_static(b"slow")))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("public")).unwrap();
    std::fs::write(dir.path().join("public/f.txt"), "file").unwrap();
    let log = dir.path().join("access.log");
    let toml = format!(
        "[log]\naccess = \"{}\"\nformat = \"json\"\n[[listen]]\naddr = \"127.0.0.1:0\"\n\
         [upstream.app]\nservers = [\"{}\"]\n\
         [[route]]\npath = \"/static/\"\nstatic = \"public\"\n\
         [[route]]\nupstream = \"app\"\n",
        log.display(),
        app.addr
    );
    let p = proxy_in(dir, &toml).await;

    let (status, headers, body) = get(&p.url("/view")).await;
    assert_eq!((status, body.as_str()), (200, "slow"));
    let v = json(&log_line(&log, &headers).await);
    let app_ms = v["upstream_header_ms"].as_f64().expect("a number");
    let total_ms = v["duration_ms"].as_f64().unwrap();
    assert!(app_ms >= APP_MS as f64, "{v}");
    assert!(app_ms <= total_ms, "{v}");

    // Served without an upstream: nothing to time.
    let (status, headers, body) = get(&p.url("/static/f.txt")).await;
    assert_eq!((status, body.as_str()), (200, "file"));
    let v = json(&log_line(&log, &headers).await);
    assert!(v["upstream_header_ms"].is_null(), "{v}");
}

#[tokio::test]
async fn a_request_the_client_gives_up_on_is_logged_with_499() {
    let (arrived_tx, arrived) = tokio::sync::mpsc::unbounded_channel::<()>();
    // An upstream that never answers: the client gives up first.
    let up = upstream(move |_req| {
        let arrived_tx = arrived_tx.clone();
        async move {
            let _ = arrived_tx.send(());
            std::future::pending::<()>().await;
            hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()))
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let p = proxy(&format!(
        "[log]\naccess = {:?}\n[[listen]]\naddr = \"127.0.0.1:0\"\n\
         [upstream.app]\nservers = [\"{}\"]\n[[route]]\nupstream = \"app\"\n",
        log.display().to_string(),
        up.addr
    ))
    .await;
    let (mut send, conn) = h2_connect(p.addrs[0]).await;
    let req = http::Request::get(format!("http://open.example:{}/slow", p.addrs[0].port()))
        .header("x-request-id", "gave-up-1")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let pending = tokio::spawn(async move { send.send_request(req).await });
    let mut arrived = arrived;
    arrived.recv().await.unwrap();
    // The client goes away while the upstream thinks.
    pending.abort();
    conn.abort();
    let mut ids = http::HeaderMap::new();
    ids.insert("x-request-id", "gave-up-1".parse().unwrap());
    let line = log_line(&log, &ids).await;
    assert!(line.contains("\"GET /slow HTTP/2.0\" 499 "), "{line}");
    assert!(
        line.contains("attempts=1") && line.contains("reason=client closed request"),
        "{line}"
    );

    // HTTP/1: the client closes its connection while the upstream thinks.
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(p.addrs[0]).await.unwrap();
    s.write_all(b"GET /slow1 HTTP/1.1\r\nHost: x\r\nX-Request-Id: gave-up-2\r\n\r\n")
        .await
        .unwrap();
    arrived.recv().await.unwrap();
    drop(s);
    ids.insert("x-request-id", "gave-up-2".parse().unwrap());
    let line = log_line(&log, &ids).await;
    assert!(line.contains("\"GET /slow1 HTTP/1.1\" 499 "), "{line}");
}

/// logrotate renames the file, and with `create` makes an empty one in
/// its place: the next lines go to the path, not into the renamed file,
/// without a signal.
#[tokio::test]
async fn lines_follow_the_path_when_logrotate_moves_the_file() {
    let a = fixed("x").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let toml = format!(
        "[log]\naccess = \"{}\"\n[[listen]]\naddr = \"127.0.0.1:0\"\n[upstream.app]\nservers = [\"{}\"]\n[[route]]\nupstream = \"app\"\n",
        log.display(),
        a.addr
    );
    let p = proxy(&toml).await;
    let (_, first, _) = get(&p.url("/first")).await;
    assert!(log_line(&log, &first).await.contains("GET /first "));

    // `nocreate`: moved away, nothing in its place.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let (_, second, _) = get(&p.url("/second")).await;
    assert!(log_line(&log, &second).await.contains("GET /second "));

    // `create`: moved away, and an empty file made in its place.
    let older = dir.path().join("access.log.2");
    std::fs::rename(&log, &older).unwrap();
    std::fs::File::create(&log).unwrap();
    let (_, third, _) = get(&p.url("/third")).await;
    assert!(log_line(&log, &third).await.contains("GET /third "));

    // Each rotated file holds its own lines and no later one.
    let lines = |path| -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| l.split('"').nth(1).unwrap_or(l).to_string())
            .collect()
    };
    assert_eq!(lines(&rotated), ["GET /first HTTP/1.1"]);
    assert_eq!(lines(&older), ["GET /second HTTP/1.1"]);
    assert_eq!(lines(&log), ["GET /third HTTP/1.1"]);
}
