//! The JWT gate through the real server: real upstreams count what they
//! receive, so every refusal is also checked to have reached nobody.

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use hyper::Response;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

/// An HS256 token signed with `secret`, valid for a minute.
fn hs256(secret: &[u8]) -> String {
    sign(
        Algorithm::HS256,
        None,
        &json!({"exp": now() + 60}),
        &EncodingKey::from_secret(secret),
    )
}

async fn with_token(url: &str, token: &str) -> (u16, http::HeaderMap, String) {
    send(
        Request::get(url)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::default())
            .unwrap(),
    )
    .await
}

fn listen_and_route(policy: &str, upstream: &str) -> String {
    format!(
        "[[listen]]\naddr = \"127.0.0.1:0\"\n\n[upstream.app]\nservers = [\"{upstream}\"]\n\n\
         [[route]]\npath = \"/api/\"\nupstream = \"app\"\njwt = \"{policy}\"\n\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n"
    )
}

#[tokio::test]
async fn hs256_policy_gates_a_route_and_forwards_claims() {
    let up = echo().await;
    let cfg = format!(
        "{}\n[jwt.api]\nalgorithms = [\"HS256\"]\nsecret = {{ value = \"s3cret-s3cret-s3cret-s3cret-s3cret\" }}\n\
         audience = \"my-api\"\nforward_claims = {{ sub = \"X-User\" }}\n",
        listen_and_route("api", &up.addr)
    );
    let p = proxy(&cfg).await;
    let key = EncodingKey::from_secret(b"s3cret-s3cret-s3cret-s3cret-s3cret");
    let good = sign(
        Algorithm::HS256,
        None,
        &json!({"sub": "alice", "aud": "my-api", "exp": now() + 60}),
        &key,
    );

    // Refusals first: none of them may reach the upstream.
    let (st, h, body) = get(&p.url("/api/orders")).await;
    assert_eq!(st, 401);
    assert_eq!(h["www-authenticate"], "Bearer realm=\"portcullis\"");
    assert_eq!(body, "unauthorized\n");
    let expired = sign(
        Algorithm::HS256,
        None,
        &json!({"sub": "a", "aud": "my-api", "exp": now() - 60}),
        &key,
    );
    let wrong_aud = sign(
        Algorithm::HS256,
        None,
        &json!({"sub": "a", "aud": "other", "exp": now() + 60}),
        &key,
    );
    let (head, _) = good.rsplit_once('.').unwrap();
    for bad in [
        expired.as_str(),
        wrong_aud.as_str(),
        &format!("{head}."),
        "garbage",
    ] {
        let (st, h, body) = with_token(&p.url("/api/orders"), bad).await;
        assert_eq!(st, 401, "{bad}");
        assert_eq!(
            h["www-authenticate"],
            "Bearer realm=\"portcullis\", error=\"invalid_token\""
        );
        assert_eq!(body, "unauthorized\n", "no detail leaks to the client");
    }
    let two = Request::get(p.url("/api/orders"))
        .header("authorization", format!("Bearer {good}"))
        .header("authorization", "Bearer other")
        .body(Body::default())
        .unwrap();
    assert_eq!(send(two).await.0, 400);
    assert_eq!(up.hits(), 0, "a refused request reached the upstream");

    // A forged X-User is replaced by the claim.
    let req = Request::get(p.url("/api/orders"))
        .header("authorization", format!("bearer {good}"))
        .header("x-user", "admin")
        .body(Body::default())
        .unwrap();
    let (st, _, body) = send(req).await;
    assert_eq!(st, 200);
    assert_eq!(json(&body)["headers"]["x-user"], "alice");
    assert_eq!(up.hits(), 1);
    // The route without a policy is open.
    assert_eq!(get(&p.url("/open")).await.0, 200);
}

fn rsa() -> rcgen::KeyPair {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap()
}

