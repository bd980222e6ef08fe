//! The body check: when the signature that admitted a call covers a body digest
//! (`Content-Digest` or `Digest`), the body is read into memory, up to
//! `--max-signed-body-bytes`, within the memory budget of held bodies
//! (`--body-buffer-budget`), and checked against it before anything is forwarded. A form body
//! an OAuth 1.0a signature covers is read the same way, before deciding ([`read_form`]). Every
//! other body streams untouched.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request};
use http_body_util::BodyExt;
use portcullis_policy::BodyDigest;

use crate::base::body::{BodyError, BufferLease, ProxyBody, empty, is_client_gone, leased};
use crate::base::engine::Outcome;

/// Why the body of a signed request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyRefused {
    /// Larger than `--max-signed-body-bytes`: 413.
    TooLarge,
    /// It does not match the signed `Content-Digest` / `Digest`: 401.
    Mismatch,
    /// The client failed to send it: 400.
    Unreadable,
    /// The client stopped sending it for `--body-read-timeout`: 408.
    Stalled,
    /// The client left before sending it all (its connection ended, or it reset its HTTP/2
    /// stream): audited 499, decision `abandoned`; no answer reaches it.
    ClientLeft,
    /// The bodies held in memory are at their budget: 503, retry later.
    Busy,
}

/// The request with its body ready to forward. When the admitting signature covers a body
/// digest, the body is read into memory (at most `limit` bytes) and checked against it;
/// otherwise it streams untouched.
pub(super) async fn check_signed_body(
    req: Request<ProxyBody>,
    outcome: &Outcome<'_>,
    limit: usize,
) -> (Request<ProxyBody>, Option<BodyRefused>) {
    let digest = match outcome {
        Outcome::Allow(admission) => admission.body_digest,
        _ => None,
    };
    let Some(digest) = digest else {
        return (req, None);
    };
    let (parts, body) = req.into_parts();
    // Boxed: only signed digests wait here, and this future is part of every request's.
    let (bytes, lease) = match Box::pin(read_bounded(&parts.headers, body, limit)).await {
        Ok(read) => read,
        Err(why) => return (Request::from_parts(parts, empty()), Some(why)),
    };
    if !digest_matches(&parts.headers, digest, &bytes) {
        return (Request::from_parts(parts, empty()), Some(BodyRefused::Mismatch));
    }
    (Request::from_parts(parts, leased(bytes, lease)), None)
}

/// Reads the form body an OAuth 1.0a signature covers before deciding, with the same bounds:
/// the request (its body now held in memory) and the body, or why it was refused.
pub(super) async fn read_form(
    req: Request<ProxyBody>,
    limit: usize,
) -> (Request<ProxyBody>, Result<Bytes, BodyRefused>) {
    let (parts, body) = req.into_parts();
    match read_bounded(&parts.headers, body, limit).await {
        Ok((bytes, lease)) => (Request::from_parts(parts, leased(bytes.clone(), lease)), Ok(bytes)),
        Err(why) => (Request::from_parts(parts, empty()), Err(why)),
    }
}

/// Reads `body` into memory: at most `limit` bytes (a larger `Content-Length` in `headers`
/// is refused before reading), within the memory budget of held bodies.
async fn read_bounded(
    headers: &HeaderMap,
    mut body: ProxyBody,
    limit: usize,
) -> Result<(Bytes, BufferLease), BodyRefused> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyRefused::TooLarge);
    }
    let mut lease = BufferLease::default();
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(BodyError::Stalled(_)) => return Err(BodyRefused::Stalled),
            Err(error) if is_client_gone(&error) => return Err(BodyRefused::ClientLeft),
            Err(_) => return Err(BodyRefused::Unreadable),
        };
        let Ok(data) = frame.into_data() else { continue };
        if buf.len() + data.len() > limit {
            return Err(BodyRefused::TooLarge);
        }
        if lease.grow(data.len()).is_err() {
            return Err(BodyRefused::Busy);
        }
        buf.extend_from_slice(&data);
    }
    Ok((buf.freeze(), lease))
}

/// Whether the request's digest header (every line, joined as the signature saw it) matches
/// `body`.
fn digest_matches(headers: &HeaderMap, digest: BodyDigest, body: &[u8]) -> bool {
    let mut value = String::new();
    for line in headers.get_all(digest.header()) {
        let Ok(line) = line.to_str() else {
            return false;
        };
        if !value.is_empty() {
            value.push_str(", ");
        }
        value.push_str(line.trim());
    }
    !value.is_empty() && digest.verify(&value, body).is_ok()
}
