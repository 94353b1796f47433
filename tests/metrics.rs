//! A `metrics` route through the running proxy, read as Prometheus reads
//! it: answers counted by class, an upstream server that died shown down,
//! reloads counted by result, the route closed to other clients, and the
//! latency histograms.

mod common;

use common::backend::named;
use common::*;

/// The value of one series (`name` or `name{labels}`) on the page.
fn metric(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{page}"))
}

/// A connection that has been answered once and stays open.
async fn keep_alive(p: &Proxy) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(p.addrs[0]).await.unwrap();
    s.write_all(b"GET /app/x HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"live") {
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    s
}

async fn scrape(p: &Proxy) -> String {
    let (status, headers, page) = get(&p.url("/metrics")).await;
    assert_eq!(status, 200, "{page}");
    let ct = headers["content-type"].to_str().unwrap();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert_eq!(headers["cache-control"], "no-store");
    page
}

#[tokio::test]
async fn metrics_count_answers_and_show_servers_and_reloads() {
    let live = named("live").await;
    let mut dead = named("dead").await;
    dead.kill().await;
    let text = |extra: &str| {
        cfg(&format!(
            "[upstream.app]\nservers = [\"{}\", \"{}\"]\nmax_fails = 1\nfail_timeout = \"1h\"\n\
             [[route]]\npath = \"/metrics\"\nmetrics = true\nallow = [\"127.0.0.1\"]\n\
             [[route]]\npath = \"/office/metrics\"\nmetrics = true\nallow = [\"10.0.0.0/8\"]\n\
             [[route]]\npath = \"/app/\"\nupstream = \"app\"\n{extra}",
            live.addr, dead.addr
        ))
    };
    let p = proxy(&text("")).await;
    // Round robin sends one of these to the dead server first: its
    // connection is refused, it is taken out, and the retry answers.
    for _ in 0..4 {
        assert_eq!(get(&p.url("/app/x")).await.2, "live");
    }
    assert_eq!(get(&p.url("/nothing")).await.0, 404);
    assert_eq!(get(&p.url("/office/metrics")).await.0, 403);

    let page = scrape(&p).await;
    // The scrape is a request whose answer is not counted yet.
    assert_eq!(metric(&page, "portcullis_requests_total"), 7.0);
    for (class, n) in [
        ("1xx", 0.0),
        ("2xx", 4.0),
        ("3xx", 0.0),
        ("4xx", 2.0),
        ("5xx", 0.0),
    ] {
        let series = format!("portcullis_responses_total{{code=\"{class}\"}}");
        assert_eq!(metric(&page, &series), n, "{class}");
    }
    let up =
        |addr: &str| format!("portcullis_upstream_server_up{{upstream=\"app\",server=\"{addr}\"}}");
    assert_eq!(metric(&page, &up(&live.addr)), 1.0);
    assert_eq!(metric(&page, &up(&dead.addr)), 0.0);
    // The dead server was tried once, failed, and was out for the rest;
    // the live one answered all four, a retry among them.
    for (family, addr, n) in [
        ("requests", &live.addr, 4.0),
        ("failures", &live.addr, 0.0),
        ("requests", &dead.addr, 1.0),
        ("failures", &dead.addr, 1.0),
    ] {
        let series = format!(
            "portcullis_upstream_server_{family}_total{{upstream=\"app\",server=\"{addr}\"}}"
        );
        assert_eq!(metric(&page, &series), n, "{series}");
    }
    assert_eq!(metric(&page, "portcullis_connections_max"), 10_000.0);
    let reloads = |r: &str| format!("portcullis_config_reloads_total{{result=\"{r}\"}}");
    assert_eq!(metric(&page, &reloads("success")), 0.0);
    assert_eq!(metric(&page, &reloads("failure")), 0.0);
    // Every series has its HELP and TYPE.
    for l in page.lines().filter(|l| !l.starts_with('#')) {
        let name = l.split(['{', ' ']).next().unwrap();
        // A histogram's series are named after its family.
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| page.contains(&format!("# TYPE {f} histogram\n")))
            .unwrap_or(name);
        assert!(page.contains(&format!("# TYPE {name} ")), "{name}");
        assert!(page.contains(&format!("# HELP {name} ")), "{name}");
    }

    // A broken file, then a good one.
    std::fs::write(&p.config_path, "[[route]]\npath = 1\n").unwrap();
    assert!(p.server.reload().await.is_err());
    let loaded_before = metric(&page, "portcullis_config_loaded_timestamp_seconds");
    std::fs::write(
        &p.config_path,
        text("[[route]]\npath = \"/b\"\nrespond = { body = \"b\" }\n"),
    )
    .unwrap();
    p.server.reload().await.expect("reload");
    let page = scrape(&p).await;
    assert_eq!(metric(&page, &reloads("success")), 1.0);
    assert_eq!(metric(&page, &reloads("failure")), 1.0);
    assert!(metric(&page, "portcullis_config_loaded_timestamp_seconds") >= loaded_before);
    assert_eq!(metric(&page, "portcullis_requests_total"), 8.0);
    assert_eq!(
        metric(&page, "portcullis_responses_total{code=\"2xx\"}"),
        5.0
    );

    // Two keep-alive connections held open, and the scrape's own: three,
    // once the closed clients' connections have ended (not the accept
    // loop's place kept for the next one).
    let _held = [keep_alive(&p).await, keep_alive(&p).await];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let open = metric(&scrape(&p).await, "portcullis_connections_open");
        if open == 3.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{open} open");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Read-only: another method is refused.
    let post = http::Request::post(p.url("/metrics"))
        .body(Body::default())
        .unwrap();
    assert_eq!(send(post).await.0, 405);
}

