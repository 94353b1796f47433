//! TLS termination. Not built yet: a config with `tls = true` or `[tls]` is
//! refused by the compiler.

use http::HeaderValue;

pub struct TlsSettings {
    /// `Strict-Transport-Security` value added to TLS responses.
    pub hsts: Option<HeaderValue>,
}

/// Serve a connection on a TLS listener. Until TLS is built the compiler
/// refuses such listeners, so this only closes the connection.
pub async fn serve(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    _local: std::net::SocketAddr,
    _state: std::sync::Arc<crate::state::State>,
    _shutdown: tokio::sync::watch::Receiver<bool>,
) {
    tracing::warn!(%peer, "TLS listener without TLS support; closing connection");
    drop(stream);
}