#[tokio::test]
async fn rs256_public_key_policy() {
    let up = fixed("ok").await;
    let kp = rsa();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("issuer.pem"), kp.public_key_pem()).unwrap();
    let cfg = format!(
        "{}\n[jwt.api]\nalgorithms = [\"RS256\"]\npublic_key = \"issuer.pem\"\nissuer = \"https://idp.test/\"\n\
         scopes = [\"orders:read\"]\n",
        listen_and_route("api", &up.addr)
    );
    let p = proxy_in(dir, &cfg).await;
    let key = EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).unwrap();
    let claims =
        |scope: &str| json!({"iss": "https://idp.test/", "exp": now() + 60, "scope": scope});
    let good = sign(Algorithm::RS256, None, &claims("orders:read"), &key);
    // Key confusion: HS256 keyed with the public key PEM.
    let confused = sign(
        Algorithm::HS256,
        None,
        &claims("orders:read"),
        &EncodingKey::from_secret(kp.public_key_pem().as_bytes()),
    );
    assert_eq!(with_token(&p.url("/api/x"), &confused).await.0, 401);
    let other = sign(
        Algorithm::RS256,
        None,
        &claims("orders:read"),
        &EncodingKey::from_rsa_pem(rsa().serialize_pem().as_bytes()).unwrap(),
    );
    assert_eq!(with_token(&p.url("/api/x"), &other).await.0, 401);
    let (st, h, body) = with_token(
        &p.url("/api/x"),
        &sign(Algorithm::RS256, None, &claims("profile"), &key),
    )
    .await;
    assert_eq!(st, 403);
    assert_eq!(
        h["www-authenticate"],
        "Bearer realm=\"portcullis\", error=\"insufficient_scope\""
    );
    assert_eq!(body, "forbidden\n");
    assert_eq!(up.hits(), 0);
    for _ in 0..3 {
        // Repeats are served from the verified-token cache.
        assert_eq!(with_token(&p.url("/api/x"), &good).await.0, 200);
    }
    assert_eq!(up.hits(), 3);
}

fn jwk(kp: &rcgen::KeyPair, alg: Algorithm, kid: &str) -> Value {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).unwrap(),
    };
    let mut j = serde_json::to_value(Jwk::from_encoding_key(&key, alg).unwrap()).unwrap();
    j["kid"] = json!(kid);
    j
}

