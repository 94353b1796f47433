//! The file watcher and TLS: a certificate renewed on disk is served on the
//! next handshake without a signal.

mod common;
mod tls_support;

use common::*;
use portcullis::reload;
use tls_support::*;

const SITE: &str = "[[tls.cert]]\ncert = \"certs/site.crt\"\nkey = \"certs/site.key\"\n";

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_signal() {
    let ca = Ca::new("Test CA");
    let up = fixed("ok").await;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    ca.leaf(&["a.test"]).write(&certs, "site");
    let p = proxy_in(dir, &config("", SITE, &up.addr)).await;
    let _w = reload::watch(p.server.clone()).unwrap();
    let addr = p.addrs[0];

    // Renewed in place, certificate then key.
    let renewed = ca.leaf(&["a.test"]);
    renewed.write(&certs, "site");
    let seen = eventually(10, || async {
        (presented(addr, Some("a.test")).await == renewed.der).then_some(())
    })
    .await;
    assert!(seen.is_some(), "renewed certificate not served");

    // Renewed by writing new files and renaming them over the old ones.
    let again = ca.leaf(&["a.test"]);
    again.write(&certs, "next");
    std::fs::rename(certs.join("next.key"), certs.join("site.key")).unwrap();
    std::fs::rename(certs.join("next.crt"), certs.join("site.crt")).unwrap();
    let seen = eventually(10, || async {
        (presented(addr, Some("a.test")).await == again.der).then_some(())
    })
    .await;
    assert!(seen.is_some(), "certificate renewed by rename not served");
}