/// An app that takes 30 ms to answer shows it in its server's histogram,
/// and in the answers' (which include it); the other server's and the 404's
/// are apart. Only lower bounds are asserted: a slow machine can only make
/// each time longer.
#[tokio::test]
async fn histograms_time_the_app_and_the_answers() {
    let slow = common::backend::backend(|_req| async {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        common::backend::text("slow")
    })
    .await;
    let fast = named("fast").await;
    let p = proxy(&cfg(&format!(
        "[upstream.slow]\nservers = [\"{}\"]\n[upstream.fast]\nservers = [\"{}\"]\n\
         [[route]]\npath = \"/metrics\"\nmetrics = true\nallow = [\"127.0.0.1\"]\n\
         [[route]]\npath = \"/slow/\"\nupstream = \"slow\"\n\
         [[route]]\npath = \"/fast/\"\nupstream = \"fast\"\n",
        slow.addr, fast.addr
    )))
    .await;
    for path in ["/slow/a", "/slow/b", "/fast/c"] {
        assert_eq!(get(&p.url(path)).await.0, 200, "{path}");
    }
    assert_eq!(get(&p.url("/nothing")).await.0, 404);

    let page = scrape(&p).await;
    let server = |name: &str, addr: &str, series: &str| {
        let s = format!(
            "portcullis_upstream_server_header_time_seconds_{series}{{upstream=\"{name}\",server=\"{addr}\""
        );
        if series == "bucket" {
            s
        } else {
            s + "}"
        }
    };
    assert_eq!(metric(&page, &server("slow", &slow.addr, "count")), 2.0);
    assert_eq!(
        metric(
            &page,
            &(server("slow", &slow.addr, "bucket") + ",le=\"0.025\"}")
        ),
        0.0
    );
    assert_eq!(
        metric(
            &page,
            &(server("slow", &slow.addr, "bucket") + ",le=\"+Inf\"}")
        ),
        2.0
    );
    let app_time = metric(&page, &server("slow", &slow.addr, "sum"));
    assert!(app_time >= 0.060, "{app_time}");
    assert_eq!(metric(&page, &server("fast", &fast.addr, "count")), 1.0);

    let answers = |code: &str, series: &str| {
        format!("portcullis_response_time_seconds_{series}{{code=\"{code}\"}}")
    };
    assert_eq!(metric(&page, &answers("2xx", "count")), 3.0);
    assert_eq!(metric(&page, &answers("4xx", "count")), 1.0);
    // The two slow answers are past 25 ms; the fast one may be either side.
    let quick = metric(
        &page,
        "portcullis_response_time_seconds_bucket{code=\"2xx\",le=\"0.025\"}",
    );
    assert!(quick <= 1.0, "{quick}");
    let answer_time = metric(&page, &answers("2xx", "sum"));
    assert!(answer_time >= app_time, "{answer_time} < {app_time}");
    // No 5xx answer yet: no series for it.
    assert!(!page.contains("code=\"5xx\",le="), "{page}");
}
