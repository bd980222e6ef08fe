//! The one body type every response of the sidecar carries.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

/// A streamed body: either the backend's body passed through, or a small local answer.
pub type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// A body holding `bytes`, sent at once.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// An empty body.
pub fn empty() -> ProxyBody {
    full(Bytes::new())
}
