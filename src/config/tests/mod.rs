//! Unit tests of the config compiler: defaults, every error with its place,
//! and what a reload carries over.

use super::{load_str, Errors, Source};
use crate::state::{AccessTarget, ListenKind, Snapshot};
use crate::upstream::{Balance, ServerAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

fn src() -> Source {
    Source {
        path: None,
        base_dir: PathBuf::from("/etc/portcullis"),
    }
}

fn ok(toml: &str) -> Snapshot {
    load_str(toml, &src(), None).unwrap_or_else(|e| panic!("{e}"))
}

fn errs(toml: &str) -> Vec<String> {
    match load_str(toml, &src(), None) {
        Ok(_) => panic!("config compiled but should not"),
        Err(Errors(v)) => v.iter().map(|e| e.to_string()).collect(),
    }
}

const LISTEN: &str = "[[listen]]\naddr = \"127.0.0.1:8080\"\n";

#[test]
fn defaults_match_the_contract() {
    let s = ok(LISTEN);
    assert_eq!(s.server.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(s.server.max_connections, 10_000);
    assert_eq!(s.server.header_timeout, Duration::from_secs(10));
    assert_eq!(s.server.idle_timeout, Duration::from_secs(60));
    assert_eq!(s.server.max_body, 10 << 20);
    assert_eq!(s.server.max_buffered, 256 << 20);
    assert_eq!(s.server.max_body_in_memory, 1 << 20);
    assert_eq!(s.server.body_temp_dir, std::env::temp_dir());
    assert_eq!(s.server.max_spilled, 1 << 30);
    assert!(s.server.watch);
    assert!(s.server.threads >= 1);
    assert_eq!(s.log.level, "info");
    assert_eq!(s.log.access, AccessTarget::Stdout);
    assert_eq!(s.listeners[0].kind, ListenKind::Plain);
    assert!(s.listeners[0].defer_accept);
}

#[test]
fn defer_accept_can_be_turned_off_per_listener() {
    let s = ok("[[listen]]\naddr = \"127.0.0.1:80\"\ndefer_accept = false\n[[listen]]\naddr = \"127.0.0.1:81\"\n");
    assert_eq!(
        s.listeners
            .iter()
            .map(|l| l.defer_accept)
            .collect::<Vec<_>>(),
        [false, true]
    );
    let e = errs("[[listen]]\naddr = \"127.0.0.1:80\"\ndefer_accept = \"no\"\n");
    assert_eq!(
        e,
        ["listen[0].defer_accept: invalid type: string \"no\", expected a boolean"]
    );
}

#[test]
fn upstream_settings_and_server_forms() {
    let s = ok(&format!(
        r#"{LISTEN}
[upstream.app]
servers = ["unix:/run/gunicorn/app.sock", "127.0.0.1:8001", {{ addr = "127.0.0.1:8002", weight = 3 }}]
balance = "least_conn"
connect_timeout = "500ms"
retries = 2
[upstream.app.health]
path = "/healthz"
expect = ["2xx", 301]
"#
    ));
    let up = &s.upstreams["app"];
    assert_eq!(
        up.servers[0].addr,
        ServerAddr::Unix("/run/gunicorn/app.sock".into())
    );
    assert_eq!(up.servers[1].addr, ServerAddr::Tcp("127.0.0.1:8001".into()));
    assert_eq!(up.weights, vec![1, 1, 3]);
    assert_eq!(up.settings.balance, Balance::LeastConn);
    assert_eq!(up.settings.connect_timeout, Duration::from_millis(500));
    assert_eq!(up.settings.retries, 2);
    assert_eq!(up.settings.keepalive, 32);
    assert_eq!(up.settings.keepalive_requests, 1000, "nginx's default");
    let h = up.settings.health.as_ref().unwrap();
    assert_eq!(h.path, "/healthz");
    assert_eq!(h.expect, vec![(200, 299), (301, 301)]);
    assert_eq!((h.unhealthy, h.healthy), (3, 2));
}

#[test]
fn a_server_address_with_credentials_is_refused_without_repeating_it() {
    const S: &str = "hunter2-topsecret";
    let up = |servers: &str| format!("{LISTEN}[upstream.app]\nservers = {servers}\n");
    for (toml, expected) in [
        (up(&format!("[\"http://u:{S}@app:8000\"]")), "upstream.app.servers[0]: a user name or password in a server address is not supported"),
        (up(&format!("[\"u:{S}@app:8000\"]")), "upstream.app.servers[0]: a user name or password"),
        (up(&format!("[\"127.0.0.1:8001\", {{ addr = \"u:{S}@app:8000\", weight = 2 }}]")), "upstream.app.servers[1]: a user name or password"),
        (up(&format!("\"http://u:{S}@app:8000\"")), "upstream.app.servers: expected a list of servers"),
        (
            format!("{LISTEN}[upstream.app]\nservers = [\"127.0.0.1:8001\"]\n[[route]]\nupstream = \"http://u:{S}@app:8000\"\n"),
            "route[0].upstream: names an [upstream.NAME], not an address",
        ),
    ] {
        let e = errs(&toml);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with(expected), "{e:?}");
        assert!(!e[0].contains(S) && !e[0].contains('@'), "{e:?}");
    }
    // A scheme is refused, not taken as part of the host name.
    let e = errs(&up("[\"http://app:8000/\", \"https://app:8443\"]"));
    assert_eq!(
        e,
        [
            "upstream.app.servers[0]: write \"app:8000\", without http:// (servers are spoken to in plain HTTP)",
            "upstream.app.servers[1]: write \"app:8443\", without https:// (servers are spoken to in plain HTTP)",
        ]
    );
    // A Unix socket path may hold '@' (systemd template instances).
    let s = ok(&up("[\"unix:/run/gunicorn@app.sock\"]"));
    assert_eq!(
        s.upstreams["app"].servers[0].addr,
        ServerAddr::Unix("/run/gunicorn@app.sock".into())
    );
}

#[test]
fn every_error_is_reported_with_its_place() {
    let e = errs(
        r#"
[server]
max_body = "lots"
max_buffered = "1MiB"
max_body_in_memory = "2MiB"
max_spilled = "512KiB"
body_temp_dir = "/nonexistent/portcullis-bodies"
trusted_proxies = ["10.0.0.0/8", "not-an-ip"]
[log]
format = "xml"
[[listen]]
addr = "localhost:80"
[upstream.app]
servers = ["127.0.0.1:8001", "127.0.0.1:8001", { addr = "127.0.0.1:8003", weight = 0 }]
balance = "fastest"
keepalive_requests = 0
[[route]]
path = "api"
upstream = "app"
[[route]]
upstream = "app"
respond = { body = "x" }
[[route]]
path = "/r"
redirect = "https://example.com/"
status = 200
"#,
    );
    let want = [
        "server.max_body: \"lots\" is not a size",
        "server.trusted_proxies[1]: \"not-an-ip\" is not an IP address",
        "log.format: \"xml\" is not one of combined, json",
        "listen[0].addr: \"localhost:80\" is not an IP:port address",
        "upstream.app.servers[1]: 127.0.0.1:8001 is listed twice",
        "upstream.app.servers[2].weight: must be between 1 and 1000",
        "upstream.app.balance: \"fastest\" is not one of",
        "upstream.app.keepalive_requests: must be at least 1",
        "route[0].path: \"api\" must start with /",
        "server.max_body_in_memory: must be at most max_buffered",
        "server.max_spilled: must be at least max_body",
        "server.body_temp_dir: cannot make a file in /nonexistent/portcullis-bodies:",
        "route[1]: more than one action",
        "route[2].status: a redirect status is one of",
    ];
    for w in want {
        assert!(
            e.iter().any(|l| l.starts_with(w)),
            "missing {w:?} in:\n{}",
            e.join("\n")
        );
    }
}

#[test]
fn route_prefixes_must_be_written_as_requests_are_matched() {
    let route =
        |path: &str| format!("{LISTEN}[[route]]\npath = {path:?}\nrespond = {{ body = \"x\" }}\n");
    for good in ["/", "/api/", "/api", "/caf%C3%A9/", "/a%2Fb/"] {
        ok(&route(good));
    }
    let cases = [
        ("/api//v1/", "write \"/api/v1/\""),
        ("/static/../api/", "write \"/api/\""),
        ("/%61pi/", "write \"/api/\""),
        ("/caf%c3%a9/", "write \"/caf%C3%A9/\""),
        ("/café/", "'é' cannot be in a path prefix"),
        ("/a b/", "' ' cannot be in a path prefix"),
        ("/api?x=1", "'?' cannot be in a path prefix"),
        ("/../", "goes above the root"),
    ];
    for (path, want) in cases {
        let e = errs(&route(path));
        assert!(
            e.iter()
                .any(|l| l.starts_with("route[0].path: ") && l.contains(want)),
            "{path}: missing {want:?} in {e:?}"
        );
    }
}

#[test]
fn a_broken_entry_does_not_hide_other_errors_or_cause_follow_ups() {
    let e = errs(&format!(
        r#"{LISTEN}
[upstream.app]
servers = ["127.0.0.1:8001"]
keepalive = "lots"
[[route]]
upstream = "app"
[[route]]
path = "/x"
upstream = "missing"
"#
    ));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("upstream.app.keepalive: invalid type"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("route[1].upstream: no upstream named \"missing\""),
        "{e:?}"
    );
}

#[test]
fn a_value_of_the_wrong_type_is_placed_at_its_key() {
    let mut e = errs(&format!(
        r#"{LISTEN}[server]
threads = "two"
[upstream.app]
servers = ["127.0.0.1:8001", {{ addr = "127.0.0.1:8002", weight = "x" }}]
[[route]]
respond = {{ status = "x" }}
[[route]]
static = {{ root = "/srv", index = "index.html" }}
"#
    ));
    e.sort();
    let expected = [
        "route[0].respond.status: invalid type: string \"x\", expected u16",
        "route[1].static: expected a directory",
        "server.threads: invalid type: string \"two\"",
        "upstream.app.servers[1]: expected an address",
    ];
    assert_eq!(e.len(), expected.len(), "{e:?}");
    for (line, start) in e.iter().zip(expected) {
        assert!(line.starts_with(start), "{e:?}");
    }
}

#[test]
fn a_secret_written_the_wrong_way_is_never_repeated_in_an_error() {
    const S: &str = "hunter2-topsecret";
    let policy =
        |secret: &str| format!("{LISTEN}[jwt.api]\nalgorithms = [\"HS256\"]\nsecret = {secret}\n");
    for (secret, expected) in [
        (format!("\"{S}\""), "jwt.api.secret: expected { env = \"NAME\" }, { file = \"path\" } or { value = \"...\" }"),
        (format!("{{ value = [\"{S}\"] }}"), "jwt.api.secret: value must be a string"),
        ("{ value = 8675309 }".to_string(), "jwt.api.secret: value must be a string"),
        (format!("{{ valu = \"{S}\" }}"), "jwt.api.secret: unknown key `valu`"),
        (format!("{{ env = \"{S}\" }}"), "jwt.api.secret.env: the environment variable named here is not set"),
        (format!("{{ value = \"{S}\" x }}"), "TOML syntax at line 5, column "),
    ] {
        let e = errs(&policy(&secret));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].trim_start().starts_with(expected), "{e:?}");
        assert!(!e[0].contains(S) && !e[0].contains("8675309"), "{e:?}");
    }
    let snap = ok(&policy(&format!("{{ value = \"{S}\" }}")));
    assert!(snap.policies.contains_key("api"));
}

