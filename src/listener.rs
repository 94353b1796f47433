//! Binding and accepting: one accept loop per `[[listen]]`, a connection
//! limit shared by all of them, and a stop signal per loop so that a reload
//! can close one listener without touching the others.
//!
//! The accept loops run on the main runtime's thread, which is not bound to
//! a CPU, and hand each connection to a worker. Accepting on the workers
//! themselves (one shared socket, or one `SO_REUSEPORT` socket each) saves
//! about 10 % of a connection's CPU but served no more connections a
//! second: the accepts then land on the workers' bound CPUs, and one CPU
//! idles while the other has work queued (bench/HISTORY.md, "a connection
//! per request").

use crate::service::ConnInfo;
use crate::state::{ListenKind, ListenSpec, State};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::watch;

pub mod limit;

/// What every accept loop shares.
pub struct Shared {
    pub state: Arc<State>,
    /// `max_connections` (`limit.rs`).
    pub limit: Arc<limit::ConnLimit>,
    /// Flipped once on shutdown; every connection holds a receiver, so
    /// `closed()` on the sender tells when the last one has finished.
    pub shutdown: watch::Sender<bool>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The server is gone without a shutdown: idle connections see the
        // signal's sender gone once woken.
        self.state.idle.wake_all();
        self.state.parked.close_all();
    }
}

pub struct Listener {
    pub spec: ListenSpec,
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    /// Owned by the accept loop: the socket closes when the loop ends (on
    /// stop or shutdown), so that new clients are refused, not queued.
    socket: Weak<AsyncFd<std::net::TcpListener>>,
}

impl Listener {
    /// Stop accepting; connections already accepted carry on.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Take `spec`'s socket options (a reload that changed only those);
    /// `spec` must be [`ListenSpec::same_socket`] as the current one.
    pub fn update(&mut self, spec: &ListenSpec) {
        if spec.defer_accept != self.spec.defer_accept {
            if let Some(socket) = self.socket.upgrade() {
                if let Err(e) = set_defer_accept(socket.get_ref(), spec.defer_accept) {
                    tracing::warn!(addr = %self.local_addr, error = %e, "cannot change defer_accept");
                    return;
                }
            }
        }
        self.spec = spec.clone();
    }
}

/// A listening socket, non-blocking. Kept a std listener: connections are
/// accepted from it without registering them with the accepting runtime
/// (`accept`), so only the worker that serves one registers it, once.
pub fn bind(spec: &ListenSpec) -> io::Result<std::net::TcpListener> {
    let addr = spec.addr;
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM.nonblocking().cloexec(),
        None,
    )?;
    // A restart must be able to bind while old connections sit in TIME_WAIT.
    sock.set_reuse_address(true)?;
    // Linux copies it to every accepted socket: no setsockopt per connection.
    sock.set_tcp_nodelay(true)?;
    sock.bind(&addr.into())?;
    set_defer_accept(&sock, spec.defer_accept)?;
    sock.listen(4096)?;
    Ok(sock.into())
}

/// `TCP_DEFER_ACCEPT` on or off. On, a connection is accepted once data
/// has come, or once the kernel's first resent SYN-ACK (after a second)
/// is acknowledged: a silent client then meets `header_timeout` or
/// `handshake_timeout` as before, a second later. In between it holds no
/// permit and costs no wake-up. nginx's `deferred` and haproxy's
/// `defer-accept` set the same option with the same second.
fn set_defer_accept(sock: &impl AsRawFd, on: bool) -> io::Result<()> {
    let secs: libc::c_int = if on { 1 } else { 0 };
    // SAFETY: a valid descriptor (borrowed from `sock`) and a c_int option
    // value whose size is passed with it.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn start(
    spec: ListenSpec,
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
) -> io::Result<Listener> {
    let local_addr = listener.local_addr()?;
    // SAFETY: the std listener owns its descriptor until the AsyncFd drops
    // it, and always returns that one.
    let listener = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }
        .map_err(io::Error::from)?;
    let listener = Arc::new(listener);
    let socket = Arc::downgrade(&listener);
    let (stop, stop_rx) = watch::channel(false);
    tokio::spawn(accept_loop(listener, spec.kind, shared, stop_rx));
    tracing::info!(addr = %local_addr, kind = ?spec.kind, defer_accept = spec.defer_accept, "listening");
    Ok(Listener {
        spec,
        local_addr,
        stop,
        socket,
    })
}

/// One connection, non-blocking and not registered with any runtime.
async fn accept(
    listener: &AsyncFd<std::net::TcpListener>,
) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    loop {
        let mut ready = listener.readable().await?;
        let r = ready.try_io(|l| {
            socket2::SockRef::from(l.get_ref()).accept4(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
        });
        if let Ok(r) = r {
            let (sock, addr) = r?;
            let peer = addr
                .as_socket()
                .ok_or_else(|| io::Error::other("peer is not an IP address"))?;
            return Ok((sock.into(), peer));
        }
    }
}

async fn accept_loop(
    listener: Arc<AsyncFd<std::net::TcpListener>>,
    kind: ListenKind,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    // A listener on one address accepts every connection on that address,
    // so the kernel need not be asked (`getsockname`) for each; on a
    // wildcard address each connection's own is asked for.
    let fixed_local = listener
        .get_ref()
        .local_addr()
        .ok()
        .filter(|a| !a.ip().is_unspecified());
    loop {
        let permit = tokio::select! {
            p = shared.limit.acquire() => match p {
                Some(p) => p,
                None => return,
            },
            _ = stop.changed() => return,
            _ = shutdown.changed() => return,
        };
        let accepting = shared.state.metrics.accepting();
        let (stream, peer) = tokio::select! {
            r = accept(&listener) => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
            _ = shutdown.changed() => return,
        };
        let local = match fixed_local {
            Some(a) => a,
            None => stream.local_addr().unwrap_or(peer),
        };
        drop(accepting);
        let state = shared.state.clone();
        let conn_shutdown = shared.shutdown.subscribe();
        // The connection's task is the serving future itself, made here:
        // a wrapping async block would keep a second copy of everything it
        // captures for the connection's whole life.
        match kind {
            ListenKind::Tls => crate::workers::spawn_conn(stream, permit, move |stream| {
                // Boxed: a TLS connection's state (the session, the
                // handshake) would otherwise size every plain one's task.
                Box::pin(crate::tls::serve(stream, peer, local, state, conn_shutdown))
            }),
            _ => {
                let info = Arc::new(ConnInfo {
                    peer,
                    local,
                    kind,
                    client_cert_subject: None,
                });
                crate::workers::spawn_conn(stream, permit, move |stream| {
                    crate::http::serve(stream, info, state, conn_shutdown)
                })
            }
        }
    }
}
