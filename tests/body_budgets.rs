//! Request bodies read whole against the process-wide budgets: past the
//! memory budget a body goes to a temporary file instead of a 503, an
//! upload holds no upstream connection until it is whole, temporary files
//! are bounded by `max_connections`, and a chunk larger than `max_body` is
//! refused at its size line.

mod common;

use common::*;

/// The budgets (memory, files) are process-wide, and the tests of this
/// file run at once in one process: each holds this while it runs, so that
/// none sees another's bodies in them.
static BUDGETS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every request to `upstream`, with `extra_server` in `[server]`.
fn config(upstream: &str, extra_server: &str) -> String {
    format!(
        "[server]\n{extra_server}\n[[listen]]\naddr = \"127.0.0.1:0\"\n\n\
         [upstream.app]\nservers = [\"{upstream}\"]\n\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n"
    )
}

/// An upstream that keeps each request for `/held` until the test lets one
/// go (a permit each), and says when one has arrived; `answer` answers
/// every request once it may.
async fn holding_upstream<F, Fut>(
    answer: F,
) -> (
    Upstream,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    std::sync::Arc<tokio::sync::Semaphore>,
)
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = hyper::Response<Body>> + Send + 'static,
{
    let (arrived_tx, arrived) = tokio::sync::mpsc::unbounded_channel();
    let release = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let answer = std::sync::Arc::new(answer);
    let held = release.clone();
    let up = upstream(move |req| {
        let (arrived_tx, held, answer) = (arrived_tx.clone(), held.clone(), answer.clone());
        async move {
            if req.uri().path() == "/held" {
                let _ = arrived_tx.send(());
                held.acquire().await.unwrap().forget();
            }
            answer(req).await
        }
    })
    .await;
    (up, arrived, release)
}

#[tokio::test]
async fn bodies_past_the_memory_budget_go_to_a_temp_file_not_to_503() {
    let _budgets = BUDGETS.lock().await;
    let (up, mut arrived, release) = holding_upstream(|req| async move {
        // The length it was told, and the body itself.
        let length = req.headers().get("content-length").cloned();
        let body = http_body_util::BodyExt::collect(req.into_body()).await;
        let answer = format!(
            "{length:?} {}",
            String::from_utf8_lossy(&body.unwrap().to_bytes())
        );
        hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(answer)))
    })
    .await;
    let temp = tempfile::tempdir().unwrap();
    let p = proxy(&config(
        &up.addr,
        &format!(
            "max_body = \"1KiB\"\nmax_buffered = \"1KiB\"\nbody_temp_dir = \"{}\"",
            temp.path().display()
        ),
    ))
    .await;
    let a = p.addrs[0];
    let chunked = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             320\r\n{}\r\n0\r\n\r\n",
            "b".repeat(800)
        )
    };
    let whole_body_arrived = |resp: &str| {
        resp.starts_with("HTTP/1.1 200")
            && resp.ends_with(&format!("\r\n\r\nSome(\"800\") {}", "b".repeat(800)))
    };
    // 800 bytes read whole and held in memory while their upstream thinks...
    let first = chunked("/held");
    let held = tokio::spawn(async move { raw(a, first.as_bytes()).await });
    arrived.recv().await.unwrap();
    // ...leave no room in memory for 800 more: they go to a file, and the
    // upstream gets them whole, with a length.
    let resp = raw(a, chunked("/second").as_bytes()).await;
    assert!(whole_body_arrived(&resp), "{resp}");
    // Proof that it was the file: with the directory gone, the same
    // request cannot be kept anywhere and is refused, not held in memory.
    drop(temp);
    let resp = raw(a, chunked("/third").as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    // Once the first exchange is over its share of memory is given back.
    release.add_permits(1);
    assert!(whole_body_arrived(&held.await.unwrap()));
    let resp = raw(a, chunked("/fourth").as_bytes()).await;
    assert!(whole_body_arrived(&resp), "{resp}");
}

