//! `[tls]` and `[[tls.cert]]` -> `TlsSettings`: reads every certificate and
//! key, checks them, and builds the rustls server config. Problems go to the
//! compiler's error list with their places; things that still work but
//! deserve attention (an expired certificate, a dev certificate) become
//! warnings that `check` prints and the server logs.

use super::sni::SniResolver;
use super::TlsSettings;
use crate::config::raw::RawTls;
use crate::config::units::parse_duration;
use crate::config::{ConfigError, Errors, Source};
use http::HeaderValue;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod entry;

use entry::{cert, duplicates, Entry};

pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) struct Ctx<'a> {
    pub(super) errs: &'a mut Errors,
    warnings: Vec<ConfigError>,
    files: &'a mut Vec<PathBuf>,
    pub(super) src: &'a Source,
    pub(super) provider: &'a CryptoProvider,
    prev: Option<&'a TlsSettings>,
}

impl Ctx<'_> {
    pub(super) fn watch(&mut self, path: &std::path::Path) {
        if !self.files.iter().any(|f| f == path) {
            self.files.push(path.to_path_buf());
        }
    }

    fn warn(&mut self, place: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ConfigError {
            place: place.into(),
            message: message.into(),
        });
    }
}

/// Compile `[tls]`. `prev` is the running config's TLS, whose in-memory dev
/// certificates are kept when their names did not change (so a reload does
/// not hand browsers a new untrusted certificate each time). Every file
/// named is pushed to `files`, so that a renewal triggers a reload.
pub fn compile(
    raw: &RawTls,
    src: &Source,
    prev: Option<&TlsSettings>,
    files: &mut Vec<PathBuf>,
    errs: &mut Errors,
) -> Option<TlsSettings> {
    let n_errs = errs.0.len();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cx = Ctx {
        errs,
        warnings: Vec::new(),
        files,
        src,
        provider: &provider,
        prev,
    };

    let versions: &[&'static rustls::SupportedProtocolVersion] = match raw.min_version.as_deref() {
        None | Some("1.2") => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Some("1.3") => &[&rustls::version::TLS13],
        Some(v) => {
            cx.errs.add(
                "tls.min_version",
                format!(
                    "{v:?}: only \"1.2\" and \"1.3\" are supported (older versions are unsafe)"
                ),
            );
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        }
    };
    let hsts = raw.hsts.as_deref().and_then(|h| hsts(h, cx.errs));
    let handshake_timeout = match &raw.handshake_timeout {
        None => DEFAULT_HANDSHAKE_TIMEOUT,
        Some(s) => match parse_duration(s) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                cx.errs.add("tls.handshake_timeout", "must be more than 0s");
                DEFAULT_HANDSHAKE_TIMEOUT
            }
            Err(e) => {
                cx.errs.add("tls.handshake_timeout", e);
                DEFAULT_HANDSHAKE_TIMEOUT
            }
        },
    };

    if raw.cert.is_empty() {
        cx.errs.add(
            "tls.cert",
            "no certificate: add a [[tls.cert]] with cert and key, or self_signed = [\"localhost\"]",
        );
    }
    let mut entries: Vec<Entry> = Vec::new();
    for (i, c) in raw.cert.iter().enumerate() {
        if let Some(e) = cert(&mut cx, i, c) {
            entries.push(e);
        }
    }
    duplicates(&mut cx, &entries);

    let (verifier, client_auth) = super::client_auth::verifier(&mut cx, raw);

    if cx.errs.0.len() > n_errs {
        return None;
    }
    let names: Vec<Vec<String>> = entries.iter().map(|e| e.summary.names.clone()).collect();
    let keys: Vec<Arc<CertifiedKey>> = entries.iter().map(|e| e.key.clone()).collect();
    let builder = match ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
    {
        Ok(b) => b,
        Err(e) => {
            cx.errs
                .add("tls", format!("cannot build the TLS config: {e}"));
            return None;
        }
    };
    let mut config = builder
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SniResolver::new(keys, &names)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Stateless resumption: a returning client skips the full handshake
    // without a session cache shared (and locked) across threads. A reload
    // makes a new ticketer, so no session outlives a change of certificates
    // or client CA.
    match rustls::crypto::aws_lc_rs::Ticketer::new() {
        Ok(t) => config.ticketer = t,
        Err(e) => {
            cx.errs
                .add("tls", format!("cannot set up session tickets: {e}"));
            return None;
        }
    }
    // The client's cipher suite order is kept (rustls's default): every suite
    // on offer is strong, and a client without AES hardware picks ChaCha20,
    // as Mozilla's TLS guidelines recommend.
    let dev_keys = entries
        .iter()
        .filter_map(|e| Some((e.summary.self_signed.clone()?, e.key.clone())))
        .collect();
    Some(TlsSettings {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        hsts,
        handshake_timeout,
        client_auth,
        certs: entries.into_iter().map(|e| e.summary).collect(),
        dev_keys,
        warnings: cx.warnings,
    })
}

fn hsts(h: &str, errs: &mut Errors) -> Option<HeaderValue> {
    let ok_start = h
        .trim_start()
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("max-age="));
    match HeaderValue::from_str(h) {
        Ok(v) if ok_start => Some(v),
        _ => {
            errs.add(
                "tls.hsts",
                format!("{h:?} is not a Strict-Transport-Security value like \"max-age=63072000; includeSubDomains\""),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{load_str, Source};

    fn errors(tls: &str) -> String {
        let text = format!(
            "[[listen]]\naddr = \"127.0.0.1:0\"\ntls = true\n\n[tls]\n{tls}\n\n[[route]]\nrespond = {{ status = 200 }}\n"
        );
        let src = Source {
            path: None,
            base_dir: std::env::temp_dir(),
        };
        match load_str(&text, &src, None) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn settings_mistakes_have_places() {
        let dev = "[[tls.cert]]\nself_signed = [\"localhost\"]";
        assert_eq!(errors(dev), "");
        let e = errors(&format!("hsts = \"63072000\"\n{dev}"));
        assert!(
            e.contains("tls.hsts: \"63072000\" is not a Strict-Transport-Security value"),
            "{e}"
        );
        let e = errors(&format!("client_auth = \"optional\"\n{dev}"));
        assert!(e.contains("tls.client_auth: needs client_ca"), "{e}");
        let e = errors(&format!(
            "client_ca = \"nope.pem\"\nclient_auth = \"maybe\"\n{dev}"
        ));
        assert!(e.contains("tls.client_auth: \"maybe\""), "{e}");
        assert!(e.contains("tls.client_ca: cannot read"), "{e}");
        let e = errors(&format!("handshake_timeout = \"0s\"\n{dev}"));
        assert!(
            e.contains("tls.handshake_timeout: must be more than 0s"),
            "{e}"
        );
        let e = errors("[[tls.cert]]\nself_signed = [\"localhost\"]\ncert = \"a.crt\"");
        assert!(
            e.contains("tls.cert[0]: self_signed makes its own certificate"),
            "{e}"
        );
        let e = errors("[[tls.cert]]\nself_signed = [\"bad name\"]");
        assert!(
            e.contains("tls.cert[0].self_signed: \"bad name\" is not a DNS name"),
            "{e}"
        );
        let e = errors("[[tls.cert]]\nself_signed = [\"a.test\"]\nnames = [\"10.0.0.1\"]");
        assert!(
            e.contains("tls.cert[0].names[0]: \"10.0.0.1\" is an IP address"),
            "{e}"
        );
        let e = errors("min_version = \"1.2\"");
        assert!(e.contains("tls.cert: no certificate"), "{e}");
    }
}
