//! The way in: listeners, the TLS accept (the client-facing TLS configuration and the
//! handshake), the connection settings and the graceful drain. It ends where a request
//! begins: each accepted connection is described as a [`Connection`] and handed to the
//! service its caller gave. Uses only [`crate::base`].

use std::net::SocketAddr;
use std::sync::Arc;

use crate::base::engine::{Listener, PeerCertificate};
use crate::base::headers::PeerAddr;

pub mod accept;
mod answers;
pub mod server_tls;

pub use server_tls::ServerTls;

/// What is known about the connection a request came on.
#[derive(Debug, Clone)]
pub struct Connection {
    pub peer: SocketAddr,
    /// The peer's address as a header value, made once for the connection's requests.
    pub peer_addr: PeerAddr,
    pub listener: Listener,
    /// The connection is TLS (`--inbound-tls`).
    pub tls: bool,
    /// The client certificate the TLS handshake verified, if any.
    pub client_cert: Option<Arc<PeerCertificate>>,
}
