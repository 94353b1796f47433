//! A client that goes away while its answer is read ahead: the reading
//! stops, and what the answer held, in memory and on disk, is given back.
//! A test binary of its own, since those bytes are counted for the whole
//! process.

mod common;

use common::slow::*;
use common::*;
use std::time::Duration;

#[tokio::test]
async fn a_client_that_leaves_gives_back_what_its_answer_held() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("app.sock");
    let mut done = sync_worker(&sock, Framing::Length, "");
    let server = format!("body_temp_dir = \"{}\"", dir.path().display());
    let p = proxy(&config(&sock, &server)).await;
    let held = |page: &str, place: &str| {
        metric(
            page,
            &format!("portcullis_bodies_held_bytes{{place=\"{place}\"}}"),
        )
    };

    let slow = stalled_request(&p).await;
    assert_eq!(answered(&mut done).await, "/big");
    let (_, _, page) = get(&p.url("/metrics")).await;
    assert!(held(&page, "answer_files") >= 16 << 20, "{page}");
    assert!(held(&page, "memory") > 0, "{page}");

    drop(slow);
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (_, _, page) = get(&p.url("/metrics")).await;
            if held(&page, "answer_files") == 0 && held(&page, "memory") == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the answer's memory and file given back once its client left");
    // And the one worker serves the next client.
    let (status, _, body) = get(&p.url("/small")).await;
    assert_eq!((status, body.as_str()), (200, "small"));
}
