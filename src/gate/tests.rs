//! The gate without sockets: every rule, and every hostile-token trick we
//! can name, each rejected with the right status and never let through.

use super::*;
use crate::config::{load_str, Source};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::EncodingKey;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::OnceLock;

struct Keys {
    rsa: rcgen::KeyPair,
    rsa2: rcgen::KeyPair,
    ec: rcgen::KeyPair,
    ed: rcgen::KeyPair,
}

/// Made once per test run (RSA generation is slow).
fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| Keys {
        rsa: rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap(),
        rsa2: rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap(),
        ec: rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        ed: rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
    })
}

const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

fn compile_policy(dir: &Path, body: &str) -> Result<Arc<Policy>, String> {
    let text = format!(
        "[[listen]]\naddr = \"127.0.0.1:0\"\n[jwt.p]\n{body}\n\
         [[route]]\npath = \"/\"\nrespond = {{ status = 200 }}\njwt = \"p\"\n"
    );
    let src = Source {
        path: None,
        base_dir: dir.to_path_buf(),
    };
    load_str(&text, &src, None)
        .map(|s| s.policies["p"].clone())
        .map_err(|e| e.to_string())
}

fn hs_policy(extra: &str) -> Arc<Policy> {
    let dir = tempfile::tempdir().unwrap();
    compile_policy(
        dir.path(),
        &format!("algorithms = [\"HS256\"]\nsecret = {{ value = \"{SECRET}\" }}\n{extra}"),
    )
    .unwrap()
}

fn rs_policy(extra: &str) -> Arc<Policy> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pub.pem"), keys().rsa.public_key_pem()).unwrap();
    compile_policy(
        dir.path(),
        &format!("algorithms = [\"RS256\"]\npublic_key = \"pub.pem\"\n{extra}"),
    )
    .unwrap()
}

fn now() -> i64 {
    claims::now() as i64
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Sign `header.payload` as given, byte for byte, with `key` under `alg`.
fn sign_raw(header: &Value, payload: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let msg = format!("{}.{}", b64(header), b64(payload));
    let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), key, alg).unwrap();
    format!("{msg}.{sig}")
}

fn hs(payload: Value) -> String {
    sign_raw(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &payload,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
    )
}

fn rsa_key(kp: &rcgen::KeyPair) -> EncodingKey {
    EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).unwrap()
}

fn rs(payload: Value) -> String {
    sign_raw(
        &json!({"alg": "RS256"}),
        &payload,
        &rsa_key(&keys().rsa),
        Algorithm::RS256,
    )
}

fn good() -> Value {
    json!({"sub": "alice", "exp": now() + 600})
}

fn req(token: &str) -> http::request::Parts {
    http::Request::get("/x")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap()
        .into_parts()
        .0
}

async fn run(
    p: &Policy,
    mut parts: http::request::Parts,
) -> Result<http::request::Parts, Rejection> {
    p.check(&mut parts).await.map(|_| parts)
}

/// Assert a 401 invalid_token with this log reason.
async fn rejects(p: &Policy, token: &str, reason: &str) {
    match run(p, req(token)).await {
        Ok(_) => panic!("accepted a token that should fail with {reason:?}: {token}"),
        Err(r) => {
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{reason}");
            assert_eq!(r.reason, reason);
            assert_eq!(
                r.www_authenticate.unwrap(),
                "Bearer realm=\"portcullis\", error=\"invalid_token\""
            );
        }
    }
}

async fn forbids(p: &Policy, token: &str, reason: &str) {
    let r = run(p, req(token)).await.expect_err("should be refused");
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.reason, reason);
    assert_eq!(
        r.www_authenticate.unwrap(),
        "Bearer realm=\"portcullis\", error=\"insufficient_scope\""
    );
}

async fn accepts(p: &Policy, token: &str) {
    if let Err(r) = run(p, req(token)).await {
        panic!("refused a good token: {}", r.reason);
    }
}

#[tokio::test]
async fn good_tokens_pass_and_claims_come_back() {
    let p = hs_policy("");
    let mut parts = req(&hs(good()));
    let v = p.check(&mut parts).await.unwrap();
    assert_eq!(v.claims["sub"], "alice");
    accepts(&rs_policy(""), &rs(good())).await;
}

