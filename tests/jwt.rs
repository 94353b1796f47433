//! The JWT gate through the real server: real upstreams count what they
//! receive, so every refusal is also checked to have reached nobody.

mod common;

use common::jwt::*;
use common::*;
use http::Request;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

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
