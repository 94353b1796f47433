//! Each rule of a policy, one at a time.

use super::*;
use jsonwebtoken::EncodingKey;
use serde_json::{json, Value};

#[tokio::test]
async fn good_tokens_pass_and_claims_come_back() {
    let p = hs_policy("");
    let mut parts = req(&hs(good()));
    let v = p.check(&mut parts).await.unwrap();
    assert_eq!(v.claims["sub"], "alice");
    accepts(&rs_policy(""), &rs(good())).await;
}

#[tokio::test]
async fn time_claims() {
    let p = hs_policy("");
    rejects(&p, &hs(json!({"exp": now() - 10})), "token expired").await;
    rejects(&p, &hs(json!({"sub": "a"})), "exp missing").await;
    rejects(
        &p,
        &hs(json!({"exp": (now() + 600).to_string()})),
        "exp is not a number",
    )
    .await;
    rejects(
        &p,
        &hs(json!({"exp": now() + 600, "nbf": now() + 300})),
        "token not yet valid (nbf)",
    )
    .await;
    rejects(
        &p,
        &hs(json!({"exp": now() + 600, "nbf": "0"})),
        "nbf is not a number",
    )
    .await;
    accepts(&p, &hs(json!({"exp": now() + 600, "nbf": now() - 5}))).await;
    accepts(&p, &hs(json!({"exp": (now() + 600) as f64 + 0.5}))).await;
    let lenient = hs_policy("leeway = \"60s\"");
    accepts(&lenient, &hs(json!({"exp": now() - 10}))).await;
    accepts(
        &lenient,
        &hs(json!({"exp": now() + 600, "nbf": now() + 10})),
    )
    .await;
    rejects(&lenient, &hs(json!({"exp": now() - 120})), "token expired").await;
}

#[tokio::test]
async fn issuer_and_audience() {
    let p = hs_policy("issuer = \"https://idp/\"\naudience = [\"api\", \"web\"]");
    let base = |iss: Value, aud: Value| {
        let mut c = good();
        if !iss.is_null() {
            c["iss"] = iss;
        }
        if !aud.is_null() {
            c["aud"] = aud;
        }
        hs(c)
    };
    accepts(&p, &base(json!("https://idp/"), json!("api"))).await;
    accepts(&p, &base(json!("https://idp/"), json!(["other", "web"]))).await;
    rejects(
        &p,
        &base(json!("https://evil/"), json!("api")),
        "wrong issuer",
    )
    .await;
    rejects(&p, &base(Value::Null, json!("api")), "iss missing").await;
    rejects(
        &p,
        &base(json!(["https://idp/"]), json!("api")),
        "iss is not a string",
    )
    .await;
    rejects(
        &p,
        &base(json!("https://idp/"), json!("other")),
        "wrong audience",
    )
    .await;
    rejects(
        &p,
        &base(json!("https://idp/"), json!(["other"])),
        "wrong audience",
    )
    .await;
    rejects(&p, &base(json!("https://idp/"), Value::Null), "aud missing").await;
    rejects(
        &p,
        &base(json!("https://idp/"), json!(5)),
        "aud is not a string or list of strings",
    )
    .await;
    rejects(
        &p,
        &base(json!("https://idp/"), json!(["api", 5])),
        "aud is not a string or list of strings",
    )
    .await;
}

#[tokio::test]
async fn eddsa_and_certificates_as_public_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ed.pem"), keys().ed.public_key_pem()).unwrap();
    let p = compile_policy(
        dir.path(),
        "algorithms = [\"EdDSA\"]\npublic_key = \"ed.pem\"",
    )
    .unwrap();
    let key = EncodingKey::from_ed_pem(keys().ed.serialize_pem().as_bytes()).unwrap();
    accepts(
        &p,
        &sign_raw(&json!({"alg": "EdDSA"}), &good(), &key, Algorithm::EdDSA),
    )
    .await;
    let cert = rcgen::CertificateParams::new(vec!["idp.test".into()])
        .unwrap()
        .self_signed(&keys().rsa)
        .unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
    let p = compile_policy(
        dir.path(),
        "algorithms = [\"RS256\"]\npublic_key = \"cert.pem\"",
    )
    .unwrap();
    accepts(&p, &rs(good())).await;
}

