//! portcullis: a reverse proxy configured by one TOML file.
//!
//! A request's way through the code:
//!
//! ```text
//! listener (accept, connection limit)                     listener.rs
//!   -> tls (rustls, SNI, ALPN h2/http1.1)                  tls/, TLS listeners only
//!   -> http: HTTP/1.x our own loop, HTTP/2 hyper's         http/h1/, http/h2.rs
//!   -> service: snapshot = state.load()                    service.rs
//!        -> router.find(host, path)   -> Route             router.rs   (404 if none)
//!        -> gate: route.jwt.check()   -> claims            gate/       (401/403, nothing forwarded)
//!        -> handler: static | upstream | redirect | respond   handler/
//!   -> access log line when the response body ends         access_log/
//! ```
//!
//! The configuration is compiled (`config/`) into an immutable `Snapshot`
//! held in one `ArcSwap` (`state.rs`); a reload compiles a new one and swaps
//! it in, and each request keeps the snapshot it started with.
//!
//! Connections are served thread-per-core (`workers.rs`): each stays on one
//! worker thread's runtime with the upstream connections it uses.

pub mod access_log;
pub mod basic_auth;
pub mod body;
pub mod client;
pub mod config;
pub mod error;
pub mod gate;
pub mod handler;
pub mod http;
pub mod limit;
pub mod listener;
pub mod memory;
pub mod metrics;
pub mod reload;
pub mod router;
pub mod server;
pub mod service;
pub mod state;
pub mod tls;
pub mod upstream;
pub mod workers;

pub use server::Server;
