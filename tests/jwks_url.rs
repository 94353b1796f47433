//! A JWT policy whose keys come from a `jwks_url`: keys rotated without a
//! restart and without a storm of fetches, a scheduled refresh that keeps
//! the last good set when the server fails, an unreachable URL that refuses
//! without hanging, and a server whose certificate is not trusted.

mod common;

use bytes::Bytes;
use common::jwt::*;
use common::*;
use http_body_util::Full;
use hyper::Response;
use jsonwebtoken::Algorithm;
use serde_json::json;

/// The status of a GET of the gated `/api/` with `token`.
async fn api(p: &Proxy, token: &str) -> u16 {
    with_token(&p.url("/api/"), token).await.0
}
use std::sync::{Arc, Mutex};

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
    let c = json!({"iss": "https://idp.test/", "exp": now() + 60});
    // The first request waits for the fetch started with the server.
    assert_eq!(api(&p, &rs256(&k1, "k1", &c)).await, 200);
    assert_eq!(idp.hits(), 1);

    // The provider rotates: a token with the new kid is accepted at once.
    *served.lock().unwrap() = json!({"keys": [jwk(&k2, Algorithm::RS256, "k2")]}).to_string();
    assert_eq!(api(&p, &rs256(&k2, "k2", &c)).await, 200);
    assert_eq!(idp.hits(), 2);
    assert_eq!(up.hits(), 2);

    // A flood of made-up kids: refused, and no fetch per token (one per
    // 30s cooldown at most; the last one was just now).
    for i in 0..50 {
        let t = rs256(&k2, &format!("bogus-{i}"), &c);
        assert_eq!(api(&p, &t).await, 401);
    }
    // Tokens of a foreign issuer never cause a fetch either.
    let foreign = json!({"iss": "https://evil.test/", "exp": now() + 60});
    assert_eq!(api(&p, &rs256(&k2, "new", &foreign)).await, 401);
    assert!(idp.hits() <= 3, "refetch storm: {} fetches", idp.hits());
    assert_eq!(
        idp.hits(),
        p.server.state().load().policies["api"].jwks_fetches() as usize
    );
    // The rotated-out key is gone.
    assert_eq!(api(&p, &rs256(&k1, "k1", &c)).await, 401);
    assert_eq!(up.hits(), 2, "a refused request reached the upstream");
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
    // Distinct claims per request, so that no answer comes from the cache.
    let token = |kp: &rcgen::KeyPair, kid: &str, n: u32| {
        rs256(kp, kid, &json!({"exp": now() + 60, "n": n}))
    };
    assert_eq!(api(&p, &token(&k1, "k1", 1)).await, 200);

    // The provider fails: the scheduled refresh keeps the last good set.
    served.lock().unwrap().0 = 500;
    let before = idp.hits();
    eventually("a failed refresh", || idp.hits() > before).await;
    assert_eq!(api(&p, &token(&k1, "k1", 2)).await, 200);

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
    assert_eq!(api(&p, &token(&k1, "k1", 3)).await, 401);
    assert_eq!(api(&p, &token(&k2, "k2", 4)).await, 200);
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
    let t = rs256(&rsa(), "k", &json!({"exp": now() + 60}));
    assert_eq!(api(&p, &t).await, 401);
    assert_eq!(up.hits(), 0);
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
    let t = rs256(&kp, "k", &json!({"exp": now() + 60}));
    assert_eq!(api(&p, &t).await, 401);
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
