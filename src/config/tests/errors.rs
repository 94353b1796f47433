//! Every error names its key, a broken entry hides no other error, and no
//! error repeats a credential, a secret or a key pasted in the wrong place.

use super::*;

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
max_concurrent_streams = 0
[log]
format = "xml"
[[listen]]
addr = "localhost:80"
[upstream.app]
servers = ["127.0.0.1:8001", "127.0.0.1:8001", { addr = "127.0.0.1:8003", weight = 0 }]
balance = "fastest"
keepalive_requests = 0
max_read_ahead = "a lot"
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
        "upstream.app.max_read_ahead: \"a lot\" is not a size",
        "route[0].path: \"api\" must start with /",
        "server.max_body_in_memory: must be at most max_buffered",
        "server.max_spilled: must be at least max_body",
        "server.max_concurrent_streams: must be from 1 to 65536",
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
fn an_upstream_that_fails_to_compile_causes_no_follow_up_on_its_routes() {
    let e = errs(&format!(
        r#"{LISTEN}
[upstream.app]
servers = ["not an address"]
[upstream.app2]
servers = []
[[route]]
upstream = "app"
[[route]]
path = "/x"
upstream = "ap"
"#
    ));
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e[0].starts_with("upstream.app.servers[0]: \"not an address\""),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("upstream.app2.servers: no servers"),
        "{e:?}"
    );
    // "ap" begins "app" and "app2" but is neither: still named.
    assert!(
        e[2].starts_with("route[1].upstream: no upstream named \"ap\""),
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
fn bad_health_settings_are_reported_with_their_place() {
    let e = errs(&format!(
        "{LISTEN}[upstream.app]\nservers = [\"127.0.0.1:9\"]\n\
         [upstream.app.health]\npath = \"healthz\"\nhost = \"\"\nexpect = [200, \"2xy\", 700]\n\
         unhealthy = 0\ninterval = \"soon\"\n"
    ))
    .join("\n");
    for want in [
        "upstream.app.health.path: must start with /",
        "upstream.app.health.host: not a valid Host header value",
        "upstream.app.health.expect[1]:",
        "upstream.app.health.expect[2]:",
        "upstream.app.health: healthy and unhealthy must be at least 1",
        "upstream.app.health.interval:",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    assert!(!e.contains("expect[0]"), "{e}");
}

#[test]
fn backup_servers_go_after_the_primaries_and_one_primary_is_needed() {
    let s = ok(&format!(
        r#"{LISTEN}
[upstream.app]
servers = [{{ addr = "127.0.0.1:8009", backup = true }}, "127.0.0.1:8001", {{ addr = "unix:/run/b.sock", backup = true, weight = 2 }}, {{ addr = "127.0.0.1:8002", weight = 3, backup = false }}]
"#
    ));
    let up = &s.upstreams["app"];
    let order: Vec<&str> = up.servers.iter().map(|s| &*s.label).collect();
    assert_eq!(
        order,
        [
            "127.0.0.1:8001",
            "127.0.0.1:8002",
            "127.0.0.1:8009",
            "unix:/run/b.sock"
        ]
    );
    assert_eq!(up.weights, [1, 3, 1, 2]);
    assert_eq!(up.primaries, 2);
    assert!(!up.is_backup(1) && up.is_backup(2));

    let e = errs(&format!(
        "{LISTEN}[upstream.app]\nservers = [{{ addr = \"127.0.0.1:8001\", backup = true }}]\n"
    ));
    assert_eq!(
        e,
        ["upstream.app.servers: every server is a backup: at least one must take requests while all are well"]
    );
    // A primary that is refused is still no reason for that error.
    let e = errs(&format!(
        "{LISTEN}[upstream.app]\nservers = [\"http://127.0.0.1:1\", {{ addr = \"127.0.0.1:8001\", backup = true }}]\n"
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("upstream.app.servers[0]: write"), "{e:?}");
    let e = errs(&format!(
        "{LISTEN}[upstream.app]\nservers = [{{ addr = \"127.0.0.1:8001\", backup = \"yes\" }}]\n"
    ));
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("upstream.app.servers[0]"), "{e:?}");
}

#[test]
fn a_route_timeout_goes_with_upstream_and_is_more_than_zero() {
    let s = ok(&format!(
        "{LISTEN}[upstream.app]\nservers = [\"127.0.0.1:8001\"]\n\
         [[route]]\npath = \"/reports/\"\nupstream = \"app\"\ntimeout = \"5m\"\n\
         [[route]]\nupstream = \"app\"\n"
    ));
    let t = |p: &str| s.router.find("", p).unwrap().timeout;
    assert_eq!(t("/reports/x"), Some(Duration::from_secs(300)));
    assert_eq!(t("/"), None, "the upstream's timeout");
    let e = errs(&format!(
        "{LISTEN}[[route]]\npath = \"/a/\"\nrespond = {{ body = \"x\" }}\ntimeout = \"5s\"\n\
         [upstream.app]\nservers = [\"127.0.0.1:8001\"]\n\
         [[route]]\npath = \"/b/\"\nupstream = \"app\"\ntimeout = \"0s\"\n\
         [[route]]\npath = \"/c/\"\nupstream = \"app\"\ntimeout = \"soon\"\n"
    ));
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e[0].starts_with("route[0].timeout: goes with upstream"),
        "{e:?}"
    );
    assert_eq!(e[1], "route[1].timeout: must be more than 0s");
    assert!(e[2].starts_with("route[2].timeout: "), "{e:?}");
}

#[test]
fn a_metrics_route_says_who_may_read_it_and_is_only_that() {
    let s = ok(&format!(
        "{LISTEN}[[route]]\npath = \"/metrics\"\nmetrics = true\nallow = [\"127.0.0.1\"]\n"
    ));
    let r = s.router.find("", "/metrics").unwrap();
    assert!(matches!(r.action, crate::router::Action::Metrics));
    // Its histograms are why requests are timed; without it, none is.
    assert!(s.timed);
    let without = ok(&format!(
        "{LISTEN}[[route]]\npath = \"/\"\nrespond = {{ body = \"x\" }}\n"
    ));
    assert!(!without.timed);
    let e = errs(&format!(
        "{LISTEN}[[route]]\npath = \"/metrics\"\nmetrics = true\n\
         [[route]]\npath = \"/m2\"\nmetrics = true\nrespond = {{ body = \"x\" }}\nallow = [\"127.0.0.1\"]\n\
         [[route]]\npath = \"/m3\"\nmetrics = true\ncompress = true\nallow = [\"127.0.0.1\"]\n\
         [[route]]\npath = \"/m4\"\nmetrics = false\n"
    ));
    assert_eq!(e.len(), 4, "{e:?}");
    assert!(
        e[0].starts_with("route[0].metrics: say who may read it: allow"),
        "{e:?}"
    );
    assert!(e[1].starts_with("route[1]: more than one action"), "{e:?}");
    assert!(
        e[2].starts_with("route[2].compress: goes with upstream"),
        "{e:?}"
    );
    assert!(e[3].starts_with("route[3]: no action"), "{e:?}");
}
