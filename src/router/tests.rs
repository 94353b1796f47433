//! Matching without sockets: hosts, prefixes and their boundaries.

use super::*;

fn route(index: usize, host: &str, prefix: &str) -> Route {
    Route::bare(
        index,
        HostMatch::parse(host).unwrap(),
        prefix,
        Action::Respond {
            status: StatusCode::OK,
            body: Bytes::new(),
            content_type: HeaderValue::from_static("text/plain"),
        },
    )
}

fn find(r: &Router, host: &str, path: &str) -> Option<usize> {
    r.find(host, path).map(|r| r.index)
}

#[test]
fn longest_prefix_wins() {
    let r = Router::new(vec![
        route(0, "", "/"),
        route(1, "", "/api/"),
        route(2, "", "/api/token/"),
    ]);
    assert_eq!(find(&r, "x", "/"), Some(0));
    assert_eq!(find(&r, "x", "/index.html"), Some(0));
    assert_eq!(find(&r, "x", "/api/users"), Some(1));
    assert_eq!(find(&r, "x", "/api/token/refresh/"), Some(2));
    assert_eq!(find(&r, "x", "/api/token"), Some(2));
    assert_eq!(find(&r, "x", "/api"), Some(1));
    assert_eq!(find(&r, "x", "/apiary"), Some(0));
}

#[test]
fn prefixes_with_and_without_slash_match_whole_segments() {
    assert!(prefix_matches("/api", "/api"));
    assert!(prefix_matches("/api", "/api/"));
    assert!(prefix_matches("/api", "/api/v1"));
    assert!(!prefix_matches("/api", "/apix"));
    assert!(prefix_matches("/api/", "/api"));
    assert!(prefix_matches("/api/", "/api/v1"));
    assert!(!prefix_matches("/api/", "/apiv1"));
    assert!(prefix_matches("/", "/anything"));
    assert!(prefix_matches("", "/anything"));
}

#[test]
fn an_encoded_slash_matches_as_a_slash() {
    assert!(prefix_matches("/api", "/api%2Fv1"));
    assert!(prefix_matches("/api/v1/", "/api%2Fv1/x"));
    assert!(prefix_matches("/api/v1", "/api%2Fv1%2Fx"));
    assert!(!prefix_matches("/api", "/api%2"));
    assert!(!prefix_matches("/api", "/api%20"));
    let r = route(0, "", "/api/v1/");
    assert_eq!(r.rest("/api%2Fv1/a.css"), "/a.css");
    assert_eq!(r.rest("/api/v1%2Fa.css"), "%2Fa.css");
}

#[test]
fn a_segment_parameter_ends_the_segment() {
    assert!(prefix_matches("/api", "/api;jsessionid=1"));
    assert!(prefix_matches("/api", "/api;x/secret"));
    assert!(prefix_matches("/api/v1/", "/api;x/v1/secret"));
    assert!(prefix_matches("/api/v1/", "/api;x%2Fv1/secret"));
    assert!(prefix_matches("/a/b/c", "/a;1/b;2/c;3"));
    assert!(!prefix_matches("/api/v1", "/api;x"));
    assert!(!prefix_matches("/api", "/ap;i/x"));
    let r = Router::new(vec![route(0, "", "/"), route(1, "", "/api/")]);
    assert_eq!(find(&r, "h", "/api;x/secret"), Some(1));
    assert_eq!(find(&r, "h", "/apix;/secret"), Some(0));
}

#[test]
fn no_match_is_none() {
    let r = Router::new(vec![route(0, "", "/api/"), route(1, "example.com", "/")]);
    assert_eq!(find(&r, "other.org", "/"), None);
    assert_eq!(find(&r, "other.org", "/static/x"), None);
}

#[test]
fn host_specific_beats_any_host_even_with_shorter_prefix() {
    let r = Router::new(vec![route(0, "", "/api/"), route(1, "example.com", "/")]);
    assert_eq!(find(&r, "example.com", "/api/x"), Some(1));
    assert_eq!(find(&r, "other.org", "/api/x"), Some(0));
}

#[test]
fn exact_beats_wildcard_and_longer_wildcard_beats_shorter() {
    let r = Router::new(vec![
        route(0, "*.example.com", "/"),
        route(1, "api.example.com", "/"),
        route(2, "*.eu.example.com", "/"),
        route(3, "", "/"),
    ]);
    assert_eq!(find(&r, "api.example.com", "/"), Some(1));
    assert_eq!(find(&r, "API.Example.COM", "/"), Some(1));
    assert_eq!(find(&r, "www.example.com", "/"), Some(0));
    assert_eq!(find(&r, "a.eu.example.com", "/"), Some(2));
    assert_eq!(find(&r, "deep.a.example.com", "/"), Some(0));
    // The wildcard does not cover the bare domain.
    assert_eq!(find(&r, "example.com", "/"), Some(3));
    assert_eq!(find(&r, "badexample.com", "/"), Some(3));
}

#[test]
fn config_order_breaks_ties() {
    let r = Router::new(vec![route(0, "", "/a"), route(1, "", "/a/")]);
    assert_eq!(find(&r, "h", "/a/b"), Some(0));
}

#[test]
fn host_parsing() {
    assert_eq!(HostMatch::parse("").unwrap(), HostMatch::Any);
    assert_eq!(
        HostMatch::parse("Example.COM").unwrap(),
        HostMatch::Exact("example.com".into())
    );
    assert_eq!(
        HostMatch::parse("*.example.com").unwrap(),
        HostMatch::Suffix(".example.com".into())
    );
    assert!(HostMatch::parse("a.*.com").is_err());
    assert!(HostMatch::parse("example.com:443").is_err());
}

#[test]
fn rest_strips_prefix() {
    let r = route(0, "", "/static/");
    assert_eq!(r.rest("/static/css/a.css"), "/css/a.css");
    assert_eq!(r.rest("/static"), "/");
    let r = route(0, "", "/");
    assert_eq!(r.rest("/a/b"), "/a/b");
}

#[test]
fn the_request_host_drops_its_port_and_a_trailing_dot() {
    let host = |uri: &str, h: &str| {
        let (p, ()) = http::Request::get(uri)
            .header("host", h)
            .body(())
            .unwrap()
            .into_parts();
        request_host(&p).to_string()
    };
    assert_eq!(host("/", "admin.example."), "admin.example");
    assert_eq!(host("/", "admin.example.:8080"), "admin.example");
    assert_eq!(host("http://a.example./x", "other"), "a.example");
    assert_eq!(host("/", "[::1]:80"), "[::1]");
}

#[test]
fn ports_are_stripped() {
    assert_eq!(strip_port("example.com:8443"), "example.com");
    assert_eq!(strip_port("example.com"), "example.com");
    assert_eq!(strip_port("[::1]:80"), "[::1]");
    assert_eq!(strip_port("127.0.0.1:80"), "127.0.0.1");
}