#[tokio::test]
async fn es256_jwks_file_policy() {
    let up = fixed("ok").await;
    let (a, b) = (
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let set = json!({"keys": [jwk(&a, Algorithm::ES256, "a"), jwk(&b, Algorithm::ES256, "b")]});
    std::fs::write(dir.path().join("jwks.json"), set.to_string()).unwrap();
    let cfg = format!(
        "{}\n[jwt.api]\nalgorithms = [\"ES256\"]\njwks = \"jwks.json\"\n",
        listen_and_route("api", &up.addr)
    );
    let p = proxy_in(dir, &cfg).await;
    let ka = EncodingKey::from_ec_pem(a.serialize_pem().as_bytes()).unwrap();
    let kb = EncodingKey::from_ec_pem(b.serialize_pem().as_bytes()).unwrap();
    let c = json!({"exp": now() + 60});
    assert_eq!(
        with_token(&p.url("/api/"), &sign(Algorithm::ES256, Some("b"), &c, &ka))
            .await
            .0,
        401
    );
    assert_eq!(
        with_token(
            &p.url("/api/"),
            &sign(Algorithm::ES256, Some("zz"), &c, &ka)
        )
        .await
        .0,
        401
    );
    assert_eq!(up.hits(), 0);
    assert_eq!(
        with_token(&p.url("/api/"), &sign(Algorithm::ES256, Some("a"), &c, &ka))
            .await
            .0,
        200
    );
    assert_eq!(
        with_token(&p.url("/api/"), &sign(Algorithm::ES256, Some("b"), &c, &kb))
            .await
            .0,
        200
    );
    assert_eq!(
        with_token(&p.url("/api/"), &sign(Algorithm::ES256, None, &c, &kb))
            .await
            .0,
        200
    );
    assert_eq!(up.hits(), 3);
    // The key file is watched for reloads.
    let snap = p.server.state().load();
    assert!(snap.files.iter().any(|f| f.ends_with("jwks.json")));
}

#[tokio::test]
async fn jwks_url_rotation_without_restart_and_no_refetch_storm() {
    let up = fixed("ok").await;
    let (k1, k2) = (rsa(), rsa());
    let served = Arc::new(Mutex::new(
        json!({"keys": [jwk(&k1, Algorithm::RS256, "k1")]}).to_string(),
    ));
    let s = served.clone();
    let idp = upstream(move |_req| {
        let body = s.lock().unwrap().clone();
        async move { Response::new(Full::new(Bytes::from(body))) }
    })
    .await;
    let cfg = format!(
        "{}\n[jwt.api]\nalgorithms = [\"RS256\"]\njwks_url = \"http://{}/.well-known/jwks.json\"\n\
         jwks_refresh = \"1h\"\nissuer = \"https://idp.test/\"\n",
        listen_and_route("api", &up.addr),
        idp.addr
    );
    let p = proxy(&cfg).await;
    let enc =
        |kp: &rcgen::KeyPair| EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).unwrap();
    let c = json!({"iss": "https://idp.test/", "exp": now() + 60});
    // The first request waits for the fetch started with the server.
    assert_eq!(
        with_token(
            &p.url("/api/"),
            &sign(Algorithm::RS256, Some("k1"), &c, &enc(&k1))
        )
        .await
        .0,
        200
    );
    assert_eq!(idp.hits(), 1);

    // The provider rotates: a token with the new kid is accepted at once.
    *served.lock().unwrap() = json!({"keys": [jwk(&k2, Algorithm::RS256, "k2")]}).to_string();
    assert_eq!(
        with_token(
            &p.url("/api/"),
            &sign(Algorithm::RS256, Some("k2"), &c, &enc(&k2))
        )
        .await
        .0,
        200
    );
    assert_eq!(idp.hits(), 2);
    assert_eq!(up.hits(), 2);

    // A flood of made-up kids: refused, and no fetch per token (one per
    // 30s cooldown at most; the last one was just now).
    for i in 0..50 {
        let t = sign(Algorithm::RS256, Some(&format!("bogus-{i}")), &c, &enc(&k2));
        assert_eq!(with_token(&p.url("/api/"), &t).await.0, 401);
    }
    // Tokens of a foreign issuer never cause a fetch either.
    let foreign = json!({"iss": "https://evil.test/", "exp": now() + 60});
    assert_eq!(
        with_token(
            &p.url("/api/"),
            &sign(Algorithm::RS256, Some("new"), &foreign, &enc(&k2))
        )
        .await
        .0,
        401
    );
    assert!(idp.hits() <= 3, "refetch storm: {} fetches", idp.hits());
    assert_eq!(
        idp.hits(),
        p.server.state().load().policies["api"].jwks_fetches() as usize
    );
    // The rotated-out key is gone.
    assert_eq!(
        with_token(
            &p.url("/api/"),
            &sign(Algorithm::RS256, Some("k1"), &c, &enc(&k1))
        )
        .await
        .0,
        401
    );
    assert_eq!(up.hits(), 2, "a refused request reached the upstream");
}

