//! `jwks_url`'s fetch: the URL checked when the config is compiled, the
//! URL as messages and logs show it, and one GET of the key set.
//!
//! - Plain `http://` is accepted for loopback addresses only (and the peer
//!   is checked to be one); redirects are not followed; a body above 1 MiB
//!   is refused; a fetch gives up after 10 s.

use bytes::Bytes;
use http::header::{ACCEPT, HOST, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BODY: usize = 1 << 20;

/// Compile-time check of a `jwks_url`. A message never quotes the string
/// as written: it may carry a password (`user:pass@`) or an API key in
/// its query, and `check` prints these messages and a failed reload logs
/// them.
pub fn check_url(s: &str) -> Result<Uri, String> {
    let uri: Uri = s
        .parse()
        .map_err(|_| "not a valid URL (the value is not shown)".to_string())?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(
            "a user name or password in the URL is not supported (the URL is not shown)".into(),
        );
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("{:?} has no host", shown(&uri)))?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback(host) => Ok(uri),
        Some("http") => Err(format!(
            "{:?}: plain http is only allowed to loopback addresses; use https",
            shown(&uri)
        )),
        _ => Err(format!(
            "{:?}: the URL must start with https://",
            shown(&uri)
        )),
    }
}

/// `scheme://host[:port]/path`: a URL as messages and log lines show it.
/// Without userinfo and query, either of which may carry a credential.
pub fn shown(uri: &Uri) -> String {
    let mut s = String::new();
    if let Some(scheme) = uri.scheme_str() {
        s.push_str(scheme);
        s.push_str("://");
    }
    if let Some(host) = uri.host() {
        s.push_str(host);
    }
    if let Some(port) = uri.port() {
        s.push(':');
        s.push_str(port.as_str());
    }
    s.push_str(uri.path());
    s
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub async fn fetch(url: &Uri) -> Result<Vec<u8>, String> {
    tokio::time::timeout(FETCH_TIMEOUT, fetch_inner(url))
        .await
        .map_err(|_| "timed out".to_string())?
}

async fn fetch_inner(url: &Uri) -> Result<Vec<u8>, String> {
    let https = url.scheme_str() == Some("https");
    let host = url.host().ok_or("no host")?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((bare, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if !https {
        // A name like "localhost" could resolve anywhere: check the peer.
        let peer = tcp.peer_addr().map_err(|e| e.to_string())?;
        if !peer.ip().is_loopback() {
            return Err("plain http to a non-loopback address".into());
        }
    }
    // From host and port, not the authority as written, which may carry
    // userinfo (check_url refuses it; this does not depend on that).
    let authority = match url.port() {
        Some(p) => format!("{host}:{}", p.as_str()),
        None => host.to_string(),
    };
    let req = Request::get(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(HOST, authority)
        .header(ACCEPT, "application/json")
        .header(
            USER_AGENT,
            concat!("portcullis/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    if https {
        let name = rustls::pki_types::ServerName::try_from(bare.to_string())
            .map_err(|_| format!("{bare:?} is not a valid TLS server name"))?;
        let tls = tls_connector()
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        send(TokioIo::new(tls), req).await
    } else {
        send(TokioIo::new(tcp), req).await
    }
}

async fn send<IO>(io: IO, req: Request<Empty<Bytes>>) -> Result<Vec<u8>, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    // The connection task ends when `tx` is dropped at the end of this fetch.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    if resp.status() != StatusCode::OK {
        return Err(format!("status {}", resp.status().as_u16()));
    }
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok(body.to_bytes().to_vec())
}

/// One TLS client config for all fetches: Mozilla's roots (webpki-roots),
/// so the proxy verifies identity providers the same way on every machine,
/// whatever the host's CA store holds.
fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONNECTOR: OnceLock<tokio_rustls::TlsConnector> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            // The aws-lc-rs provider supports the safe default versions;
            // this cannot fail with it.
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("aws-lc-rs supports TLS 1.2 and 1.3")
                .with_root_certificates(roots)
                .with_no_client_auth();
            tokio_rustls::TlsConnector::from(Arc::new(config))
        })
        .clone()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers one request with `body`; hands back the request head.
    pub(in crate::gate) async fn one_answer(
        body: &'static str,
    ) -> (u16, tokio::task::JoinHandle<String>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "request head cut short");
                head.extend_from_slice(&buf[..n]);
            }
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(resp.as_bytes()).await.unwrap();
            String::from_utf8(head).unwrap()
        });
        (port, task)
    }

    #[test]
    fn a_url_is_shown_without_userinfo_or_query() {
        let u: Uri = "https://user:pw@idp.example.com:8443/keys/jwks.json?api_key=k3y"
            .parse()
            .unwrap();
        assert_eq!(shown(&u), "https://idp.example.com:8443/keys/jwks.json");
        let u: Uri = "http://[::1]/jwks".parse().unwrap();
        assert_eq!(shown(&u), "http://[::1]/jwks");
    }

    #[tokio::test]
    async fn the_host_header_is_built_from_host_and_port_only() {
        let (port, head) = one_answer("{\"keys\": []}").await;
        let url: Uri = format!("http://user:pw@127.0.0.1:{port}/jwks?api_key=k3y")
            .parse()
            .unwrap();
        fetch(&url).await.unwrap();
        let head = head.await.unwrap().to_ascii_lowercase();
        assert!(
            head.starts_with("get /jwks?api_key=k3y http/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("\r\nhost: 127.0.0.1:{port}\r\n")),
            "{head}"
        );
        assert!(!head.contains("user:") && !head.contains("pw@"), "{head}");
    }
}