#[tokio::test]
async fn wrong_claim_types_are_not_coerced() {
    let p = hs_policy("require = { token_type = \"access\", user_id = 1, staff = true }");
    let c = |tt: Value, uid: Value, staff: Value| {
        hs(json!({"exp": now() + 600, "token_type": tt, "user_id": uid, "staff": staff}))
    };
    accepts(&p, &c(json!("access"), json!(1), json!(true))).await;
    let reason = "required claim missing or different";
    forbids(&p, &c(json!("refresh"), json!(1), json!(true)), reason).await;
    forbids(&p, &c(json!("access"), json!("1"), json!(true)), reason).await;
    forbids(&p, &c(json!("access"), json!(1.0), json!(true)), reason).await;
    forbids(&p, &c(json!("access"), json!(1), json!("true")), reason).await;
    forbids(&p, &c(json!(["access"]), json!(1), json!(true)), reason).await;
    forbids(&p, &hs(json!({"exp": now() + 600})), reason).await;
}

#[tokio::test]
async fn scopes_from_scope_or_scp() {
    let p = hs_policy("scopes = [\"orders:read\", \"orders:write\"]");
    let t = |k: &str, v: Value| hs(json!({"exp": now() + 600, k: v}));
    accepts(&p, &t("scope", json!("profile orders:write orders:read"))).await;
    accepts(&p, &t("scp", json!(["orders:read", "orders:write"]))).await;
    forbids(&p, &t("scope", json!("orders:read")), "scope missing").await;
    forbids(
        &p,
        &t("scope", json!(["orders:read", "orders:write"])),
        "scope missing",
    )
    .await;
    forbids(
        &p,
        &t("scope", json!("orders:read,orders:write")),
        "scope missing",
    )
    .await;
    forbids(&p, &hs(good()), "scope missing").await;
}

#[tokio::test]
async fn missing_token_and_scheme_spelling() {
    let p = hs_policy("");
    let bare = http::Request::get("/").body(()).unwrap().into_parts().0;
    let r = run(&p, bare).await.err().unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.www_authenticate.unwrap(), "Bearer realm=\"portcullis\"");
    let t = hs(good());
    for auth in [
        format!("bearer {t}"),
        format!("BEARER  {t}"),
        format!("Bearer {t} "),
    ] {
        let mut parts = req("");
        parts.headers.insert("authorization", auth.parse().unwrap());
        assert!(run(&p, parts).await.is_ok(), "{auth}");
    }
    let mut basic = req("");
    basic
        .headers
        .insert("authorization", "Basic dXNlcjpwdw==".parse().unwrap());
    assert_eq!(run(&p, basic).await.err().unwrap().reason, "no token");
}