#[tokio::test]
async fn alg_none_in_every_spelling() {
    let p = hs_policy("");
    for alg in ["none", "None", "NONE", "nOnE", " none"] {
        let unsigned = format!("{}.{}.", b64(&json!({"alg": alg})), b64(&good()));
        rejects(&p, &unsigned, "signature missing").await;
        // With a signature part present, the alg check itself refuses.
        let faked = format!("{}.{}.AAAA", b64(&json!({"alg": alg})), b64(&good()));
        rejects(&p, &faked, "alg none").await;
    }
    // Even a policy cannot list it.
    let dir = tempfile::tempdir().unwrap();
    let e = compile_policy(
        dir.path(),
        "algorithms = [\"none\"]\nsecret = { value = \"x\" }",
    )
    .err()
    .unwrap();
    assert!(
        e.contains("jwt.p.algorithms[0]: \"none\" is never accepted"),
        "{e}"
    );
}

#[tokio::test]
async fn stripped_signature_and_broken_shapes() {
    let p = hs_policy("");
    let t = hs(good());
    let (signed, _) = t.rsplit_once('.').unwrap();
    rejects(&p, &format!("{signed}."), "signature missing").await;
    rejects(&p, signed, "malformed token").await;
    rejects(&p, &format!("{t}.extra.parts"), "malformed token").await;
    rejects(&p, "not a token", "malformed token").await;
    rejects(&p, &format!("{t}=="), "malformed token").await;
    let arr = format!(
        "{}.{}.AAAA",
        b64(&json!({"alg": "HS256"})),
        b64(&json!([1, 2]))
    );
    rejects(&p, &arr, "malformed payload").await;
    rejects(&p, "e30.e30.AAAA", "malformed header").await; // {} has no alg
    rejects(&p, "!!!.e30.AAAA", "malformed token").await;
}

