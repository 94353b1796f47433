//! Answers read ahead of slow clients (`buffer_responses`, nginx's
//! `proxy_buffering`): behind a server with one sync worker, as gunicorn's
//! default, a client that does not read must not keep the worker, and so
//! every other client, waiting.

mod common;

use bytes::Bytes;
use common::slow::*;
use common::*;
use http::Request;
use http_body_util::BodyExt;

#[tokio::test]
async fn a_client_that_does_not_read_leaves_the_one_worker_free_for_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("app.sock");
    let mut done = sync_worker(&sock, Framing::Length, "");
    let temp = dir.path().join("tmp");
    std::fs::create_dir(&temp).unwrap();
    let p = proxy(&config(
        &sock,
        &format!("body_temp_dir = \"{}\"", temp.display()),
    ))
    .await;

    let mut slow = stalled_request(&p).await;
    assert_eq!(answered(&mut done).await, "/big");
    // The one worker is free: the next client is served while the first
    // has still read nothing.
    let (status, _, body) = get(&p.url("/small")).await;
    assert_eq!((status, body.as_str()), (200, "small"));
    assert_eq!(answered(&mut done).await, "/small");
    // What the sockets between cannot hold (32 MiB less a few) is in a
    // file, and the metrics say so (for the whole test process, in which
    // other tests read ahead too: at least this one's).
    let (_, _, page) = get(&p.url("/metrics")).await;
    assert!(metric(&page, "portcullis_answers_read_ahead_total") >= 1);
    assert!(
        metric(
            &page,
            "portcullis_bodies_held_bytes{place=\"answer_files\"}"
        ) >= 16 << 20,
        "{page}"
    );

    let (head, body) = read_answer(&mut slow).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_whole(&body);
}

#[tokio::test]
async fn an_http2_client_that_does_not_read_leaves_the_worker_free_too() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("app.sock");
    let mut done = sync_worker(&sock, Framing::Length, "");
    let p = proxy(&config(&sock, "")).await;
    let (mut send, _conn) = h2_connect(p.addrs[0]).await;
    let req = |path: &str| {
        Request::get(p.url(path))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap()
    };
    // The body is not read: the stream's flow-control window closes after
    // a few MiB, and the proxy may send no more.
    let big = send.send_request(req("/big")).await.unwrap();
    assert_eq!(big.status(), 200);
    assert_eq!(answered(&mut done).await, "/big");

    let small = send.send_request(req("/small")).await.unwrap();
    let body = small.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"small");

    let body = big.into_body().collect().await.unwrap().to_bytes();
    assert_whole(&body);
}

/// With little room to read ahead into (64 KiB in memory, 4 MiB on disk),
/// the answer is read ahead up to it and then at the client's pace: the
/// worker finishes only once the client reads, and the client gets every
/// byte in order, through memory, the file, the file emptied and filled
/// again.
#[tokio::test]
async fn past_its_room_a_chunked_answer_goes_at_the_clients_pace_whole() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("app.sock");
    let mut done = sync_worker(&sock, Framing::Chunked, "");
    let server = format!(
        "max_body = \"1MiB\"\nmax_body_in_memory = \"64KiB\"\nmax_spilled = \"4MiB\"\nbody_temp_dir = \"{}\"",
        dir.path().display()
    );
    let p = proxy(&config(&sock, &server)).await;
    let mut slow = stalled_request(&p).await;
    let (head, body) = read_answer(&mut slow).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_whole(&body);
    assert_eq!(answered(&mut done).await, "/big");
}

/// An app that streams (events, progress) says so with nginx's
/// `X-Accel-Buffering: no`; the field is for the proxy, not the client.
#[tokio::test]
async fn x_accel_buffering_is_heeded_and_not_passed_on() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("app.sock");
    let mut done = sync_worker(
        &sock,
        Framing::Chunked,
        "X-Accel-Buffering: no\r\nX-App: kept\r\n",
    );
    let p = proxy(&config(&sock, "")).await;
    let mut c = stalled_request(&p).await;
    let (head, body) = read_answer(&mut c).await;
    assert!(head.contains("x-app: kept"), "{head}");
    assert!(!head.contains("x-accel-buffering"), "{head}");
    assert_whole(&body);
    assert_eq!(answered(&mut done).await, "/big");
}

/// A route's `compress`: the gzip encoder between the app's body and the
/// client is told of the stall too, and the client gets the whole answer,
/// compressed.
#[tokio::test]
async fn a_compressed_answer_is_read_ahead_too() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("app.sock");
    let mut done = sync_worker(&sock, Framing::Length, "Content-Type: text/plain\r\n");
    let cfg = config(&sock, "").replace(
        "upstream = \"app\"\n",
        "upstream = \"app\"\ncompress = true\n",
    );
    let p = proxy(&cfg).await;
    let mut slow = stalled_request_with(&p, "Accept-Encoding: gzip\r\n").await;
    assert_eq!(answered(&mut done).await, "/big");
    let (head, body) = read_answer(&mut slow).await;
    assert!(head.contains("content-encoding: gzip"), "{head}");
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut plain)
        .expect("a whole gzip stream");
    assert_whole(&plain);
}
