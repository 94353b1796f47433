use super::held::{Seg, Spool, State};
use super::*;

fn state() -> State {
    State::new()
}

fn limits(in_memory: u64, dir: &std::path::Path) -> Limits {
    Limits {
        in_memory,
        memory: u64::MAX / 2,
        dir: dir.to_path_buf(),
        on_disk: 1 << 30,
        in_file: 1 << 30,
        files: 1000,
    }
}

/// Everything held, taken as the client would.
fn drain(st: &mut State) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(d) = st.take() {
        out.extend_from_slice(&d.expect("read back"));
    }
    out
}

fn piece(byte: u8, n: usize) -> Bytes {
    Bytes::from(vec![byte; n])
}

fn in_file(st: &State) -> u64 {
    st.segs
        .iter()
        .map(|s| match s {
            Seg::File { len, .. } => *len,
            Seg::Mem(_) => 0,
        })
        .sum()
}

#[test]
fn pieces_come_back_in_order_from_memory_then_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let l = limits(10_000, dir.path());
    let mut st = state();
    let mut sent = Vec::new();
    for (i, n) in [6_000, 3_000, 5_000, 200_000, 7].into_iter().enumerate() {
        let d = piece(b'a' + i as u8, n);
        sent.extend_from_slice(&d);
        st.store(d, &l).expect("room in memory or the file");
    }
    assert_eq!(
        st.mem.held(),
        9_007,
        "the first two pieces in memory, and the last, which fits again"
    );
    assert_eq!(in_file(&st), 205_000, "the two past the 10,000 in the file");
    assert_eq!(drain(&mut st), sent);
    assert_eq!(st.mem.held(), 0, "the memory share given back");
}

#[test]
fn the_file_starts_again_once_the_client_has_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let l = limits(0, dir.path());
    let mut st = state();
    st.store(piece(b'x', 100), &l).unwrap();
    st.store(piece(b'y', 50_000), &l).unwrap();
    let Spool::Open { file, end, .. } = &st.spool else {
        panic!("a file for the second piece");
    };
    assert_eq!((*end, file.metadata().unwrap().len()), (50_000, 50_000));
    let mut got = drain(&mut st);
    let Spool::Open { file, end, .. } = &st.spool else {
        panic!("the file is kept for the next pieces");
    };
    assert_eq!(
        (*end, file.metadata().unwrap().len()),
        (0, 0),
        "rewound and emptied"
    );
    // A piece after the rewind lands at the file's start, and a new one
    // comes back whole.
    st.store(piece(b'z', 10), &l).unwrap();
    st.store(piece(b'w', 20), &l).unwrap();
    got.extend(drain(&mut st));
    let mut want = vec![b'x'; 100];
    want.extend([b'y'; 50_000]);
    want.extend([b'z'; 10]);
    want.extend([b'w'; 20]);
    assert_eq!(got, want);
}

#[test]
fn without_a_file_a_piece_waits_until_the_client_takes_what_is_held() {
    let l = limits(1_000, std::path::Path::new("/nonexistent/portcullis-ahead"));
    let mut st = state();
    st.store(piece(b'a', 800), &l).unwrap();
    let back = st
        .store(piece(b'b', 800), &l)
        .expect_err("no room in memory and no file");
    assert_eq!(back, piece(b'b', 800), "the piece is handed back whole");
    assert!(matches!(st.spool, Spool::Off));
    assert_eq!(drain(&mut st), vec![b'a'; 800]);
    st.store(back, &l)
        .expect("with nothing held, a piece always goes");
    assert_eq!(drain(&mut st), vec![b'b'; 800]);
}

#[test]
fn past_the_disk_budget_a_piece_waits_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = limits(0, dir.path());
    l.on_disk = 0;
    let mut st = state();
    st.store(piece(b'a', 10), &l).unwrap();
    assert!(st.store(piece(b'b', 10), &l).is_err());
    assert_eq!(in_file(&st), 0);
}

#[test]
fn an_answer_keeps_at_most_its_max_read_ahead_in_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = limits(0, dir.path());
    l.in_file = 25_000;
    let mut st = state();
    st.store(piece(b'a', 10), &l).unwrap();
    st.store(piece(b'b', 20_000), &l).unwrap();
    let back = st
        .store(piece(b'c', 10_000), &l)
        .expect_err("20,000 + 10,000 past 25,000");
    assert_eq!(in_file(&st), 20_000);
    let mut got = drain(&mut st);
    st.store(back, &l).expect("the file emptied");
    got.extend(drain(&mut st));
    let mut want = vec![b'a'; 10];
    want.extend([b'b'; 20_000]);
    want.extend([b'c'; 10_000]);
    assert_eq!(got, want);
    // 0: memory only, no file ever made.
    l.in_file = 0;
    let mut st = state();
    st.store(piece(b'a', 10), &l).unwrap();
    assert!(st.store(piece(b'b', 10), &l).is_err());
    assert!(matches!(st.spool, Spool::None));
}

