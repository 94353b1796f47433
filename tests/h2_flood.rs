//! HTTP/2 clients that send frames asking for nothing, in bulk: the proxy
//! closes such a connection once its control frames outweigh its requests
//! and the data it was served, and leaves a client that downloads a lot,
//! and acknowledges as much, alone.

mod common;

use common::*;
use tokio::io::AsyncWriteExt;

/// A WINDOW_UPDATE frame: `inc` more bytes on `stream` (0: the connection).
fn window_update(stream: u32, inc: u32) -> Vec<u8> {
    let mut f = vec![0, 0, 4, 0x08, 0];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(&inc.to_be_bytes());
    f
}

/// `n` bytes of WINDOW_UPDATE +1 on the connection, as one buffer.
fn updates(n: usize) -> Vec<u8> {
    window_update(0, 1).repeat(n / 13)
}

/// A proxy whose idle rule cannot be what closes a connection in a test.
async fn proxy_to(up: &Upstream) -> Proxy {
    proxy(&cfg(&format!(
        "[server]\nidle_timeout = \"600s\"\n\
         [upstream.app]\nservers = [\"{}\"]\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n",
        up.addr
    )))
    .await
}

#[tokio::test]
async fn a_flood_of_window_updates_closes_the_connection() {
    let up = fixed("ok").await;
    let p = proxy_to(&up).await;
    let mut s = tokio::net::TcpStream::connect(p.addrs[0]).await.unwrap();
    s.write_all(H2_PREFACE).await.unwrap();
    // A flood without end, until the writes fail: a client that stopped
    // would half-close its side, and the proxy would end on that.
    let flood = updates(64 << 10);
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move { while wr.write_all(&flood).await.is_ok() {} });
    let closed = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a connection flooded with WINDOW_UPDATE was kept"
    );
    writer.abort();
    // Other clients are served as before.
    let (status, _, body) = get(&p.url("/")).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
}

#[tokio::test]
async fn a_client_that_was_served_much_may_send_as_many_control_bytes() {
    let big: &'static str = Box::leak("x".repeat(2 << 20).into_boxed_str());
    let up = fixed(big).await;
    let p = proxy_to(&up).await;
    let mut s = tokio::net::TcpStream::connect(p.addrs[0]).await.unwrap();
    // The preface, then windows larger than the response, so that it
    // comes whole without further updates.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 6, 0x04, 0, 0, 0, 0, 0, 0, 0x04]);
    hello.extend_from_slice(&(16u32 << 20).to_be_bytes());
    hello.extend(window_update(0, 16 << 20));
    hello.extend(h2_get_frame(1));
    s.write_all(&hello).await.unwrap();
    assert_eq!(data_of(&mut s, 1).await, 2 << 20);
    // Now 1.5 MiB of control frames: more than a connection with no
    // requests may send, less than it and the 2 MiB served allow.
    s.write_all(&updates(3 << 19)).await.unwrap();
    s.write_all(&h2_get_frame(3)).await.unwrap();
    assert_eq!(
        data_of(&mut s, 3).await,
        2 << 20,
        "cut off after its downloads"
    );
}

/// The bytes of DATA on `stream` until its end, other frames skipped.
async fn data_of(s: &mut tokio::net::TcpStream, stream: u32) -> usize {
    let mut got = 0;
    loop {
        let (ty, flags, id, payload) = h2_frame(s).await;
        if ty == 0x03 || ty == 0x07 {
            panic!("stream reset or connection closed: frame type {ty}");
        }
        if id != stream {
            continue;
        }
        if ty == 0x00 {
            got += payload.len();
        }
        if flags & 0x01 != 0 {
            return got;
        }
    }
}
