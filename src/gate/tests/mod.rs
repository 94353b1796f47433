//! The gate without sockets: every rule (rules.rs), a policy's config
//! (config.rs), and every hostile-token trick we can name (hostile.rs),
//! each rejected with the right status.

mod config;
mod hostile;
mod rules;

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
