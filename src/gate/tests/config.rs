//! A policy from its config: every error at its key, credentials never
//! quoted, secrets from files, what a reload carries over, and tokens the
//! `mint` command makes.

use super::*;

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
fn a_jwks_url_is_never_quoted_with_its_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let e = |url: &str| {
        compile_policy(
            dir.path(),
            &format!("algorithms = [\"RS256\"]\njwks_url = \"{url}\""),
        )
        .err()
        .unwrap_or_default()
    };
    for (url, expected) in [
        (
            "https://alice:hunter2@idp.example.com/jwks",
            "jwt.p.jwks_url: a user name or password in the URL",
        ),
        (
            "http://alice:hunter2@127.0.0.1:8080/jwks",
            "jwt.p.jwks_url: a user name or password in the URL",
        ),
        (
            "https://hunter2@idp.example.com/jwks?api_key=k3y",
            "jwt.p.jwks_url: a user name or password in the URL",
        ),
        (
            "http://idp.example.com/jwks?api_key=k3y",
            "jwt.p.jwks_url: \"http://idp.example.com/jwks\": plain http is only allowed",
        ),
        (
            "ftp://idp.example.com:21/jwks?api_key=k3y",
            "jwt.p.jwks_url: \"ftp://idp.example.com:21/jwks\": the URL must start with https://",
        ),
        (
            "https://idp example.com/jwks?api_key=k3y",
            "jwt.p.jwks_url: not a valid URL",
        ),
    ] {
        let msg = e(url);
        assert!(msg.contains(expected), "{url}: {msg}");
        for secret in ["alice", "hunter2", "k3y", "@"] {
            assert!(!msg.contains(secret), "{url}: {msg}");
        }
    }
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
