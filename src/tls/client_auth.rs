//! `client_ca` and `client_auth`: the verifier for client certificates (mTLS).

use super::certs;
use super::compile::Ctx;
use super::ClientAuth;
use crate::config::raw::RawTls;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use std::sync::Arc;

/// No client certificates asked for, or the ones signed by `client_ca`:
/// always verified when presented, required unless `client_auth =
/// "optional"`.
pub(super) fn verifier(
    cx: &mut Ctx<'_>,
    raw: &RawTls,
) -> (
    Arc<dyn rustls::server::danger::ClientCertVerifier>,
    ClientAuth,
) {
    let none = || WebPkiClientVerifier::no_client_auth();
    let mode = match raw.client_auth.as_deref() {
        None | Some("required") => ClientAuth::Required,
        Some("optional") => ClientAuth::Optional,
        Some(m) => {
            cx.errs.add(
                "tls.client_auth",
                format!("{m:?}: expected \"required\" or \"optional\""),
            );
            ClientAuth::Required
        }
    };
    let Some(ca) = &raw.client_ca else {
        if raw.client_auth.is_some() {
            cx.errs.add(
                "tls.client_auth",
                "needs client_ca: the PEM file of the CA that signs client certificates",
            );
        }
        return (none(), ClientAuth::Off);
    };
    let path = cx.src.resolve(ca);
    cx.watch(&path);
    let chain = match certs::read_chain(&path) {
        Ok(c) => c,
        Err(e) => {
            cx.errs.add("tls.client_ca", e);
            return (none(), ClientAuth::Off);
        }
    };
    let mut roots = RootCertStore::empty();
    for (i, c) in chain.into_iter().enumerate() {
        if let Err(e) = roots.add(c) {
            cx.errs.add(
                "tls.client_ca",
                format!(
                    "{}: certificate {i} is not a usable CA: {e}",
                    path.display()
                ),
            );
        }
    }
    let mut b =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(cx.provider.clone()));
    if mode == ClientAuth::Optional {
        b = b.allow_unauthenticated();
    }
    match b.build() {
        Ok(v) => (v, mode),
        Err(e) => {
            cx.errs
                .add("tls.client_ca", format!("{}: {e}", path.display()));
            (none(), ClientAuth::Off)
        }
    }
}
