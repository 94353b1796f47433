//! Tokens, keys and configs for the tests of the JWT gate.

use super::{send, Body};
use http::Request;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

/// An HS256 token signed with `secret`, valid for a minute.
pub fn hs256(secret: &[u8]) -> String {
    sign(
        Algorithm::HS256,
        None,
        &json!({"exp": now() + 60}),
        &EncodingKey::from_secret(secret),
    )
}

pub async fn with_token(url: &str, token: &str) -> (u16, http::HeaderMap, String) {
    send(
        Request::get(url)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::default())
            .unwrap(),
    )
    .await
}

pub fn listen_and_route(policy: &str, upstream: &str) -> String {
    format!(
        "[[listen]]\naddr = \"127.0.0.1:0\"\n\n[upstream.app]\nservers = [\"{upstream}\"]\n\n\
         [[route]]\npath = \"/api/\"\nupstream = \"app\"\njwt = \"{policy}\"\n\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n"
    )
}

/// An RS256 token with `claims`, signed with `kp` and naming `kid`.
pub fn rs256(kp: &rcgen::KeyPair, kid: &str, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).unwrap();
    sign(Algorithm::RS256, Some(kid), claims, &key)
}

pub fn rsa() -> rcgen::KeyPair {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap()
}

pub fn jwk(kp: &rcgen::KeyPair, alg: Algorithm, kid: &str) -> Value {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).unwrap(),
    };
    let mut j = serde_json::to_value(Jwk::from_encoding_key(&key, alg).unwrap()).unwrap();
    j["kid"] = json!(kid);
    j
}

/// Wait until the log file holds `needle` (lines are written by another
/// thread); gives up after 15s.
pub async fn eventually_contains(log: &std::path::Path, needle: &str) {
    eventually(needle, || {
        std::fs::read_to_string(log).is_ok_and(|t| t.contains(needle))
    })
    .await;
}

/// Poll `cond` until it holds, for at most 15s.
pub async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
