//! Where connections are served when worker threads run: spread evenly
//! over the workers, each kept on its worker for its whole life. Its own
//! test binary, because the workers are process-wide and another test's
//! connections would change their counts.

mod common;

use common::*;
use std::collections::HashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that answers each request with the number of the
/// connection it came on (1, 2, ...), keeping every connection open.
async fn numbering_upstream() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut s, _)) = l.accept().await {
            n += 1;
            let id = n.to_string();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // The proxy sends GETs without bodies: a request ends
                    // with its head.
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{id}",
                            id.len()
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
            });
        }
    });
    addr
}

/// One keep-alive request on `s`; the response's body.
async fn ask(s: &mut TcpStream) -> String {
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let len: usize = text[..end]
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .expect("a Content-Length");
        if text.len() >= end + 4 + len {
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            return text[end + 4..end + 4 + len].to_string();
        }
    }
}

#[tokio::test]
async fn connections_are_spread_evenly_over_the_workers_and_stay_on_theirs() {
    portcullis::workers::start(
        2,
        &portcullis::state::Affinity::Off,
        portcullis::state::SchedPolicy::Batch,
        portcullis::state::Nice {
            value: 0,
            explicit: true,
        },
    )
    .unwrap();
    let up = numbering_upstream().await;
    let p = proxy(&common::backend::config(&format!("servers = [\"{up}\"]"))).await;

    // Each worker keeps its own pool of upstream connections, and requests
    // made one after another need only one: the upstream connection a
    // request comes back on names the worker serving its client. Six
    // clients, each connected once the one before it was served, all kept
    // open.
    let mut clients = Vec::new();
    let mut per_worker: HashMap<String, usize> = HashMap::new();
    for _ in 0..6 {
        let mut s = TcpStream::connect(p.addrs[0]).await.unwrap();
        *per_worker.entry(ask(&mut s).await).or_default() += 1;
        clients.push(s);
    }
    let mut counts: Vec<usize> = per_worker.values().copied().collect();
    counts.sort();
    assert_eq!(counts, vec![3, 3], "clients per worker: {per_worker:?}");

    // Each client stays on its worker: asking again comes back on the same
    // upstream connection as before.
    let mut again: HashMap<String, usize> = HashMap::new();
    for s in &mut clients {
        *again.entry(ask(s).await).or_default() += 1;
    }
    assert_eq!(again, per_worker);
}