#[test]
fn a_piece_larger_than_the_memory_share_goes_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let l = limits(1_000, dir.path());
    let mut st = state();
    st.store(piece(b'a', 10), &l).unwrap();
    st.store(piece(b'b', 5_000), &l).unwrap();
    st.store(piece(b'c', 10), &l).unwrap();
    assert_eq!(st.mem.held(), 20, "the small pieces in memory");
    assert_eq!(in_file(&st), 5_000);
    let mut want = vec![b'a'; 10];
    want.extend([b'b'; 5_000]);
    want.extend([b'c'; 10]);
    assert_eq!(drain(&mut st), want);
}

mod armed {
    //! When an answer starts to be read ahead, on a socket pair.
    use crate::http::IdleTimer;
    use crate::upstream::ahead::Limits;
    use crate::upstream::body::UpstreamBody;
    use crate::upstream::connect::Stream;
    use crate::upstream::h1::{Conn, SendBody};
    use crate::upstream::pool::InflightGuard;
    use crate::upstream::{Server, ServerAddr, UpstreamSettings};
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;

    const BODY: usize = 300_000;

    fn server() -> Arc<Server> {
        let settings = UpstreamSettings {
            keepalive: 4,
            keepalive_timeout: Duration::from_secs(60),
            ..crate::upstream::tests::settings()
        };
        Arc::new(Server::new(
            ServerAddr::Unix("/nonexistent".into()),
            &settings,
        ))
    }

    fn limits() -> Limits {
        Limits {
            in_memory: 1 << 20,
            memory: 1 << 30,
            dir: std::env::temp_dir(),
            on_disk: 1 << 30,
            in_file: 1 << 30,
            files: 100,
        }
    }

    /// An answer of `BODY` bytes: its head and the first `first` bytes at
    /// once, the rest when `rest` is sent.
    async fn answer(first: usize) -> (UpstreamBody, Arc<Server>, tokio::sync::oneshot::Sender<()>) {
        let (a, mut b) = UnixStream::pair().unwrap();
        let (rest, go) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut req = [0u8; 1024];
            let _ = b.read(&mut req).await.unwrap();
            let body = vec![b'x'; BODY];
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n");
            b.write_all(head.as_bytes()).await.unwrap();
            b.write_all(&body[..first]).await.unwrap();
            let _ = go.await;
            b.write_all(&body[first..]).await.unwrap();
            let mut end = Vec::new();
            let _ = b.read_to_end(&mut end).await;
        });
        let srv = server();
        let mut conn = Conn::new(Stream::Unix(a), IdleTimer::new(Arc::default()));
        let (parts, _) = http::Request::get("/").body(()).unwrap().into_parts();
        let head = conn
            .exchange(&parts, &mut SendBody::None, Duration::from_secs(60))
            .await
            .unwrap();
        // Let the first bytes arrive behind the head.
        if first == BODY {
            while conn.buf.len() < BODY {
                std::future::poll_fn(|cx| conn.poll_fill(cx)).await.unwrap();
            }
        }
        let guard = InflightGuard::new(srv.clone());
        let body = UpstreamBody::new(conn, head.framing, head.keep_alive, guard);
        (body, srv, rest)
    }

    #[tokio::test]
    async fn an_armed_answer_is_read_ahead_once_its_client_stalls() {
        let (mut body, srv, rest) = answer(1000).await;
        body.read_ahead(limits(), false);
        assert!(!body.is_ahead(), "armed, decoded as the client takes it");
        body.client_stalled();
        assert!(body.is_ahead());
        rest.send(()).unwrap();
        // The connection goes back to its pool with nothing taken yet by
        // the client: the body was read to its end ahead of it.
        tokio::time::timeout(Duration::from_secs(10), async {
            while srv.pool.idle_count() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the connection back in the pool");
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(got.len(), BODY);
        assert!(got.iter().all(|&b| b == b'x'));
        srv.pool.clear();
    }

    #[tokio::test]
    async fn an_answer_already_whole_is_never_read_ahead() {
        let (mut body, srv, _rest) = answer(BODY).await;
        assert!(body.is_whole());
        body.read_ahead(limits(), true);
        body.client_stalled();
        assert!(!body.is_ahead());
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), BODY);
        assert_eq!(srv.pool.idle_count(), 1);
        srv.pool.clear();
    }
}
