//! TLS certificates over time and by the client: reload after renewal, a
//! broken renewal, client certificates (mTLS), and what `check` and
//! `portcullis cert` tell a sysadmin.

mod common;
mod tls_support;

use common::*;
use std::path::Path;
use std::process::Command;
use tls_support::*;

const SITE: &str = "[[tls.cert]]\ncert = \"site.crt\"\nkey = \"site.key\"\n";

fn verifying(ca: &Ca) -> ClientOpts<'static> {
    ClientOpts {
        roots: Some(ca.roots()),
        ..Default::default()
    }
}

#[tokio::test]
async fn replaced_certificate_serves_the_next_handshake_after_reload() {
    let ca = Ca::new("Test CA");
    let up = fixed("ok").await;
    let dir = tempfile::tempdir().unwrap();
    let first = ca.leaf(&["a.test"]);
    first.write(dir.path(), "site");
    let p = proxy_in(dir, &config("", SITE, &up.addr)).await;
    let addr = p.addrs[0];
    assert_eq!(presented(addr, Some("a.test")).await, first.der);

    // The watcher reloads on changes to these files.
    let files = p.server.state().load().files.clone();
    for f in ["site.crt", "site.key"] {
        assert!(
            files.contains(&p.dir.path().join(f)),
            "{f} not in {files:?}"
        );
    }

    // A connection established before the renewal.
    let old = connect(addr, Some("a.test"), &verifying(&ca))
        .await
        .unwrap();
    let (mut old_send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(old))
            .await
            .unwrap();
    tokio::spawn(conn);

    let renewed = ca.leaf(&["a.test"]);
    renewed.write(p.dir.path(), "site");
    p.server.reload().await.unwrap();
    assert_eq!(presented(addr, Some("a.test")).await, renewed.der);
    let s = connect(addr, Some("a.test"), &verifying(&ca))
        .await
        .unwrap();
    assert_eq!(h1_get(s, "a.test", "/").await.unwrap().0, 200);

    // The old connection is untouched and still served.
    let req = http::Request::get("/")
        .header("host", "a.test")
        .body(Body::default())
        .unwrap();
    assert_eq!(old_send.send_request(req).await.unwrap().status(), 200);
}

#[tokio::test]
async fn symlink_swap_like_certbot_is_picked_up_on_reload() {
    let ca = Ca::new("Test CA");
    let up = fixed("ok").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    std::fs::create_dir_all(d.join("archive")).unwrap();
    std::fs::create_dir_all(d.join("live")).unwrap();
    let v1 = ca.leaf(&["a.test"]);
    v1.write(&d.join("archive"), "site1");
    let link = |n: u32| {
        for ext in ["crt", "key"] {
            let tmp = d.join(format!("live/site.{ext}.new"));
            std::os::unix::fs::symlink(format!("../archive/site{n}.{ext}"), &tmp).unwrap();
            std::fs::rename(&tmp, d.join(format!("live/site.{ext}"))).unwrap();
        }
    };
    link(1);
    let certs = "[[tls.cert]]\ncert = \"live/site.crt\"\nkey = \"live/site.key\"\n";
    let p = proxy_in(dir, &config("", certs, &up.addr)).await;
    assert_eq!(presented(p.addrs[0], Some("a.test")).await, v1.der);

    let v2 = ca.leaf(&["a.test"]);
    v2.write(&p.dir.path().join("archive"), "site2");
    link(2);
    p.server.reload().await.unwrap();
    assert_eq!(presented(p.addrs[0], Some("a.test")).await, v2.der);
}