#[test]
fn a_value_where_a_table_belongs_is_never_repeated() {
    const S: &str = "hunter2-topsecret";
    for (body, expected) in [
        (
            format!("[jwt]\nsecret = \"{S}\"\n"),
            "jwt.secret: must be a table: each entry of [jwt] is a [jwt.NAME] table",
        ),
        (
            format!("[jwt]\nalgorithms = [\"HS256\"]\nsecret = {{ value = \"{S}\" }}\n"),
            "jwt.algorithms: must be a table",
        ),
        (format!("jwt = {{ api = [\"{S}\"] }}\n"), "jwt.api: must be a table"),
        (
            format!("[upstream]\nservers = [\"http://u:{S}@app:8000\"]\n"),
            "upstream.servers: must be a table: each entry of [upstream] is a [upstream.NAME] table",
        ),
        (format!("route = [\"{S}\"]\n"), "route[0]: must be a table: [[route]]"),
        (format!("tls = \"{S}\"\n"), "tls: must be a table: [tls]"),
    ] {
        let e = errs(&format!("{body}{LISTEN}"));
        assert!(e.iter().any(|l| l.starts_with(expected)), "{e:?}");
        assert!(!e.iter().any(|l| l.contains(S)), "{e:?}");
    }
}

#[test]
fn a_pem_key_pasted_where_its_path_goes_is_not_repeated() {
    const BODY: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg";
    // A certificate that reads, so that the key is what fails.
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("site.crt");
    let dev = crate::tls::certs::self_signed(&["localhost".into()]).unwrap();
    std::fs::write(&cert, dev.cert_pem).unwrap();
    let e = errs(&format!(
        "{LISTEN}[[tls.cert]]\ncert = {cert:?}\n\
         key = \"\"\"\n-----BEGIN PRIVATE KEY-----\n{BODY}\n-----END PRIVATE KEY-----\n\"\"\"\n"
    ));
    assert!(!e.iter().any(|l| l.contains(BODY)), "{e:?}");
    assert_eq!(
        e,
        ["tls.cert[0].key: the path of a PEM file goes here, not its content (the value given is not shown)"]
    );
}