#[tokio::test]
async fn tampered_payload_and_other_key() {
    let p = hs_policy("");
    let t = hs(good());
    let parts: Vec<&str> = t.split('.').collect();
    let evil = b64(&json!({"sub": "admin", "exp": now() + 600}));
    rejects(
        &p,
        &format!("{}.{evil}.{}", parts[0], parts[2]),
        "bad signature",
    )
    .await;
    let other = sign_raw(
        &json!({"alg": "HS256"}),
        &good(),
        &EncodingKey::from_secret(b"another secret"),
        Algorithm::HS256,
    );
    rejects(&p, &other, "bad signature").await;
    let rp = rs_policy("");
    let other_rsa = sign_raw(
        &json!({"alg": "RS256"}),
        &good(),
        &rsa_key(&keys().rsa2),
        Algorithm::RS256,
    );
    rejects(&rp, &other_rsa, "bad signature").await;
    // Signature bit-flip.
    let mut flipped = rs(good()).into_bytes();
    let last = flipped.len() - 3;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    rejects(&rp, std::str::from_utf8(&flipped).unwrap(), "bad signature").await;
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
async fn key_confusion_hs256_with_the_rsa_public_key() {
    let p = rs_policy("");
    let pem = keys().rsa.public_key_pem();
    let forged = sign_raw(
        &json!({"alg": "HS256"}),
        &good(),
        &EncodingKey::from_secret(pem.as_bytes()),
        Algorithm::HS256,
    );
    rejects(&p, &forged, "algorithm not allowed").await;
    // And no config can set the trap up.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pub.pem"), &pem).unwrap();
    let e = compile_policy(
        dir.path(),
        "algorithms = [\"RS256\", \"HS256\"]\npublic_key = \"pub.pem\"",
    )
    .err()
    .unwrap();
    assert!(e.contains("HS256 needs a secret"), "{e}");
    let e = compile_policy(
        dir.path(),
        &format!("algorithms = [\"HS256\"]\nsecret = {{ value = {pem:?} }}"),
    )
    .err()
    .unwrap();
    assert!(e.contains("looks like a PEM key"), "{e}");
}

#[tokio::test]
async fn algorithm_must_be_the_policys() {
    let p = hs_policy("");
    let hs384 = sign_raw(
        &json!({"alg": "HS384"}),
        &good(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS384,
    );
    rejects(&p, &hs384, "algorithm not allowed").await;
    let lower = sign_raw(
        &json!({"alg": "hs256"}),
        &good(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
    );
    rejects(&p, &lower, "algorithm not allowed").await;
    rejects(
        &p,
        &format!("{}.{}.AAAA", b64(&json!({"alg": 256})), b64(&good())),
        "malformed header",
    )
    .await;
    // An RS policy also refuses PS256 unless listed.
    let ps = sign_raw(
        &json!({"alg": "PS256"}),
        &good(),
        &rsa_key(&keys().rsa),
        Algorithm::PS256,
    );
    rejects(&rs_policy(""), &ps, "algorithm not allowed").await;
    accepts(&rs_policy_with("algorithms = [\"RS256\", \"PS256\"]"), &ps).await;
}

fn rs_policy_with(algs: &str) -> Arc<Policy> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pub.pem"), keys().rsa.public_key_pem()).unwrap();
    compile_policy(dir.path(), &format!("{algs}\npublic_key = \"pub.pem\"")).unwrap()
}

#[tokio::test]
async fn oversized_token_is_refused_before_parsing() {
    let p = hs_policy("max_token_size = \"1KiB\"");
    rejects(&p, &"A".repeat(1025), "token too large").await;
    let big = hs(json!({"exp": now() + 600, "pad": "x".repeat(2000)}));
    rejects(&p, &big, "token too large").await;
    // Default 8 KiB.
    let d = hs_policy("");
    rejects(
        &d,
        &hs(json!({"exp": now() + 600, "pad": "x".repeat(9000)})),
        "token too large",
    )
    .await;
}

#[tokio::test]
async fn unknown_crit_rejects() {
    let p = hs_policy("");
    for crit in [json!(["exp"]), json!(["b64"]), json!([]), json!("x")] {
        let t = sign_raw(
            &json!({"alg": "HS256", "crit": crit}),
            &good(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        );
        rejects(&p, &t, "unknown crit header").await;
    }
}

/// jwt_tool's -X i / -X s: embed the attacker's key (jwk), point to it
/// (jku, x5u) or ship a certificate (x5c). None of them is ever read.
#[tokio::test]
async fn embedded_and_remote_key_headers_are_ignored() {
    let p = rs_policy("");
    let evil = rsa_key(&keys().rsa2);
    let evil_jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&evil, Algorithm::RS256).unwrap();
    let header = json!({
        "alg": "RS256",
        "jwk": serde_json::to_value(&evil_jwk).unwrap(),
        "jku": "http://127.0.0.1:1/jwks.json",
        "x5u": "http://127.0.0.1:1/cert.pem",
        "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"],
    });
    rejects(
        &p,
        &sign_raw(&header, &good(), &evil, Algorithm::RS256),
        "bad signature",
    )
    .await;
    // The same headers on a token signed with the right key change nothing.
    accepts(
        &p,
        &sign_raw(&header, &good(), &rsa_key(&keys().rsa), Algorithm::RS256),
    )
    .await;
}

fn jwks_policy() -> Arc<Policy> {
    let dir = tempfile::tempdir().unwrap();
    let jwk = |kp: &rcgen::KeyPair, alg: Algorithm, kid: &str| {
        let k = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
            _ => rsa_key(kp),
        };
        let mut j =
            serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(&k, alg).unwrap())
                .unwrap();
        j["kid"] = json!(kid);
        j
    };
    let set = json!({"keys": [
        jwk(&keys().rsa, Algorithm::RS256, "r1"),
        jwk(&keys().ec, Algorithm::ES256, "e1"),
        {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"},
    ]});
    std::fs::write(dir.path().join("jwks.json"), set.to_string()).unwrap();
    compile_policy(
        dir.path(),
        "algorithms = [\"RS256\", \"ES256\"]\njwks = \"jwks.json\"",
    )
    .unwrap()
}

fn es(kid: Option<&str>, kp: &rcgen::KeyPair) -> String {
    let mut h = json!({"alg": "ES256"});
    if let Some(k) = kid {
        h["kid"] = json!(k);
    }
    sign_raw(
        &h,
        &good(),
        &EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
        Algorithm::ES256,
    )
}

