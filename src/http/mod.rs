//! Serving one accepted connection. HTTP/1.x is our own loop (`h1`): the
//! request's whole way, head to last body byte, runs in the connection's
//! task with no channel or second task in between, and an idle connection
//! keeps no buffer. HTTP/2 (ALPN `h2`, or the prior-knowledge preface on a
//! plain listener) is hyper's server (`h2`).

pub mod decode;
mod h1;
mod h2;

pub use h1::{H1Body, OnUpgrade, Upgraded};

use crate::service::ConnInfo;
use crate::state::State;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// A client connection's transport.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// Wait until a read would find something, without a buffer to read
    /// into: what lets an idle connection hold none. Transports that cannot
    /// tell say "ready" and are read into a buffer at once.
    fn poll_read_ready(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Io for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

impl Io for tokio_rustls::server::TlsStream<TcpStream> {}

/// HTTP/1.x, or HTTP/2 if the client opens with its preface.
pub async fn serve<T: Io>(
    io: T,
    info: Arc<ConnInfo>,
    state: Arc<State>,
    shutdown: watch::Receiver<bool>,
) {
    if let Some(io) = h1::serve(io, info.clone(), state.clone(), shutdown.clone()).await {
        // Boxed: rare, and its state would otherwise make every HTTP/1
        // connection's task as large.
        Box::pin(h2::serve(io, info, state, shutdown)).await;
    }
}

/// HTTP/2 from the first byte (ALPN chose it).
pub async fn serve_h2<T: Io>(
    io: T,
    info: Arc<ConnInfo>,
    state: Arc<State>,
    shutdown: watch::Receiver<bool>,
) {
    h2::serve(io, info, state, shutdown).await
}