#[tokio::test]
async fn simplejwt_tokens_access_yes_refresh_no() {
    let fx: Value =
        serde_json::from_str(include_str!("fixtures/simplejwt/simplejwt.json")).unwrap();
    let up = echo().await;
    let cfg = format!(
        "{}\n[jwt.django]\nalgorithms = [\"HS256\"]\nsecret = {{ env = \"PORTCULLIS_TEST_DJANGO_SECRET\" }}\n\
         require = {{ token_type = \"access\" }}\nforward_claims = {{ user_id = \"X-User-Id\" }}\n",
        listen_and_route("django", &up.addr)
    );
    // Only this test reads this variable.
    std::env::set_var(
        "PORTCULLIS_TEST_DJANGO_SECRET",
        fx["secret"].as_str().unwrap(),
    );
    let p = proxy(&cfg).await;
    let t = |k: &str| fx[k].as_str().unwrap().to_string();
    let (st, h, _) = with_token(&p.url("/api/me"), &t("refresh")).await;
    assert_eq!(st, 403, "a refresh token must not open an access route");
    assert_eq!(
        h["www-authenticate"],
        "Bearer realm=\"portcullis\", error=\"insufficient_scope\""
    );
    assert_eq!(
        with_token(&p.url("/api/me"), &t("access_expired")).await.0,
        401
    );
    assert_eq!(
        with_token(&p.url("/api/me"), &t("access_other_secret"))
            .await
            .0,
        401
    );
    assert_eq!(up.hits(), 0);
    let (st, _, body) = with_token(&p.url("/api/me"), &t("access")).await;
    assert_eq!(st, 200);
    let seen = json(&body);
    assert_eq!(seen["headers"]["x-user-id"], "42");
    assert!(seen["headers"]["authorization"]
        .as_str()
        .unwrap()
        .starts_with("Bearer "));
}

#[tokio::test]
async fn cookie_token_stripped_before_forwarding() {
    let up = echo().await;
    let cfg = format!(
        "{}\n[jwt.api]\nalgorithms = [\"HS256\"]\nsecret = {{ value = \"cookie-secret-cookie-secret\" }}\n\
         from = [\"cookie:access_token\"]\nstrip_token = true\n",
        listen_and_route("api", &up.addr)
    );
    let p = proxy(&cfg).await;
    let t = hs256(b"cookie-secret-cookie-secret");
    let req = Request::get(p.url("/api/x"))
        .header("cookie", format!("csrftoken=abc; access_token={t}"))
        .body(Body::default())
        .unwrap();
    let (st, _, body) = send(req).await;
    assert_eq!(st, 200);
    assert_eq!(json(&body)["headers"]["cookie"], "csrftoken=abc");
}

#[tokio::test]
async fn a_token_in_the_query_string_is_redacted_in_the_access_log() {
    let up = echo().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let cfg = format!(
        "[log]\naccess = \"{}\"\n{}\n[jwt.api]\nalgorithms = [\"HS256\"]\n\
         secret = {{ value = \"query-secret-query-secret\" }}\nfrom = [\"header\", \"query:access_token\"]\n",
        log.display(),
        listen_and_route("api", &up.addr)
    );
    let p = proxy(&cfg).await;
    let t = hs256(b"query-secret-query-secret");
    // Accepted: the upstream still gets the query as sent.
    let (st, headers, body) = get(&p.url(&format!("/api/x?a=1&access_token={t}&b=2"))).await;
    assert_eq!(st, 200);
    assert_eq!(
        json(&body)["uri"],
        format!("/api/x?a=1&access_token={t}&b=2")
    );
    let line = log_line(&log, &headers).await;
    assert!(
        line.contains("\"GET /api/x?a=1&access_token=REDACTED&b=2 HTTP/1.1\" 200"),
        "{line}"
    );
    assert!(!line.contains(&t), "{line}");
    // Refused (a forged signature): redacted as well.
    let forged = format!("{}x", &t[..t.len() - 1]);
    let (st, headers, _) = get(&p.url(&format!("/api/x?access_token={forged}"))).await;
    assert_eq!(st, 401);
    let line = log_line(&log, &headers).await;
    assert!(line.contains("/api/x?access_token=REDACTED "), "{line}");
    // Whatever the route or the answer, and in the Referer too: a token
    // is a credential wherever the client put it.
    let req = Request::get(p.url("/open?access_token=abc&x=1"))
        .header("referer", format!("https://app.example/p?access_token={t}"))
        .body(Body::default())
        .unwrap();
    let (_, headers, _) = send(req).await;
    let line = log_line(&log, &headers).await;
    assert!(line.contains("/open?access_token=REDACTED&x=1 "), "{line}");
    assert!(
        line.contains("\"https://app.example/p?access_token=REDACTED\""),
        "{line}"
    );
    assert!(!line.contains(&t), "{line}");
    // A head refused before routing (400) is logged with its first line.
    let resp = raw(
        p.addrs[0],
        b"GET /x?access_token=abcdef HTTP/1.1\r\nHost: \r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    eventually_contains(&log, "access_token=REDACTED HTTP/1.1\" 400").await;
    assert!(!std::fs::read_to_string(&log).unwrap().contains("abcdef"));
}