#[tokio::test]
async fn kid_only_selects_among_configured_keys() {
    let p = jwks_policy();
    accepts(&p, &es(Some("e1"), &keys().ec)).await;
    // Without kid, the keys whose type fits are tried.
    accepts(&p, &es(None, &keys().ec)).await;
    let with_kid = |kid: Value, key: &EncodingKey, alg: Algorithm| {
        sign_raw(
            &json!({"alg": format!("{alg:?}"), "kid": kid}),
            &good(),
            key,
            alg,
        )
    };
    let rsa = rsa_key(&keys().rsa);
    accepts(&p, &with_kid(json!("r1"), &rsa, Algorithm::RS256)).await;
    // Path traversal, injection, another key's kid, a kid of the wrong type.
    for kid in [
        "../../../../dev/null",
        "' OR 1=1 --",
        "/etc/passwd",
        "",
        "sym",
    ] {
        rejects(
            &p,
            &with_kid(json!(kid), &rsa, Algorithm::RS256),
            "unknown kid",
        )
        .await;
    }
    rejects(
        &p,
        &with_kid(json!("e1"), &rsa, Algorithm::RS256),
        "no key fits the algorithm",
    )
    .await;
    let other = rsa_key(&keys().rsa2);
    rejects(
        &p,
        &with_kid(json!("r1"), &other, Algorithm::RS256),
        "bad signature",
    )
    .await;
    rejects(&p, &with_kid(json!(1), &rsa, Algorithm::RS256), "bad kid").await;
    rejects(
        &p,
        &with_kid(json!(["r1"]), &rsa, Algorithm::RS256),
        "bad kid",
    )
    .await;
    rejects(
        &p,
        &with_kid(json!("k".repeat(300)), &rsa, Algorithm::RS256),
        "bad kid",
    )
    .await;
    // The HMAC key in the file is not a key: kid "sym" with HS256 fails at alg.
    let hs_sym = sign_raw(
        &json!({"alg": "HS256", "kid": "sym"}),
        &good(),
        &EncodingKey::from_secret(b"secret"),
        Algorithm::HS256,
    );
    rejects(&p, &hs_sym, "algorithm not allowed").await;
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
async fn two_authorization_headers_are_a_bad_request() {
    let p = hs_policy("");
    let mut parts = req(&hs(good()));
    parts
        .headers
        .append("authorization", "Bearer x".parse().unwrap());
    let r = run(&p, parts).await.err().unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
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

#[test]
fn config_errors_have_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let e = |body: &str| compile_policy(dir.path(), body).err().unwrap_or_default();
    assert!(
        e("algorithms = [\"HS256\"]\nsecret = { env = \"PORTCULLIS_TEST_UNSET_VAR\" }").contains(
            "jwt.p.secret.env: environment variable PORTCULLIS_TEST_UNSET_VAR is not set"
        )
    );
    assert!(e("algorithms = [\"RS256\"]\npublic_key = \"nope.pem\"")
        .contains("jwt.p.public_key: cannot read"));
    std::fs::write(
        dir.path().join("bad.pem"),
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    assert!(e("algorithms = [\"RS256\"]\npublic_key = \"bad.pem\"")
        .contains("jwt.p.public_key: bad.pem: not a PEM public key"));
    std::fs::write(dir.path().join("priv.pem"), keys().ec.serialize_pem()).unwrap();
    assert!(e("algorithms = [\"ES256\"]\npublic_key = \"priv.pem\"").contains("private key"));
    std::fs::write(dir.path().join("ec.pem"), keys().ec.public_key_pem()).unwrap();
    assert!(e("algorithms = [\"ES384\"]\npublic_key = \"ec.pem\"")
        .contains("ES384 does not fit the public key"));
    assert!(e("algorithms = [\"RS256\"]\nsecret = { value = \"s\" }")
        .contains("RS256 needs public_key"));
    assert!(e("algorithms = [\"HS256\"]").contains("set exactly one of secret"));
    assert!(
        e("algorithms = [\"HS256\"]\nsecret = { value = \"s\" }\njwks = \"j.json\"")
            .contains("set exactly one of secret")
    );
    assert!(e("algorithms = []\nsecret = { value = \"s\" }").contains("jwt.p.algorithms: list"));
    assert!(
        e("algorithms = [\"RS256\"]\njwks_url = \"http://idp.example.com/jwks\"")
            .contains("only allowed to loopback")
    );
    assert!(e("algorithms = [\"RS256\"]\njwks_url = \"ftp://x/\"").contains("https://"));
    assert!(
        e("algorithms = [\"HS256\"]\nsecret = { value = \"s\" }\nfrom = [\"body\"]")
            .contains("jwt.p.from[0]")
    );
    assert!(e(
        "algorithms = [\"HS256\"]\nsecret = { value = \"s\" }\nforward_claims = { sub = \"Host\" }"
    )
    .contains("jwt.p.forward_claims.sub"));
    assert!(
        e("algorithms = [\"HS256\"]\nsecret = { value = \"s\" }\nrequire = { a = [1] }")
            .contains("jwt.p.require.a")
    );
    std::fs::write(
        dir.path().join("j.json"),
        "{\"keys\": [{\"kty\": \"oct\", \"k\": \"AA\"}]}",
    )
    .unwrap();
    assert!(e("algorithms = [\"RS256\"]\njwks = \"j.json\"")
        .contains("jwt.p.jwks: j.json: no usable key"));
    // The secret itself never shows up in an error.
    let msg = e("algorithms = [\"RS256\"]\nsecret = { value = \"hunter2-secret\" }");
    assert!(!msg.contains("hunter2"), "{msg}");
    // A route naming a missing policy.
    let text = "[[listen]]\naddr = \"127.0.0.1:0\"\n[[route]]\npath = \"/\"\nrespond = { status = 200 }\njwt = \"nope\"\n";
    let src = Source {
        path: None,
        base_dir: dir.path().to_path_buf(),
    };
    let msg = load_str(text, &src, None).err().unwrap().to_string();
    assert!(
        msg.contains("route[0].jwt: no jwt policy named \"nope\""),
        "{msg}"
    );
}

#[test]
fn secret_from_file_drops_the_trailing_newline_and_is_watched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s"), format!("{SECRET}\n")).unwrap();
    let text = "[[listen]]\naddr = \"127.0.0.1:0\"\n[jwt.p]\nalgorithms = [\"HS256\"]\nsecret = { file = \"s\" }\n";
    let src = Source {
        path: None,
        base_dir: dir.path().to_path_buf(),
    };
    let snap = load_str(text, &src, None).unwrap();
    assert_eq!(snap.policies["p"].secret().unwrap(), SECRET.as_bytes());
    assert!(snap.files.contains(&dir.path().join("s")));
}

#[test]
fn unchanged_policy_is_carried_over_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let src = Source {
        path: None,
        base_dir: dir.path().to_path_buf(),
    };
    let text = |s: &str| {
        format!("[[listen]]\naddr = \"127.0.0.1:0\"\n[jwt.p]\nalgorithms = [\"HS256\"]\nsecret = {{ value = \"{s}\" }}\n[jwt.q]\nalgorithms = [\"HS256\"]\nsecret = {{ value = \"q\" }}\n")
    };
    let a = load_str(&text("one"), &src, None).unwrap();
    let b = load_str(&text("two"), &src, Some(&a)).unwrap();
    assert!(!Arc::ptr_eq(&a.policies["p"], &b.policies["p"]));
    assert!(Arc::ptr_eq(&a.policies["q"], &b.policies["q"]));
}

#[test]
fn minted_tokens_pass_their_policy() {
    let p = hs_policy("issuer = \"i\"\naudience = \"a\"\nrequire = { token_type = \"access\" }\nscopes = [\"s1\", \"s2\"]");
    let args = mint::TokenArgs {
        policy: "p".into(),
        sub: Some("bob".into()),
        claims: vec!["user_id=7".into(), "name=Bob".into()],
        exp: "15m".into(),
        ..Default::default()
    };
    let t = mint::mint(&p, &args).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let v = rt
        .block_on(p.verify(t.as_bytes()))
        .unwrap_or_else(|r| panic!("{}", r.reason));
    assert_eq!(v.claims["sub"], "bob");
    assert_eq!(v.claims["user_id"], 7);
    assert_eq!(v.claims["name"], "Bob");
    let exp = v.claims["exp"].as_i64().unwrap();
    assert!((exp - now() - 900).abs() <= 2);
    // Public-key policies need --key.
    assert!(mint::mint(
        &rs_policy(""),
        &mint::TokenArgs {
            exp: "1m".into(),
            ..Default::default()
        }
    )
    .unwrap_err()
    .contains("--key"));
}