#[test]
fn unknown_keys_and_sections_are_errors() {
    let e = errs(&format!(
        "{LISTEN}[serverz]\nthreads = 1\n[[route]]\nrespond = {{ body = \"x\" }}\ncolor = 1\n"
    ));
    assert!(
        e.iter().any(|l| l.starts_with("serverz: unknown section")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|l| l.starts_with("route[0].color: unknown field `color`")),
        "{e:?}"
    );
}

#[test]
fn listeners_need_an_entry_and_unique_addresses() {
    assert!(errs("")
        .iter()
        .any(|l| l.starts_with("listen: no [[listen]] entry")));
    let e = errs("[[listen]]\naddr = \"127.0.0.1:80\"\n[[listen]]\naddr = \"127.0.0.1:80\"\n");
    assert!(
        e.iter()
            .any(|l| l.starts_with("listen[1].addr: 127.0.0.1:80 is listed twice")),
        "{e:?}"
    );
    let e = errs("[[listen]]\naddr = \"127.0.0.1:80\"\ntls = true\nredirect_https = true\n");
    assert!(
        e.iter()
            .any(|l| l.starts_with("listen[0]: tls and redirect_https exclude each other")),
        "{e:?}"
    );
}

#[test]
fn relative_log_paths_resolve_against_the_config_directory() {
    let s = ok(&format!("{LISTEN}[log]\naccess = \"logs/access.log\"\n"));
    assert_eq!(
        s.log.access,
        AccessTarget::File("/etc/portcullis/logs/access.log".into())
    );
}

