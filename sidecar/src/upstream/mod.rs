//! The way out: forwarding an admitted call, bodies streamed, to the app on 127.0.0.1 over a
//! keep-alive pool ([`local`], [`pool`]) or to a remote origin over the route's own client
//! ([`origin`]), with the credentials the route adds toward it ([`credentials`]).
//!
//! Every forwarded call is told who was admitted ([`Verdict`], the `X-Portcullis-*` headers,
//! written only here) and loses the hop-by-hop headers and anything the client sent under the
//! `X-Portcullis-` prefix. Uses [`crate::base`], [`crate::telemetry`] (the error kinds it
//! counts) and [`crate::identity`] (client-credentials tokens toward origins).

use std::time::Duration;

use crate::telemetry::metrics::BackendErrorKind;

pub mod consumed;
pub mod credentials;
pub mod h1;
pub mod local;
pub mod origin;
pub mod outside;
pub mod pool;

pub use crate::base::headers::Verdict;
pub use credentials::{CredentialError, OriginCredentials};
pub use local::Forwarder;
pub use origin::{Origin, Origins};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a call could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("backend did not answer within {0:?}")]
    Timeout(Duration),
    #[error("backend unreachable: {0}")]
    Connect(#[source] BoxError),
    #[error("backend connection failed: {0}")]
    Protocol(#[source] BoxError),
    #[error("invalid backend address: {0}")]
    Address(#[from] http::Error),
    /// The route's origin credentials could not be added (body too large to sign, token
    /// endpoint down, ...).
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// The route's backend port is one of the sidecar's own listeners.
    #[error("backend port {0} is one of the sidecar's own listeners")]
    OwnPort(u16),
    /// The route's origin is this pod (a loopback or unspecified address).
    #[error("the origin is this pod (a loopback or unspecified address)")]
    ThisPod,
}

impl ForwardError {
    /// The metric label of this failure.
    pub fn kind(&self) -> BackendErrorKind {
        match self {
            Self::Timeout(_) => BackendErrorKind::Timeout,
            Self::Connect(_) => BackendErrorKind::Connect,
            Self::Protocol(_) | Self::Address(_) => BackendErrorKind::Protocol,
            Self::OwnPort(_) | Self::ThisPod => BackendErrorKind::Unsupported,
            Self::Credentials(CredentialError::Token(_)) => BackendErrorKind::Connect,
            Self::Credentials(_) => BackendErrorKind::Protocol,
        }
    }

    /// Whether the client stopped sending the request body (`--body-read-timeout`) while it
    /// was on its way.
    pub fn is_body_stalled(&self) -> bool {
        match self {
            Self::Credentials(CredentialError::Stalled(_)) => true,
            Self::Protocol(e) | Self::Connect(e) => crate::base::body::is_stalled(&**e),
            _ => false,
        }
    }

    /// Whether the client's connection ended while its request body was on its way.
    pub fn is_client_gone(&self) -> bool {
        match self {
            Self::Protocol(e) | Self::Connect(e) => crate::base::body::is_client_gone(&**e),
            _ => false,
        }
    }

    /// Whether the backend (or the token endpoint) failed, rather than the request.
    pub fn is_backend(&self) -> bool {
        !self.is_body_stalled()
            && !self.is_client_gone()
            && !matches!(
                self,
                Self::Credentials(
                    CredentialError::BodyTooLarge { .. }
                        | CredentialError::RequestBody(_)
                        | CredentialError::Sign(_)
                        | CredentialError::Busy(_)
                        | CredentialError::Stalled(_)
                )
            )
    }
}
