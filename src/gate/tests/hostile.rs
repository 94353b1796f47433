//! Every trick of an attacker holding a valid token and jwt_tool.

use super::*;
use jsonwebtoken::EncodingKey;
use serde_json::{json, Value};

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
async fn two_authorization_headers_are_a_bad_request() {
    let p = hs_policy("");
    let mut parts = req(&hs(good()));
    parts
        .headers
        .append("authorization", "Bearer x".parse().unwrap());
    let r = run(&p, parts).await.err().unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}