#[tokio::test]
async fn mismatched_key_after_renewal_keeps_the_old_certificate() {
    let ca = Ca::new("Test CA");
    let up = fixed("ok").await;
    let dir = tempfile::tempdir().unwrap();
    let first = ca.leaf(&["a.test"]);
    first.write(dir.path(), "site");
    let p = proxy_in(dir, &config("", SITE, &up.addr)).await;

    // New certificate, but the key of another one.
    let new = ca.leaf(&["a.test"]);
    let other = ca.leaf(&["a.test"]);
    std::fs::write(p.dir.path().join("site.crt"), &new.cert_pem).unwrap();
    std::fs::write(p.dir.path().join("site.key"), &other.key_pem).unwrap();
    let errs = p.server.reload().await.unwrap_err().to_string();
    assert!(errs.contains("tls.cert[0].key"), "{errs}");
    assert!(
        errs.contains("does not belong to the certificate"),
        "{errs}"
    );
    assert!(!errs.contains("PRIVATE KEY"), "key material in: {errs}");

    assert_eq!(presented(p.addrs[0], Some("a.test")).await, first.der);
    let s = connect(p.addrs[0], Some("a.test"), &verifying(&ca))
        .await
        .unwrap();
    assert_eq!(h1_get(s, "a.test", "/").await.unwrap().0, 200);

    // Fixing the key lets the next reload through.
    std::fs::write(p.dir.path().join("site.key"), &new.key_pem).unwrap();
    p.server.reload().await.unwrap();
    assert_eq!(presented(p.addrs[0], Some("a.test")).await, new.der);
}

/// A proxy with a server certificate from `ca` and client certificates
/// checked against `clients`.
async fn mtls_proxy(ca: &Ca, clients: &Ca, mode: &str, up: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    ca.leaf(&["a.test"]).write(dir.path(), "site");
    std::fs::write(dir.path().join("clients-ca.pem"), clients.pem()).unwrap();
    let extra = format!("client_ca = \"clients-ca.pem\"\nclient_auth = \"{mode}\"");
    proxy_in(dir, &config(&extra, SITE, up)).await
}

async fn get_with(p: &Proxy, o: &ClientOpts<'_>) -> Result<(u16, String), String> {
    let s = connect(p.addrs[0], Some("a.test"), o)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    // A forged header must never reach the upstream.
    let req = http::Request::get("/")
        .header("host", "a.test")
        .header("x-client-cert-subject", "CN=admin")
        .body(Body::default())
        .unwrap();
    let r = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let body = http_body_util::BodyExt::collect(r.into_body())
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test]
async fn mtls_required_accepts_a_client_certificate_from_the_ca_and_refuses_others() {
    let ca = Ca::new("Test CA");
    let clients = Ca::new("Clients CA");
    let up = echo().await;
    let p = mtls_proxy(&ca, &clients, "required", &up.addr).await;

    let alice = clients.client("alice", "Example, Inc.");
    let o = ClientOpts {
        roots: Some(ca.roots()),
        client_cert: Some(&alice),
        ..Default::default()
    };
    let (status, body) = get_with(&p, &o).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        json(&body)["headers"]["x-client-cert-subject"],
        "CN=alice,O=Example\\, Inc."
    );

    let r = get_with(&p, &verifying(&ca)).await;
    assert!(r.is_err(), "no client certificate was accepted: {r:?}");
    let stranger = Ca::new("Other CA").client("mallory", "Other");
    let o = ClientOpts {
        roots: Some(ca.roots()),
        client_cert: Some(&stranger),
        ..Default::default()
    };
    let r = get_with(&p, &o).await;
    assert!(
        r.is_err(),
        "a certificate from another CA was accepted: {r:?}"
    );
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn mtls_optional_serves_clients_without_a_certificate() {
    let ca = Ca::new("Test CA");
    let clients = Ca::new("Clients CA");
    let up = echo().await;
    let p = mtls_proxy(&ca, &clients, "optional", &up.addr).await;

    let (status, body) = get_with(&p, &verifying(&ca)).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        json(&body)["headers"]
            .get("x-client-cert-subject")
            .is_none(),
        "{body}"
    );

    let bob = clients.client("bob", "Example");
    let o = ClientOpts {
        roots: Some(ca.roots()),
        client_cert: Some(&bob),
        ..Default::default()
    };
    let (_, body) = get_with(&p, &o).await.unwrap();
    assert_eq!(
        json(&body)["headers"]["x-client-cert-subject"],
        "CN=bob,O=Example"
    );

    // Presenting a certificate that does not verify is still refused.
    let stranger = Ca::new("Other CA").client("mallory", "Other");
    let o = ClientOpts {
        roots: Some(ca.roots()),
        client_cert: Some(&stranger),
        ..Default::default()
    };
    assert!(get_with(&p, &o).await.is_err());
}

fn check(dir: &Path, toml: &str) -> (bool, String, String) {
    let (code, out, err) = common::check_cli(dir, toml);
    (code == 0, out, err)
}

