//! A relative `unix:` server path is resolved against the config file's
//! directory, like every other path in the file, so an example config can
//! name `unix:run/gunicorn.sock` next to itself and work from any cwd.

mod common;
use common::*;

#[tokio::test]
async fn relative_unix_socket_path_is_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("run")).unwrap();
    let app = unix_upstream(&dir.path().join("run/app.sock"), |_req| async {
        hyper::Response::new(Body::from("from the socket"))
    })
    .await;
    let p = proxy_in(
        dir,
        r#"
[log]
access = "off"
[[listen]]
addr = "127.0.0.1:0"
[upstream.app]
servers = ["unix:run/app.sock"]
[[route]]
upstream = "app"
"#,
    )
    .await;
    // The test's cwd is the crate root, where run/app.sock does not exist.
    assert!(!std::path::Path::new("run/app.sock").exists());
    let (status, _, body) = get(&p.url("/x")).await;
    assert_eq!((status, body.as_str()), (200, "from the socket"));
    assert_eq!(app.hits(), 1);
}
