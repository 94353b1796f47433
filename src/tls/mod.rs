//! TLS termination with rustls (aws-lc-rs provider).
//!
//! ```text
//! compile.rs   [tls] + [[tls.cert]] -> TlsSettings (rustls ServerConfig), with check's messages
//! client_auth.rs  client certificates (mTLS)
//! certs.rs     PEM files, key/certificate match, names and validity, dev certificates
//! sni.rs       the certificate for the name the client asked for
//! serve()      handshake (timeout, the snapshot's config) -> http::serve
//! ```
//!
//! The rustls config lives in the snapshot, and each handshake takes it from
//! the snapshot current at that moment: a reload (new certificates after a
//! renewal) changes what new handshakes get, never an established connection.

pub mod certs;
mod client_auth;
pub mod compile;
pub mod sni;

use crate::config::ConfigError;
use crate::service::ConnInfo;
use crate::state::{ListenKind, Snapshot, State};
use http::HeaderValue;
use rustls::sign::CertifiedKey;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpStream;
use tokio::sync::watch;

pub struct TlsSettings {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// `Strict-Transport-Security` value added to TLS responses.
    pub hsts: Option<HeaderValue>,
    /// A client must finish its handshake within this.
    pub handshake_timeout: Duration,
    pub client_auth: ClientAuth,
    /// In config order; the first is the default.
    pub certs: Vec<CertSummary>,
    /// In-memory dev certificates by their `self_signed` list, kept across
    /// reloads.
    pub dev_keys: Vec<(Vec<String>, Arc<CertifiedKey>)>,
    /// Not errors, but worth a line in `check` and the log.
    pub warnings: Vec<ConfigError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Off,
    Optional,
    Required,
}

#[derive(Debug, Clone)]
pub struct CertSummary {
    pub place: String,
    /// The SNI names this certificate is chosen for.
    pub names: Vec<String>,
    /// The certificate file, or a note that it was made in memory.
    pub source: String,
    pub not_after: Option<SystemTime>,
    pub self_signed: Option<Vec<String>>,
}

/// Serve a connection accepted on a TLS listener: handshake, then HTTP/1.1
/// or HTTP/2 as agreed by ALPN. A failed or slow handshake closes this
/// connection only.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(tls) = state.load().tls.clone() else {
        // Only reachable if a reload removed [tls] while this connection was
        // being accepted; the compiler refuses tls listeners without it.
        return;
    };
    let handshake = tokio::time::timeout(tls.handshake_timeout, tls.acceptor.accept(stream));
    let stream = tokio::select! {
        r = handshake => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, timeout = ?tls.handshake_timeout, "TLS handshake timed out");
                return;
            }
        },
        _ = shutdown.changed() => return,
    };
    drop(tls);
    let client_cert_subject = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(certs::subject)
        // UTF-8 names (CN=José) are kept as bytes; control characters were
        // escaped by `subject`.
        .and_then(|s| HeaderValue::from_bytes(s.as_bytes()).ok())
        .map(Box::new);
    let info = Arc::new(ConnInfo {
        peer,
        local,
        kind: ListenKind::Tls,
        client_cert_subject,
    });
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        crate::http::serve_h2(stream, info, state, shutdown).await
    } else {
        // Never parked: a TLS session cannot leave its task.
        let _ = crate::http::serve(stream, info, state, shutdown).await;
    }
}

/// Log what `check` prints as warnings: the server calls this on start and
/// on every reload, when logging is set up.
pub fn log_warnings(snap: &Snapshot) {
    for w in snap.tls.iter().flat_map(|t| &t.warnings) {
        tracing::warn!(place = %w.place, "{}", w.message);
    }
}

/// Lines for `check`'s summary: each certificate, then the warnings.
pub fn summary(snap: &Snapshot) -> Vec<String> {
    let Some(t) = &snap.tls else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, c) in t.certs.iter().enumerate() {
        let names = if c.names.is_empty() {
            "no SNI names".to_string()
        } else {
            c.names.join(", ")
        };
        let until = c
            .not_after
            .map(|t| format!(", valid until {}", certs::day(t)))
            .unwrap_or_default();
        let default = if i == 0 { " (default)" } else { "" };
        out.push(format!("  cert     {names}{default}: {}{until}", c.source));
    }
    if t.client_auth != ClientAuth::Off {
        out.push(format!("  mtls     client certificates {:?}", t.client_auth).to_lowercase());
    }
    for w in &t.warnings {
        out.push(format!("  warning  {w}"));
    }
    out
}

/// `portcullis cert`: write a dev certificate and its key for `names` into
/// `dir`, as `NAME.crt` and `NAME.key` after the first name. Returns the two
/// paths. The key file is created readable by its owner only.
pub fn write_dev_cert(
    names: &[String],
    dir: &Path,
    force: bool,
) -> Result<(std::path::PathBuf, std::path::PathBuf), String> {
    let Some(first) = names.first() else {
        return Err("give at least one name, e.g. --names localhost,127.0.0.1".into());
    };
    for n in names {
        if n.parse::<std::net::IpAddr>().is_err() {
            sni::check_name(n)?;
        }
    }
    let dev = certs::self_signed(names)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let stem = first.replace('*', "_wildcard");
    let cert_path = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));
    write_new(&key_path, dev.key_pem.as_bytes(), 0o600, force)?;
    write_new(&cert_path, dev.cert_pem.as_bytes(), 0o644, force)?;
    Ok((cert_path, key_path))
}

fn write_new(path: &Path, data: &[u8], mode: u32, force: bool) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).mode(mode);
    if force {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    let mut f = o.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!("{} exists; use --force to replace it", path.display())
        } else {
            format!("cannot write {}: {e}", path.display())
        }
    })?;
    // --force on an existing file keeps its mode otherwise.
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| format!("cannot set permissions on {}: {e}", path.display()))?;
    f.write_all(data)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
