//! TLS test helpers: a test CA made with rcgen, certificate files, and
//! rustls clients (verifying, or recording what the server presented).
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A certificate and its key, as PEM text.
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Pair {
    /// Write NAME.crt and NAME.key into `dir`; returns the two paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let c = dir.join(format!("{name}.crt"));
        let k = dir.join(format!("{name}.key"));
        std::fs::write(&c, &self.cert_pem).unwrap();
        std::fs::write(&k, &self.key_pem).unwrap();
        (c, k)
    }
}

pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(cn: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        let issuer = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    pub fn roots(&self) -> RootCertStore {
        let mut r = RootCertStore::empty();
        r.add(self.der()).unwrap();
        r
    }

    /// A server certificate for `names` (DNS names, wildcards, IPs).
    pub fn leaf(&self, names: &[&str]) -> Pair {
        self.leaf_with(names, |_| {})
    }

    pub fn leaf_with(&self, names: &[&str], edit: impl FnOnce(&mut CertificateParams)) -> Pair {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut p = CertificateParams::new(names.clone()).unwrap();
        p.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        edit(&mut p);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// A client certificate with subject CN=`cn`, O=`org`.
    pub fn client(&self, cn: &str, org: &str) -> Pair {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        // Most general first, as CAs write them (rcgen's default has a CN).
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::OrganizationName, org);
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// Accepts any server certificate: for tests that look at which certificate
/// the server chose rather than whether a client would trust it.
#[derive(Debug)]
struct AcceptAny;

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

pub struct ClientOpts<'a> {
    /// None: verify nothing (record what was presented).
    pub roots: Option<RootCertStore>,
    pub alpn: &'a [&'a [u8]],
    pub versions: &'a [&'static rustls::SupportedProtocolVersion],
    pub client_cert: Option<&'a Pair>,
}

impl Default for ClientOpts<'_> {
    fn default() -> Self {
        ClientOpts {
            roots: None,
            alpn: &[],
            versions: rustls::DEFAULT_VERSIONS,
            client_cert: None,
        }
    }
}

pub fn client_config(o: &ClientOpts<'_>) -> ClientConfig {
    let b = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(o.versions)
        .unwrap();
    let b = match &o.roots {
        Some(r) => b.with_root_certificates(r.clone()),
        None => b
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny)),
    };
    let mut c = match o.client_cert {
        Some(p) => {
            let chain = vec![p.der.clone()];
            let key = rustls::pki_types::pem::PemObject::from_pem_slice(p.key_pem.as_bytes())
                .map(|k: PrivateKeyDer<'static>| k)
                .unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        }
        None => b.with_no_client_auth(),
    };
    c.alpn_protocols = o.alpn.iter().map(|p| p.to_vec()).collect();
    c
}

/// Connect and handshake. `sni`: the name to ask for; None sends no SNI
/// (the address is used as the server name, which rustls never sends).
pub async fn connect(
    addr: SocketAddr,
    sni: Option<&str>,
    o: &ClientOpts<'_>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name: ServerName<'static> = match sni {
        Some(n) => ServerName::try_from(n.to_string()).unwrap(),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(client_config(o)))
        .connect(name, tcp)
        .await
}

/// The leaf certificate the server presents for `sni`.
pub async fn presented(addr: SocketAddr, sni: Option<&str>) -> CertificateDer<'static> {
    let s = connect(addr, sni, &ClientOpts::default()).await.unwrap();
    s.get_ref().1.peer_certificates().unwrap()[0].clone()
}

pub type Resp = (http::StatusCode, http::Version, http::HeaderMap, String);

/// One GET over HTTP/1.1 on an established TLS stream.
pub async fn h1_get(s: TlsStream<TcpStream>, host: &str, path: &str) -> hyper::Result<Resp> {
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", host)
        .body(Full::<Bytes>::default())
        .unwrap();
    read(send.send_request(req).await?).await
}

/// One GET over HTTP/2 on an established TLS stream.
pub async fn h2_get(s: TlsStream<TcpStream>, host: &str, path: &str) -> hyper::Result<Resp> {
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s)).await?;
    tokio::spawn(conn);
    let req = Request::get(format!("https://{host}{path}"))
        .body(Full::<Bytes>::default())
        .unwrap();
    read(send.send_request(req).await?).await
}

async fn read(r: http::Response<hyper::body::Incoming>) -> hyper::Result<Resp> {
    let (parts, body) = r.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok((
        parts.status,
        parts.version,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// A TLS listener config around `certs` (the `[[tls.cert]]` tables) and
/// `tls_extra` (more `[tls]` keys), proxying everything to `upstream`.
pub fn config(tls_extra: &str, certs: &str, upstream: &str) -> String {
    format!(
        r#"
[log]
access = "off"

[[listen]]
addr = "127.0.0.1:0"
tls = true

[tls]
{tls_extra}

{certs}

[upstream.app]
servers = ["{upstream}"]

[[route]]
upstream = "app"
"#
    )
}

/// Poll `f` until it returns Some, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
