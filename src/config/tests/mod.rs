//! Unit tests of the config compiler: defaults, the forms each key takes,
//! and what a reload carries over; every error with its place, and what an
//! error never repeats, in errors.rs.

mod errors;
mod pages;

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
    assert_eq!(s.server.max_concurrent_streams, 256);
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
[upstream.stream]
servers = ["127.0.0.1:8003"]
buffer_responses = false
max_read_ahead = "0"
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
    assert!(up.settings.buffer_responses, "nginx's proxy_buffering on");
    assert!(!s.upstreams["stream"].settings.buffer_responses);
    assert_eq!(up.settings.max_read_ahead, 1 << 30, "nginx's 1024m");
    assert_eq!(s.upstreams["stream"].settings.max_read_ahead, 0);
    let h = up.settings.health.as_ref().unwrap();
    assert_eq!(h.path, "/healthz");
    assert_eq!(h.expect, vec![(200, 299), (301, 301)]);
    assert_eq!((h.unhealthy, h.healthy), (3, 2));
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
fn a_route_max_body_overrides_the_server_one_and_max_spilled_follows() {
    let routes = "[[route]]\npath = \"/upload\"\nrespond = { body = \"x\" }\nmax_body = \"2GiB\"\n\
                  [[route]]\npath = \"/api\"\nrespond = { body = \"x\" }\nmax_body = \"64KiB\"\n\
                  [[route]]\nrespond = { body = \"x\" }\n";
    let s = ok(&format!("{LISTEN}{routes}"));
    let body = |path: &str| s.router.find("example.com", path).unwrap().max_body;
    assert_eq!(body("/upload/x"), 2 << 30);
    assert_eq!(body("/api/x"), 64 << 10);
    assert_eq!(body("/other"), 10 << 20, "the server's");
    // Unset, max_spilled grows to the largest body a route takes.
    assert_eq!(s.server.max_spilled, 2 << 30);
    assert_eq!(s.server.max_body, 10 << 20, "the server's own is unchanged");
    // Set, it is a bound the route must fit in; the error names the route.
    let e = errs(&format!(
        "[server]\nmax_spilled = \"1GiB\"\n{LISTEN}{routes}"
    ));
    assert_eq!(
        e,
        ["route[0].max_body: must be at most server.max_spilled: a body that size could never be kept"]
    );
    let e = errs(&format!(
        "{LISTEN}[[route]]\nrespond = {{ body = \"x\" }}\nmax_body = \"big\"\n"
    ));
    assert!(
        e.len() == 1 && e[0].starts_with("route[0].max_body: \"big\" is not a size"),
        "{e:?}"
    );
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

#[test]
fn allow_and_deny_forms_and_errors() {
    let route = |rules: &str| {
        format!("{LISTEN}[[route]]\npath = \"/admin/\"\nrespond = {{ body = \"x\" }}\n{rules}\n[[route]]\nrespond = {{ body = \"y\" }}\n")
    };
    let s = ok(&route(
        "allow = [\"10.0.0.0/8\", \" 192.168.1.7 \", \"2001:db8::/32\"]\ndeny = [\"10.0.0.5\"]",
    ));
    let rules = s
        .router
        .find("", "/admin/x")
        .unwrap()
        .addrs
        .as_ref()
        .unwrap();
    assert!(rules.admits("192.168.1.7".parse().unwrap()));
    assert!(rules.admits("10.200.0.1".parse().unwrap()));
    assert!(!rules.admits("10.0.0.5".parse().unwrap()));
    assert!(!rules.admits("192.168.1.8".parse().unwrap()));
    // A route without either key has no rules: nothing is checked.
    assert!(s.router.find("", "/other").unwrap().addrs.is_none());
    // "all", as nginx writes it, is every IPv4 and IPv6 address.
    let s = ok(&route("deny = [\"all\"]"));
    let rules = s
        .router
        .find("", "/admin/")
        .unwrap()
        .addrs
        .as_ref()
        .unwrap();
    assert!(!rules.admits("203.0.113.1".parse().unwrap()));
    assert!(!rules.admits("::1".parse().unwrap()));
    let s = ok(&route("allow = [\"ALL\"]\ndeny = [\"127.0.0.1\"]"));
    let rules = s
        .router
        .find("", "/admin/")
        .unwrap()
        .addrs
        .as_ref()
        .unwrap();
    assert!(rules.admits("2001:db8::1".parse().unwrap()));
    assert!(!rules.admits("127.0.0.1".parse().unwrap()));

    assert_eq!(
        errs(&route(
            "allow = [\"10.0.0.0/8\", \"intranet\"]\ndeny = [\"10.0.0.0/33\"]"
        )),
        [
            "route[0].allow[1]: \"intranet\" is not an IP address or CIDR like \"10.0.0.0/8\"",
            "route[0].deny[0]: \"10.0.0.0/33\" is not an IP address or CIDR like \"10.0.0.0/8\"",
        ]
    );
    let e = errs(&route("allow = []"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("route[0].allow: an empty list would admit no client"),
        "{e:?}"
    );
}

#[test]
fn rate_limit_forms_and_errors() {
    let route = |limit: &str| {
        format!("{LISTEN}[[route]]\npath = \"/login/\"\nrespond = {{ body = \"x\" }}\nrate_limit = {limit}\n")
    };
    let s = ok(&route("{ rate = \"30/m\" }"));
    let l = s
        .router
        .find("", "/login/")
        .unwrap()
        .rate_limit
        .clone()
        .unwrap();
    assert_eq!((l.rate.as_str(), l.burst), ("30/m", 0));
    assert_eq!(
        errs(&route("{ rate = \"fast\", burst = 2000000 }")),
        [
            "route[0].rate_limit.burst: must be at most 1000000",
            "route[0].rate_limit.rate: \"fast\" is not a rate like \"10/s\", \"30/m\" or \"100/h\"",
        ]
    );
    let e = errs(&route("{ rate = \"0/s\" }"));
    assert!(
        e[0].starts_with("route[0].rate_limit.rate: \"0/s\": a rate of 0"),
        "{e:?}"
    );
    let e = errs(&route("{ burst = 5 }"));
    assert!(e[0].contains("missing field `rate`"), "{e:?}");
    // Never held in a queue: nginx's `nodelay` is how it always is.
    let e = errs(&route("{ rate = \"1/s\", nodelay = true }"));
    assert!(e[0].contains("unknown field `nodelay`"), "{e:?}");
    let e = errs(&route("{ rate = \"1/s\", zone = \" \" }"));
    assert_eq!(e, ["route[0].rate_limit.zone: an empty name"]);
}

#[test]
fn routes_in_one_zone_share_one_limit_of_one_rate() {
    let route = |path: &str, limit: &str| {
        format!(
            "[[route]]\npath = \"{path}\"\nrespond = {{ body = \"x\" }}\nrate_limit = {limit}\n"
        )
    };
    let zoned = "{ rate = \"5/m\", burst = 3, zone = \"login\" }";
    let s = ok(&format!(
        "{LISTEN}{}{}{}",
        route("/a/", zoned),
        route("/b/", zoned),
        route("/c/", "{ rate = \"5/m\", burst = 3 }")
    ));
    let limit = |p: &str| {
        s.router
            .find("example.com", p)
            .unwrap()
            .rate_limit
            .clone()
            .unwrap()
    };
    assert!(Arc::ptr_eq(&limit("/a/"), &limit("/b/")));
    assert!(
        !Arc::ptr_eq(&limit("/a/"), &limit("/c/")),
        "no zone: its own"
    );
    assert_eq!(limit("/a/").zone.as_deref(), Some("login"));
    let e = errs(&format!(
        "{LISTEN}{}{}",
        route("/a/", zoned),
        route("/b/", "{ rate = \"10/m\", burst = 3, zone = \"login\" }")
    ));
    assert_eq!(
        e,
        ["route[1].rate_limit.zone: zone \"login\" is rate \"5/m\", burst 3 at route[0].rate_limit: the routes that share a zone share its rate and burst"]
    );
}

#[test]
fn compress_goes_with_upstream_routes() {
    let s = ok(&format!(
        "{LISTEN}[upstream.app]\nservers = [\"127.0.0.1:8001\"]\n[[route]]\nupstream = \"app\"\ncompress = true\n"
    ));
    assert!(s.router.find("", "/").unwrap().compress);
    let e = errs(&format!(
        "{LISTEN}[[route]]\nstatic = \"/srv/static\"\ncompress = true\n"
    ));
    assert!(
        e.iter()
            .any(|l| l.starts_with("route[0].compress: goes with upstream")),
        "{e:?}"
    );
}
