//! `portcullis check`: every problem at once, with its place.

mod common;

use std::process::Command;

fn check(toml: &str) -> (i32, String, String) {
    common::check_cli(tempfile::tempdir().unwrap().path(), toml)
}

#[test]
fn three_mistakes_are_all_reported_with_their_places() {
    let (code, _, err) = check(
        r#"
[server]
idle_timeout = "sixty"
[[listen]]
addr = "0.0.0.0:8080"
[upstream.app]
servers = ["127.0.0.1:8001"]
[[route]]
path = "/api/"
upstream = "ap"
[[route]]
path = "/"
upstream = "app"
colour = "blue"
"#,
    );
    assert_eq!(code, 1);
    assert!(err.contains("3 problem(s)"), "{err}");
    assert!(
        err.contains("server.idle_timeout: \"sixty\" is not a duration"),
        "{err}"
    );
    assert!(
        err.contains("route[0].upstream: no upstream named \"ap\""),
        "{err}"
    );
    assert!(
        err.contains("route[1].colour: unknown field `colour`"),
        "{err}"
    );
}

#[test]
fn a_server_with_a_password_is_refused_and_not_printed() {
    let (code, out, err) = check(
        r#"
[[listen]]
addr = "127.0.0.1:8080"
[upstream.app]
servers = ["http://django:hunter2@127.0.0.1:8000"]
[[route]]
upstream = "app"
"#,
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("upstream.app.servers[0]: a user name or password in a server address"),
        "{err}"
    );
    assert!(
        !out.contains("hunter2") && !err.contains("hunter2"),
        "{out}{err}"
    );
}

#[test]
fn good_config_prints_a_summary() {
    let (code, out, _) = check(
        r#"
[[listen]]
addr = "127.0.0.1:8080"
[upstream.app]
servers = [{ addr = "127.0.0.1:8009", backup = true }, "127.0.0.1:8001", "unix:/run/app.sock"]
[upstream.events]
servers = ["127.0.0.1:8002"]
buffer_responses = false
[upstream.small]
servers = ["127.0.0.1:8003"]
max_read_ahead = "0"
[[route]]
path = "/api/"
upstream = "app"
timeout = "5m"
[[route]]
path = "/admin/"
upstream = "app"
allow = ["10.0.0.0/8", "::1"]
deny = ["10.0.0.5"]
rate_limit = { rate = "10r/s", burst = 20 }
"#,
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("route[1] */admin/ -> upstream app allow=10.0.0.0/8,::1/128 deny=10.0.0.5/32 rate=10r/s burst=20"),
        "{out}"
    );
    assert!(out.contains("listen   127.0.0.1:8080"), "{out}");
    assert!(
        out.contains("upstream app: 127.0.0.1:8001, unix:/run/app.sock, 127.0.0.1:8009 (backup) (RoundRobin), answers read ahead of slow clients, up to 1GiB each in a file"),
        "{out}"
    );
    assert!(
        out.contains("upstream events: 127.0.0.1:8002 (RoundRobin), answers at the client's pace"),
        "{out}"
    );
    assert!(
        out.contains("upstream small: 127.0.0.1:8003 (RoundRobin), answers read ahead of slow clients, in memory only"),
        "{out}"
    );
    assert!(
        out.contains("route[0] */api/ -> upstream app timeout=300s\n"),
        "{out}"
    );
    // Where bodies read whole go: defaults.
    let tmp = std::env::temp_dir();
    assert!(
        out.contains(&format!(
            "bodies   up to 10MiB; read whole, up to 1MiB each in memory (256MiB in all), larger in {} (1GiB in all)",
            tmp.display()
        )),
        "{out}"
    );

    // Where the workers would run: a list is used round robin.
    let cpu = portcullis::workers::allowed_cpus().unwrap()[0];
    let (code, out, _) = check(&format!(
        "[server]\nthreads = 3\ncpu_affinity = [{cpu}]\n[[listen]]\naddr = \"127.0.0.1:8080\"\n\
         [[route]]\nrespond = {{ body = \"x\" }}\n"
    ));
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!(
            "workers  3, bound to CPUs [{cpu}, {cpu}, {cpu}], scheduling policy batch, nice -3"
        )),
        "{out}"
    );
    let (_, out, _) = check(
        "[server]\nthreads = 3\ncpu_affinity = \"off\"\nscheduling_policy = \"other\"\n[[listen]]\naddr = \"127.0.0.1:8080\"\n\
         [[route]]\nrespond = { body = \"x\" }\n",
    );
    assert!(
        out.contains("workers  3, not bound to CPUs, scheduling policy other, nice 0"),
        "{out}"
    );
}

#[test]
fn a_users_file_that_mixes_bcrypt_costs_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (cheap, dear) = (bcrypt::hash("a", 4).unwrap(), bcrypt::hash("b", 5).unwrap());
    std::fs::write(
        dir.path().join("one"),
        format!("ann:{cheap}\ncal:{cheap}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("mixed"),
        format!("ann:{cheap}\nbea:{dear}\n"),
    )
    .unwrap();
    let toml = |file: &str| {
        format!(
            "[[listen]]\naddr = \"127.0.0.1:8080\"\n[[route]]\nbasic_auth = {{ users = \"{file}\" }}\n\
             respond = {{ body = \"x\" }}\n"
        )
    };
    let (code, out, _) = common::check_cli(dir.path(), &toml("one"));
    assert_eq!(code, 0);
    assert!(out.contains("basic_auth=2 users cost=4\n"), "{out}");
    // Accepted, since refusing would lock everyone out on a reload, and
    // said, since a refusal's time now tells ann from the others.
    let (code, out, _) = common::check_cli(dir.path(), &toml("mixed"));
    assert_eq!(code, 0);
    assert!(
        out.contains("basic_auth=2 users cost=4..5(mixed)\n"),
        "{out}"
    );
}

#[test]
fn the_example_config_checks() {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "check",
            "-c",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn syntax_error_names_the_line() {
    let (code, _, err) = check("[server\nthreads = 2\n");
    assert_eq!(code, 1);
    assert!(
        err.contains("TOML syntax") && err.contains("line 1"),
        "{err}"
    );
}

#[test]
fn a_report_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    // `portcullis check | head -1`, with head gone before the first line.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "check",
            "-c",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"),
        ])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{err}");
}