#[test]
fn check_reports_each_certificate_mistake_with_its_place() {
    let ca = Ca::new("Test CA");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca.leaf(&["a.test"]).write(d, "good");
    let mismatched = ca.leaf(&["b.test"]);
    std::fs::write(d.join("mismatch.crt"), &mismatched.cert_pem).unwrap();
    std::fs::write(d.join("mismatch.key"), ca.leaf(&["b.test"]).key_pem).unwrap();
    ca.leaf(&["c.test", "a.test"]).write(d, "dup");
    std::fs::write(d.join("notakey.key"), "hello\n").unwrap();
    let certs = r#"
[[tls.cert]]
cert = "good.crt"
key = "good.key"

[[tls.cert]]
cert = "missing.crt"
key = "missing.key"

[[tls.cert]]
cert = "mismatch.crt"
key = "mismatch.key"

[[tls.cert]]
cert = "dup.crt"
key = "dup.key"

[[tls.cert]]
cert = "good.crt"
key = "notakey.key"
names = ["e.test"]

[[tls.cert]]
cert = "good.crt"
"#;
    let (ok, _, err) = check(d, &config("min_version = \"1.1\"", certs, "127.0.0.1:9"));
    assert!(!ok);
    for want in [
        "tls.cert[1].cert: cannot read",
        "missing.crt",
        "tls.cert[2].key:",
        "mismatch.key does not belong to the certificate in",
        "tls.cert[3].names: \"a.test\" is also served by tls.cert[0]",
        "tls.cert[4].key:",
        "no private key found",
        "tls.cert[5]: set cert and key",
        "tls.min_version: \"1.1\"",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn check_warns_about_expired_and_dev_certificates_but_passes() {
    let ca = Ca::new("Test CA");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca.leaf_with(&["old.test"], |p| {
        p.not_before = rcgen::date_time_ymd(2019, 1, 1);
        p.not_after = rcgen::date_time_ymd(2020, 1, 1);
    })
    .write(d, "old");
    let certs = "[[tls.cert]]\ncert = \"old.crt\"\nkey = \"old.key\"\n\n[[tls.cert]]\nself_signed = [\"localhost\", \"127.0.0.1\"]\n";
    let (ok, out, err) = check(d, &config("", certs, "127.0.0.1:9"));
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("cert     old.test (default):"), "{out}");
    assert!(out.contains("valid until 2020-01-01"), "{out}");
    assert!(
        out.contains("warning  tls.cert[0].cert:") && out.contains("expired on 2020-01-01"),
        "{out}"
    );
    assert!(
        out.contains("cert     localhost: self-signed, in memory"),
        "{out}"
    );
    assert!(
        out.contains("warning  tls.cert[1]: self-signed certificate for localhost, 127.0.0.1"),
        "{out}"
    );
    assert!(out.contains("NOT FOR PRODUCTION"), "{out}");
}

#[test]
fn cert_command_writes_a_usable_pair_once() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("certs");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["cert", "--names", "localhost,127.0.0.1", "--out"])
            .arg(&out_dir)
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let key = out_dir.join("localhost.key");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let certs = "[[tls.cert]]\ncert = \"certs/localhost.crt\"\nkey = \"certs/localhost.key\"\n";
    let (ok, out, err) = check(dir.path(), &config("", certs, "127.0.0.1:9"));
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("cert     localhost (default):"), "{out}");

    let o = run(&[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    assert!(run(&["--force"]).status.success());
}

#[tokio::test]
async fn dev_certificate_is_served_and_kept_across_reloads() {
    let up = fixed("ok").await;
    let certs = "[[tls.cert]]\nself_signed = [\"localhost\", \"127.0.0.1\"]\n";
    let p = proxy(&config("", certs, &up.addr)).await;
    let first = presented(p.addrs[0], Some("localhost")).await;
    p.server.reload().await.unwrap();
    assert_eq!(presented(p.addrs[0], None).await, first);

    // A client that trusts exactly this certificate can use it by IP.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(first).unwrap();
    let o = ClientOpts {
        roots: Some(roots),
        ..Default::default()
    };
    let s = connect(p.addrs[0], None, &o).await.unwrap();
    assert_eq!(h1_get(s, "127.0.0.1", "/").await.unwrap().0, 200);
}
