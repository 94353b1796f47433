use super::*;

#[test]
fn answers_count_by_class_across_threads() {
    let m = Arc::new(Metrics::default());
    std::thread::scope(|s| {
        for _ in 0..12 {
            let m = m.clone();
            s.spawn(move || {
                for status in [101, 200, 204, 304, 404, 499, 502, 200] {
                    m.request();
                    m.answer(status, None);
                }
            });
        }
    });
    assert_eq!(m.sum(|s| &s.requests), 96);
    let by_class: Vec<u64> = (0..5).map(|i| m.sum(|s| &s.answers[i])).collect();
    assert_eq!(by_class, [12, 36, 12, 24, 12]);
}

/// The page from a compiled config alone: servers, certificates and
/// reloads before any request.
#[test]
fn the_page_shows_servers_and_certificates_of_the_config() {
    // A certificate from files: one made in memory has no end to watch
    // (a new one each start).
    let dir = tempfile::tempdir().unwrap();
    let dev = crate::tls::certs::self_signed(&["localhost".into()]).unwrap();
    std::fs::write(dir.path().join("c.pem"), &dev.cert_pem).unwrap();
    std::fs::write(dir.path().join("k.pem"), &dev.key_pem).unwrap();
    let toml = "[[listen]]\naddr = \"127.0.0.1:0\"\ntls = true\n\
                [[tls.cert]]\ncert = \"c.pem\"\nkey = \"k.pem\"\n\
                [upstream.app]\nservers = [\"127.0.0.1:8001\", { addr = \"unix:/run/a.sock\", backup = true }]\n\
                [[route]]\npath = \"/metrics\"\nmetrics = true\nallow = [\"127.0.0.1\"]\n\
                [[route]]\nupstream = \"app\"\n";
    let src = crate::config::Source {
        path: None,
        base_dir: dir.path().into(),
    };
    let snap = crate::config::load_str(toml, &src, None).unwrap_or_else(|e| panic!("{e}"));
    let state = State::new(snap);
    state.metrics.reloaded(false);
    let page = render(&state, &state.load());
    for line in [
        "portcullis_upstream_server_up{upstream=\"app\",server=\"127.0.0.1:8001\"} 1",
        "portcullis_upstream_server_up{upstream=\"app\",server=\"unix:/run/a.sock\"} 1",
        "portcullis_upstream_server_in_flight{upstream=\"app\",server=\"127.0.0.1:8001\"} 0",
        "portcullis_config_reloads_total{result=\"success\"} 0",
        "portcullis_config_reloads_total{result=\"failure\"} 1",
        "portcullis_requests_total 0",
        "portcullis_connections_parked 0",
    ] {
        assert!(page.lines().any(|l| l == line), "{line} in:\n{page}");
    }
    let expiry = page
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "portcullis_tls_certificate_expiry_timestamp_seconds{cert=\"0\",names=\"localhost\"} ",
            )
        })
        .unwrap_or_else(|| panic!("no expiry in:\n{page}"));
    let expiry: u64 = expiry.parse().unwrap();
    // The dev certificate runs a year from today.
    let now = unix_secs(SystemTime::now());
    assert!(
        (now + 360 * 86400..now + 370 * 86400).contains(&expiry),
        "{expiry}"
    );
    // No server started: no connection limit to read.
    assert!(!page.contains("portcullis_connections_open"), "{page}");
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(label(r#"unix:/run/a"b\c"#), r#"unix:/run/a\"b\\c"#);
    assert_eq!(label("a\nb"), r"a\nb");
}
