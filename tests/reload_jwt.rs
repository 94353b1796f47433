//! The file watcher and JWT: a JWKS file replaced on disk takes effect
//! without a signal.

mod common;

use common::*;
use http::Request;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::reload;
use serde_json::json;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn es256() -> (EncodingKey, serde_json::Value) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let key = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
    let jwk =
        serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap()).unwrap();
    (key, jwk)
}

fn token(key: &EncodingKey, kid: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(kid.to_string());
    jsonwebtoken::encode(&h, &json!({ "exp": exp }), key).unwrap()
}

fn jwks(kid: &str, mut jwk: serde_json::Value) -> String {
    jwk["kid"] = json!(kid);
    json!({ "keys": [jwk] }).to_string()
}

async fn status(url: &str, token: &str) -> u16 {
    let req = Request::get(url)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::default())
        .unwrap();
    send(req).await.0
}

#[tokio::test]
async fn a_replaced_jwks_file_takes_effect_without_a_signal() {
    let up = fixed("ok").await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let (old_key, old_jwk) = es256();
    let (new_key, new_jwk) = es256();
    std::fs::write(keys.join("jwks.json"), jwks("old", old_jwk)).unwrap();
    let cfg = format!(
        "[[listen]]\naddr = \"127.0.0.1:0\"\n[upstream.app]\nservers = [\"{}\"]\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\njwt = \"api\"\n\
         [jwt.api]\nalgorithms = [\"ES256\"]\njwks = \"keys/jwks.json\"\n",
        up.addr
    );
    let p = proxy_in(dir, &cfg).await;
    let _w = reload::watch(p.server.clone()).unwrap();
    let url = p.url("/");
    let (old_token, new_token) = (token(&old_key, "old"), token(&new_key, "new"));
    assert_eq!(status(&url, &old_token).await, 200);
    assert_eq!(status(&url, &new_token).await, 401);

    // Key rotation: the new set is written beside and renamed over the old.
    let tmp = keys.join("jwks.json.tmp");
    std::fs::write(&tmp, jwks("new", new_jwk)).unwrap();
    std::fs::rename(&tmp, keys.join("jwks.json")).unwrap();
    let start = Instant::now();
    while status(&url, &new_token).await != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "new key not accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The retired key's token, accepted (and cached) before, is refused now.
    assert_eq!(status(&url, &old_token).await, 401);
}