#[test]
fn reload_keeps_servers_that_stay_and_makes_new_ones() {
    let first = ok(&format!(
        "{LISTEN}[upstream.app]\nservers = [\"127.0.0.1:8001\", \"127.0.0.1:8002\"]\n"
    ));
    let second = load_str(
        &format!("{LISTEN}[upstream.app]\nservers = [\"127.0.0.1:8002\", \"127.0.0.1:8003\"]\nkeepalive = 4\n"),
        &src(),
        Some(&first),
    )
    .unwrap();
    let old = &first.upstreams["app"].servers;
    let new = &second.upstreams["app"].servers;
    assert!(
        Arc::ptr_eq(&old[1], &new[0]),
        "server 8002 should carry over"
    );
    assert!(
        !old.iter().any(|o| Arc::ptr_eq(o, &new[1])),
        "server 8003 is new"
    );
}

#[test]
fn config_hash_is_stable() {
    let a = ok(LISTEN);
    let b = ok(LISTEN);
    assert_eq!(a.hash, b.hash);
    assert_ne!(a.hash, ok(&format!("{LISTEN}\n")).hash);
}

#[test]
fn cpu_affinity_forms_and_errors() {
    use crate::state::Affinity;
    assert_eq!(ok(LISTEN).server.cpu_affinity, Affinity::Auto);
    let with = |v: &str| format!("[server]\ncpu_affinity = {v}\n{LISTEN}");
    assert_eq!(ok(&with("\"auto\"")).server.cpu_affinity, Affinity::Auto);
    assert_eq!(ok(&with("\"off\"")).server.cpu_affinity, Affinity::Off);
    // A CPU this test may run on: the check is against the process's set.
    let cpu = crate::workers::allowed_cpus().unwrap()[0];
    assert_eq!(
        ok(&with(&format!("[{cpu}]"))).server.cpu_affinity,
        Affinity::Cpus(vec![cpu])
    );

    for bad in ["\"on\"", "true", "[]"] {
        let e = errs(&with(bad));
        assert_eq!(e.len(), 1, "{bad}: {e:?}");
        assert!(
            e[0].starts_with("server.cpu_affinity: must be \"auto\", \"off\" or a list"),
            "{bad}: {e:?}"
        );
    }
    let e = errs(&with(&format!("[{cpu}, -1, \"x\", 100000]")));
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e[0].starts_with("server.cpu_affinity[1]: must be a CPU number"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("server.cpu_affinity[2]: must be a CPU number"),
        "{e:?}"
    );
    assert!(
        e[2].starts_with("server.cpu_affinity[3]: CPU 100000 is not one this process may run on ["),
        "{e:?}"
    );
}