/// Wait until the log file holds `needle` (lines are written by another
/// thread); gives up after 15s.
async fn eventually_contains(log: &std::path::Path, needle: &str) {
    eventually(needle, || {
        std::fs::read_to_string(log).is_ok_and(|t| t.contains(needle))
    })
    .await;
}

/// Poll `cond` until it holds, for at most 15s.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn jwks_url_scheduled_refresh_keeps_the_last_good_set_on_failure() {
    let up = fixed("ok").await;
    let (k1, k2) = (rsa(), rsa());
    let served = Arc::new(Mutex::new((
        200u16,
        json!({"keys": [jwk(&k1, Algorithm::RS256, "k1")]}).to_string(),
    )));
    let s = served.clone();
    let idp = upstream(move |_req| {
        let (status, body) = s.lock().unwrap().clone();
        async move {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
            r
        }
    })
    .await;
    let cfg = format!(
        "{}\n[jwt.api]\nalgorithms = [\"RS256\"]\njwks_url = \"http://{}/jwks\"\njwks_refresh = \"1s\"\n",
        listen_and_route("api", &up.addr),
        idp.addr
    );
    let p = proxy(&cfg).await;
    let enc =
        |kp: &rcgen::KeyPair| EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).unwrap();
    // Distinct claims per request, so that no answer comes from the cache.
    let token = |kp: &rcgen::KeyPair, kid: &str, n: u32| {
        sign(
            Algorithm::RS256,
            Some(kid),
            &json!({"exp": now() + 60, "n": n}),
            &enc(kp),
        )
    };
    assert_eq!(
        with_token(&p.url("/api/"), &token(&k1, "k1", 1)).await.0,
        200
    );

    // The provider fails: the scheduled refresh keeps the last good set.
    served.lock().unwrap().0 = 500;
    let before = idp.hits();
    eventually("a failed refresh", || idp.hits() > before).await;
    assert_eq!(
        with_token(&p.url("/api/"), &token(&k1, "k1", 2)).await.0,
        200
    );

    // It comes back with a rotated set: the schedule alone picks it up.
    *served.lock().unwrap() = (
        200,
        json!({"keys": [jwk(&k2, Algorithm::RS256, "k2")]}).to_string(),
    );
    let snap = p.server.state().load();
    let policy = snap.policies["api"].clone();
    let generation = policy.key_set_generation();
    eventually("a good refresh", || {
        policy.key_set_generation() > generation
    })
    .await;
    let fetched = policy.jwks_fetches();
    assert_eq!(
        with_token(&p.url("/api/"), &token(&k1, "k1", 3)).await.0,
        401
    );
    assert_eq!(
        with_token(&p.url("/api/"), &token(&k2, "k2", 4)).await.0,
        200
    );
    // k2 came with the schedule, not with an unknown-kid fetch (k1 may
    // have caused one: it is unknown now).
    assert!(policy.jwks_fetches() <= fetched + 1);
    assert_eq!(up.hits(), 3);
}