#[tokio::test]
async fn forward_claims_are_stripped_then_set() {
    let p = hs_policy("forward_claims = { sub = \"X-User\", uid = \"X-User-Id\", staff = \"X-Staff\", groups = \"X-Groups\", missing = \"X-Missing\" }");
    // A forged header on a request that is then refused: gone all the same.
    let mut parts = req("garbage");
    parts.headers.insert("x-user", "admin".parse().unwrap());
    parts.headers.append("x-missing", "forged".parse().unwrap());
    assert!(p.check(&mut parts).await.is_err());
    assert!(parts.headers.get("x-user").is_none());
    let t = hs(
        json!({"exp": now() + 600, "sub": "alice", "uid": 42, "staff": false, "groups": ["a", "b", 3]}),
    );
    let mut parts = req(&t);
    parts.headers.insert("x-user", "admin".parse().unwrap());
    parts.headers.insert("x-missing", "forged".parse().unwrap());
    p.check(&mut parts).await.unwrap();
    let h = |n: &str| {
        parts
            .headers
            .get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(h("x-user"), ["alice"]);
    assert_eq!(h("x-user-id"), ["42"]);
    assert_eq!(h("x-staff"), ["false"]);
    assert_eq!(h("x-groups"), ["a b 3"]);
    assert!(h("x-missing").is_empty());
    // The token stays unless strip_token.
    assert!(parts.headers.contains_key("authorization"));
    // A claim that cannot be a header value: refused, not mangled.
    let bad = hs(json!({"exp": now() + 600, "sub": "alice\r\nX-Admin: 1"}));
    forbids(&p, &bad, "claim cannot be forwarded as a header").await;
}

#[tokio::test]
async fn token_sources_in_order_and_strip_token() {
    let p =
        hs_policy("from = [\"cookie:access\", \"query:token\", \"header\"]\nstrip_token = true");
    let t = hs(good());
    let mut parts = http::Request::get(format!("/x?a=1&token={t}&b=2"))
        .header("cookie", "theme=dark; access=; other=1")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    p.check(&mut parts).await.unwrap();
    assert_eq!(parts.uri, "/x?a=1&b=2");
    let mut parts = http::Request::get("/x")
        .header("cookie", format!("theme=dark; access={t}; other=1"))
        .header("authorization", "Bearer not-even-looked-at")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    p.check(&mut parts).await.unwrap();
    assert_eq!(parts.headers["cookie"], "theme=dark; other=1");
    assert!(parts.headers.contains_key("authorization"));
    let mut parts = req(&t);
    p.check(&mut parts).await.unwrap();
    assert!(!parts.headers.contains_key("authorization"));
}

#[tokio::test]
async fn a_token_cookie_or_parameter_given_twice_is_refused() {
    let p = hs_policy("from = [\"cookie:access\", \"query:token\"]");
    let t = hs(good());
    let twice = |uri: String, cookies: &[String]| {
        let mut b = http::Request::get(uri);
        for c in cookies {
            b = b.header("cookie", c);
        }
        b.body(()).unwrap().into_parts().0
    };
    for (parts, why) in [
        (
            twice("/x".into(), &[format!("access={t}; access=forged")]),
            "the token cookie twice",
        ),
        // HTTP/2 sends each cookie as a field of its own.
        (
            twice(
                "/x".into(),
                &[format!("access={t}"), "access=forged".into()],
            ),
            "the token cookie twice",
        ),
        (
            twice(format!("/x?token={t}&token=forged"), &[]),
            "the token parameter twice",
        ),
    ] {
        let r = run(&p, parts).await.err().unwrap();
        assert_eq!((r.status, r.reason), (StatusCode::BAD_REQUEST, why));
    }
    // Other names may repeat; the token once is fine.
    let ok = twice(format!("/x?a=1&a=2&token={t}"), &["a=1; a=2".into()]);
    assert!(run(&p, ok).await.is_ok());
}

#[tokio::test]
async fn cache_serves_repeats_and_never_past_exp() {
    let p = rs_policy("");
    let t = rs(good());
    accepts(&p, &t).await;
    accepts(&p, &t).await;
    let cache = p.cache.as_ref().unwrap();
    assert_eq!(cache.len(), 1);
    // An entry whose time has run out is refused on the hit itself.
    let stale = Arc::new(Verified {
        claims: Default::default(),
        valid_until: claims::now() - 1.0,
        headers: vec![],
        key_gen: 0,
    });
    cache.insert(t.as_bytes(), stale);
    rejects(&p, &t, "token expired").await;
    // Refused tokens are not cached.
    rejects(&p, &hs(good()), "algorithm not allowed").await;
    assert_eq!(cache.len(), 1);
    // Bounded by count.
    let small = hs_policy("cache_size = 40");
    for i in 0..200 {
        accepts(&small, &hs(json!({"exp": now() + 600, "i": i}))).await;
    }
    assert!(small.cache.as_ref().unwrap().len() <= 64);
    assert!(hs_policy("cache_size = 0").cache.is_none());
}

#[tokio::test]
async fn query_token_may_be_percent_encoded_and_other_schemes_are_not_ours() {
    let p = hs_policy("from = [\"query:access_token\"]");
    let t = hs(good()).replace('.', "%2E");
    let parts = http::Request::get(format!("/x?access_token={t}"))
        .body(())
        .unwrap()
        .into_parts()
        .0;
    assert!(run(&p, parts).await.is_ok());
    // Only the configured sources count: a header token is not looked at.
    let r = run(&p, req(&hs(good()))).await.unwrap_err();
    assert_eq!(r.reason, "no token");
}

#[test]
fn query_names_are_the_ones_the_access_log_hides() {
    let p = hs_policy("from = [\"cookie:t\", \"query:access_token\", \"query:jwt\"]");
    assert_eq!(p.query_names().collect::<Vec<_>>(), ["access_token", "jwt"]);
    assert_eq!(hs_policy("").query_names().count(), 0);
}

#[test]
fn a_token_in_debug_output_is_redacted() {
    let t = hs(good());
    let found = token::find(&req(&t), &[token::Source::Header])
        .unwrap()
        .unwrap();
    let parsed = token::parse(t.as_bytes(), &[Algorithm::HS256]).unwrap();
    // The signature as text; the signed bytes as `&[u8]`'s Debug writes them.
    let sig = t.rsplit('.').next().unwrap();
    let head = format!("{:?}", &t.as_bytes()[..8]);
    let head = &head[1..head.len() - 1];
    for shown in [
        format!("{found:?}"),
        format!("{found:#?}"),
        format!("{parsed:?}"),
    ] {
        assert!(shown.contains("REDACTED ("), "{shown}");
        assert!(!shown.contains(sig) && !shown.contains(head), "{shown}");
    }
    assert!(format!("{found:?}").contains(&format!("REDACTED ({} bytes)", t.len())));
    // What the token says still prints.
    assert!(format!("{parsed:?}").contains("alice"));
}
