//! Behind a server with one sync worker, as gunicorn's default: what the
//! tests of answers read ahead of slow clients (`buffer_responses`) share.

use super::Proxy;
use bytes::Bytes;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener};
use tokio::sync::mpsc;

/// Larger than every socket buffer between the app and a client that reads
/// nothing (a few MiB each on loopback): without reading ahead, the app
/// cannot finish writing it.
pub const BIG: usize = 32 << 20;

/// `BIG` bytes that show one lost, doubled or out of place, and that gzip
/// cannot shrink (a compressed answer must fill the sockets too).
pub fn big_body() -> &'static [u8] {
    static BODY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BODY.get_or_init(|| {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..BIG)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    })
}

/// How the worker frames `/big`.
#[derive(Clone, Copy)]
pub enum Framing {
    Length,
    Chunked,
}

/// An app server with one sync worker, as gunicorn's default: one
/// connection at a time, `Connection: close`, each answer written whole
/// before the next connection is accepted. `/big` is `BIG` bytes, the rest
/// a short text; each path is sent on `done` once its answer is written.
pub fn sync_worker(
    path: &Path,
    framing: Framing,
    extra: &'static str,
) -> mpsc::UnboundedReceiver<String> {
    let l = UnixListener::bind(path).unwrap();
    let (done, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let body = Bytes::from_static(big_body());
        while let Ok((mut s, _)) = l.accept().await {
            let mut head = Vec::new();
            let mut b = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&b[..n]),
                }
            }
            let line = String::from_utf8_lossy(&head).into_owned();
            let path = line.split(' ').nth(1).unwrap_or("").to_string();
            let sent = if path == "/big" {
                match framing {
                    Framing::Length => {
                        let h = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\nConnection: close\r\n{extra}\r\n"
                        );
                        s.write_all(h.as_bytes()).await.is_ok() && s.write_all(&body).await.is_ok()
                    }
                    Framing::Chunked => {
                        let h = format!(
                            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n{extra}\r\n"
                        );
                        let mut ok = s.write_all(h.as_bytes()).await.is_ok();
                        for piece in body.chunks(50_000) {
                            let mut c = format!("{:x}\r\n", piece.len()).into_bytes();
                            c.extend_from_slice(piece);
                            c.extend_from_slice(b"\r\n");
                            ok = ok && s.write_all(&c).await.is_ok();
                        }
                        ok && s.write_all(b"0\r\n\r\n").await.is_ok()
                    }
                }
            } else {
                s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nsmall",
                )
                .await
                .is_ok()
            };
            if sent {
                let _ = done.send(path);
            }
        }
    });
    rx
}

pub fn config(sock: &Path, server: &str) -> String {
    format!(
        "[server]\n{server}\n[log]\naccess = \"off\"\n[[listen]]\naddr = \"127.0.0.1:0\"\n\
         [upstream.app]\nservers = [\"unix:{}\"]\n[[route]]\npath = \"/\"\nupstream = \"app\"\n\
         [[route]]\npath = \"/metrics\"\nmetrics = true\nallow = [\"127.0.0.1\"]\n",
        sock.display()
    )
}

/// The next path the worker has answered whole; a failure after 30 s, far
/// past what the test needs, rather than a hang.
pub async fn answered(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("the worker never finished writing its answer: held by a client that does not read")
        .expect("the worker is gone")
}

/// Ask for `/big` on a raw HTTP/1.1 connection and read nothing yet.
pub async fn stalled_request(p: &Proxy) -> TcpStream {
    stalled_request_with(p, "").await
}

pub async fn stalled_request_with(p: &Proxy, fields: &str) -> TcpStream {
    let mut c = TcpStream::connect(p.addrs[0]).await.unwrap();
    let req = format!("GET /big HTTP/1.1\r\nHost: app\r\n{fields}\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    c
}

/// Read a whole HTTP/1.1 answer from `c`: its head and its body, decoded
/// by its framing.
pub async fn read_answer(c: &mut TcpStream) -> (String, Vec<u8>) {
    let mut all = Vec::new();
    let mut b = vec![0u8; 256 * 1024];
    let end = loop {
        if let Some(at) = all.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = c.read(&mut b).await.unwrap();
        assert!(n > 0, "closed inside the head");
        all.extend_from_slice(&b[..n]);
    };
    let head = String::from_utf8_lossy(&all[..end]).to_ascii_lowercase();
    let mut rest = all.split_off(end);
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
    {
        let len: usize = len.trim().parse().unwrap();
        while rest.len() < len {
            let n = c.read(&mut b).await.unwrap();
            assert!(n > 0, "closed after {} of {len} bytes", rest.len());
            rest.extend_from_slice(&b[..n]);
        }
        return (head, rest);
    }
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(at) = rest.windows(2).position(|w| w == b"\r\n") {
                break at;
            }
            let n = c.read(&mut b).await.unwrap();
            assert!(n > 0, "closed inside a chunk size");
            rest.extend_from_slice(&b[..n]);
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16).unwrap();
        while rest.len() < line_end + 2 + size + 2 {
            let n = c.read(&mut b).await.unwrap();
            assert!(n > 0, "closed inside a chunk");
            rest.extend_from_slice(&b[..n]);
        }
        body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
        rest.drain(..line_end + 2 + size + 2);
        if size == 0 {
            return (head, body);
        }
    }
}

pub fn assert_whole(body: &[u8]) {
    assert_eq!(body.len(), BIG, "the body's length");
    let want = big_body();
    if let Some(i) = (0..BIG).find(|&i| body[i] != want[i]) {
        panic!("byte {i} is {}, not {}", body[i], want[i]);
    }
}

/// A series' value on a metrics page; a failure names the page.
pub fn metric(page: &str, series: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{page}"))
}