#[tokio::test]
async fn jwks_url_unreachable_refuses_without_hanging() {
    let up = fixed("ok").await;
    // A port that was just free: nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = format!(
        "{}\n[jwt.api]\nalgorithms = [\"RS256\"]\njwks_url = \"http://{dead}/jwks\"\n",
        listen_and_route("api", &up.addr)
    );
    let p = proxy(&cfg).await;
    let t = sign(
        Algorithm::RS256,
        Some("k"),
        &json!({"exp": now() + 60}),
        &EncodingKey::from_rsa_pem(rsa().serialize_pem().as_bytes()).unwrap(),
    );
    let (st, _, _) = with_token(&p.url("/api/"), &t).await;
    assert_eq!(st, 401);
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn reload_with_a_new_secret_refuses_old_tokens_and_a_broken_key_keeps_the_old_policy() {
    let up = fixed("ok").await;
    let cfg = |secret: &str| {
        format!(
            "{}\n[jwt.api]\nalgorithms = [\"HS256\"]\nsecret = {{ file = \"{secret}\" }}\n",
            listen_and_route("api", &up.addr)
        )
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("old.key"),
        "old-secret-old-secret-old-secret\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("new.key"),
        "new-secret-new-secret-new-secret\n",
    )
    .unwrap();
    let p = proxy_in(dir, &cfg("old.key")).await;
    let (old, new) = (
        hs256(b"old-secret-old-secret-old-secret"),
        hs256(b"new-secret-new-secret-new-secret"),
    );
    assert_eq!(with_token(&p.url("/api/"), &old).await.0, 200);

    // A key file that does not exist: the reload fails, the old policy serves on.
    std::fs::write(&p.config_path, cfg("missing.key")).unwrap();
    let errs = p.server.reload().await.unwrap_err().to_string();
    assert!(errs.contains("jwt.api.secret.file: cannot read"), "{errs}");
    assert_eq!(with_token(&p.url("/api/"), &old).await.0, 200);

    // A new secret: the cached old token is refused at once.
    std::fs::write(&p.config_path, cfg("new.key")).unwrap();
    p.server.reload().await.unwrap();
    assert_eq!(with_token(&p.url("/api/"), &old).await.0, 401);
    assert_eq!(with_token(&p.url("/api/"), &new).await.0, 200);
    assert_eq!(up.hits(), 3);
}

/// An https jwks_url is verified against public roots: a self-signed
/// server's keys are never used, so its tokens are refused.
#[tokio::test]
async fn jwks_url_over_https_refuses_an_untrusted_certificate() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let up = fixed("ok").await;
    let kp = rsa();
    let served = json!({"keys": [jwk(&kp, Algorithm::RS256, "k")]}).to_string();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (handshakes, served_ok) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (h, s) = (handshakes.clone(), served_ok.clone());
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            h.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut stream) = acceptor.accept(tcp).await {
                use tokio::io::AsyncWriteExt;
                s.fetch_add(1, Ordering::SeqCst);
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{served}",
                    served.len()
                );
                let _ = stream.write_all(resp.as_bytes()).await;
            }
        }
    });
    let cfg = format!(
        "{}\n[jwt.api]\nalgorithms = [\"RS256\"]\njwks_url = \"https://{addr}/jwks\"\n",
        listen_and_route("api", &up.addr)
    );
    let p = proxy(&cfg).await;
    let t = sign(
        Algorithm::RS256,
        Some("k"),
        &json!({"exp": now() + 60}),
        &EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).unwrap(),
    );
    assert_eq!(with_token(&p.url("/api/"), &t).await.0, 401);
    assert!(
        handshakes.load(Ordering::SeqCst) >= 1,
        "the fetch was not even tried"
    );
    assert_eq!(
        served_ok.load(Ordering::SeqCst),
        0,
        "a TLS handshake with an untrusted certificate succeeded"
    );
    assert_eq!(up.hits(), 0);
    server.abort();
}