#[tokio::test]
async fn a_slow_upload_holds_no_upstream_connection_until_it_is_whole() {
    let _budgets = BUDGETS.lock().await;
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<String>();
    let up = upstream(move |req| {
        let arrived_tx = arrived_tx.clone();
        async move {
            let _ = arrived_tx.send(req.uri().path().to_string());
            echo_response(req).await
        }
    })
    .await;
    let p = proxy(&format!(
        "[[listen]]\naddr = \"127.0.0.1:0\"\n\
         [upstream.app]\nservers = [\"{0}\"]\n\
         [upstream.streamed]\nservers = [\"{0}\"]\nbuffer_requests = false\n\
         [[route]]\npath = \"/up\"\nupstream = \"app\"\n\
         [[route]]\npath = \"/streamed\"\nupstream = \"streamed\"\n",
        up.addr
    ))
    .await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let half = "h".repeat(1000);
    let head = |path: &str| {
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n{half}")
    };
    // Buffered (the default): the upstream is asked only once the body is
    // whole, so a client uploading slowly ties up no app worker. The wait
    // only gives a wrong proxy the time to show itself.
    let mut s = tokio::net::TcpStream::connect(p.addrs[0]).await.unwrap();
    s.write_all(head("/up").as_bytes()).await.unwrap();
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), arrived.recv()).await;
    assert!(
        early.is_err(),
        "the upstream was asked before the body was whole"
    );
    s.write_all(half.as_bytes()).await.unwrap();
    assert_eq!(arrived.recv().await.as_deref(), Some("/up"));
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.contains("\"body_len\":2000"),
        "{resp}"
    );

    // buffer_requests = false: the upstream gets the head and streams.
    let mut s = tokio::net::TcpStream::connect(p.addrs[0]).await.unwrap();
    s.write_all(head("/streamed").as_bytes()).await.unwrap();
    assert_eq!(arrived.recv().await.as_deref(), Some("/streamed"));
    s.write_all(half.as_bytes()).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    assert!(resp.contains("\"body_len\":2000"), "{resp}");
}

#[tokio::test]
async fn bodies_in_temp_files_are_as_many_as_max_connections_at_most() {
    let _budgets = BUDGETS.lock().await;
    // A temporary file is a descriptor: one HTTP/2 connection must not be
    // able to claim one per stream.
    let (up, mut arrived, release) = holding_upstream(echo_response).await;
    let p = proxy(&config(&up.addr, "max_connections = 2")).await;
    let (send, _conn) = h2_connect(p.addrs[0]).await;
    // 2 MiB: past max_body_in_memory, so each body is kept in a file.
    let post = move |path: &str| {
        let mut send = send.clone();
        let req = http::Request::post(format!("http://open.example{path}"))
            .body(http_body_util::Full::new(bytes::Bytes::from(vec![
                b'u';
                2 << 20
            ])))
            .unwrap();
        async move {
            let resp = send.send_request(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = http_body_util::BodyExt::collect(resp.into_body()).await;
            (
                status,
                String::from_utf8_lossy(&body.unwrap().to_bytes()).into_owned(),
            )
        }
    };
    // Two bodies in files, held while their upstream thinks...
    let held = [tokio::spawn(post("/held")), tokio::spawn(post("/held"))];
    arrived.recv().await.unwrap();
    arrived.recv().await.unwrap();
    // ...are as many as max_connections: a third is refused.
    let (status, _) = post("/third").await;
    assert_eq!(status, 503);
    // Their places come back with their answers.
    release.add_permits(2);
    for h in held {
        let (status, body) = h.await.unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("\"body_len\":2097152"), "{body}");
    }
    let (status, body) = post("/fourth").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"body_len\":2097152"), "{body}");
}

#[tokio::test]
async fn a_chunk_larger_than_max_body_is_refused_at_its_size_line() {
    let _budgets = BUDGETS.lock().await;
    let up = echo().await;
    // Read whole before the upstream is asked (the default), and streamed.
    let p = proxy(&format!(
        "[server]\nmax_body = \"1KiB\"\nidle_timeout = \"3s\"\n[[listen]]\naddr = \"127.0.0.1:0\"\n\
         [upstream.whole]\nservers = [\"{0}\"]\n\
         [upstream.streamed]\nservers = [\"{0}\"]\nbuffer_chunked = false\n\
         [[route]]\npath = \"/whole\"\nupstream = \"whole\"\n\
         [[route]]\npath = \"/streamed\"\nupstream = \"streamed\"\n",
        up.addr
    ))
    .await;
    for path in ["/whole", "/streamed"] {
        // A 1 MiB chunk announced, three bytes of it sent, and then nothing:
        // the answer comes now, not after 1 KiB more (which never comes)
        // or the idle timeout.
        let resp = raw(
            p.addrs[0],
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\nabc"
            )
            .as_bytes(),
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 413"), "{path}: {resp}");
    }
    // A body within max_body in chunks goes through as before.
    let resp = raw(
        p.addrs[0],
        b"POST /streamed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"body_len\":5"), "{resp}");
}