#[test]
fn scheduling_policy_forms_and_errors() {
    use crate::state::SchedPolicy;
    assert_eq!(ok(LISTEN).server.scheduling_policy, SchedPolicy::Batch);
    let with = |v: &str| format!("[server]\nscheduling_policy = {v}\n{LISTEN}");
    assert_eq!(
        ok(&with("\"batch\"")).server.scheduling_policy,
        SchedPolicy::Batch
    );
    assert_eq!(
        ok(&with("\"other\"")).server.scheduling_policy,
        SchedPolicy::Other
    );
    let e = errs(&with("\"fifo\""));
    assert_eq!(
        e,
        vec!["server.scheduling_policy: must be \"batch\" or \"other\"".to_string()]
    );
}

#[test]
fn nice_follows_the_policy_unless_given() {
    use crate::state::Nice;
    let nice = |server: &str| ok(&format!("[server]\n{server}\n{LISTEN}")).server.nice;
    let default = |value| Nice {
        value,
        explicit: false,
    };
    let given = |value| Nice {
        value,
        explicit: true,
    };
    // Precedence pays under SCHED_BATCH only (state.rs, Nice::default_for).
    assert_eq!(nice(""), default(-3));
    assert_eq!(nice("scheduling_policy = \"other\""), default(0));
    assert_eq!(nice("nice = 0"), given(0));
    assert_eq!(nice("nice = -20"), given(-20));
    assert_eq!(nice("scheduling_policy = \"other\"\nnice = -3"), given(-3));
    assert_eq!(nice("nice = 19"), given(19));
    for bad in ["nice = -21", "nice = 20", "nice = 100000000000"] {
        assert_eq!(
            errs(&format!("[server]\n{bad}\n{LISTEN}")),
            vec!["server.nice: must be an integer from -20 to 19".to_string()],
            "{bad}"
        );
    }
    let e = errs(&format!("[server]\nnice = \"-5\"\n{LISTEN}"));
    assert!(e.len() == 1 && e[0].starts_with("server.nice"), "{e:?}");
}

#[test]
fn max_body_in_memory_follows_a_smaller_max_buffered() {
    // A config from before max_body_in_memory, with a small budget, still
    // compiles: the default comes down to the budget.
    let s = ok(&format!(
        "[server]\nmax_body = \"100KiB\"\nmax_buffered = \"200KiB\"\n{LISTEN}"
    ));
    assert_eq!(s.server.max_body_in_memory, 200 << 10);
    // max_spilled grows with a max_body past its default of 1 GiB.
    let s = ok(&format!("[server]\nmax_body = \"2GiB\"\n{LISTEN}"));
    assert_eq!(s.server.max_spilled, 2 << 30);
    // Relative to the config file, as every path.
    let dir = tempfile::tempdir().unwrap();
    let src = Source {
        path: None,
        base_dir: dir.path().to_path_buf(),
    };
    std::fs::create_dir(dir.path().join("bodies")).unwrap();
    let toml = format!("[server]\nbody_temp_dir = \"bodies\"\n{LISTEN}");
    let s = load_str(&toml, &src, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.server.body_temp_dir, dir.path().join("bodies"));
}
