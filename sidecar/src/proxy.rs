//! The request path: decide, then deny or forward, then audit and count.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::audit;
use crate::body::{ProxyBody, full};
use crate::engine::{DenialKind, Outcome, PeerCertificate, RequestView};
use crate::forward::{ForwardError, Verdict};
use crate::metrics::BackendErrorKind;
use crate::origin_auth::CredentialError;
use crate::respond::{Answer, rate_limit_headers};
use crate::state::Shared;
use portcullis_policy::BodyDigest;

pub use crate::engine::Listener;

/// Most introspection calls made for one request (one per introspecting profile of its route).
const MAX_INTROSPECTIONS: usize = 4;

/// What is known about the connection a request came on.
#[derive(Debug, Clone)]
pub struct Connection {
    pub peer: SocketAddr,
    pub listener: Listener,
    /// The connection is TLS (`--inbound-tls`).
    pub tls: bool,
    /// The client certificate the TLS handshake verified, if any.
    pub client_cert: Option<Arc<PeerCertificate>>,
}

/// Handles one request end to end. Never fails: every failure is an answer.
pub async fn handle(shared: Arc<Shared>, conn: Connection, req: Request<Incoming>) -> Response<ProxyBody> {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let early = |response: Response<ProxyBody>, route: &str, profile: &str, client_ip, reason: &str| {
        let record = audit::Record {
            route,
            profile,
            identity: "-",
            client_ip,
            method: method.as_str(),
            path: &path,
            status: response.status().as_u16(),
            latency: start.elapsed(),
            decision: "error",
            reason,
        };
        shared
            .metrics
            .request(route, profile, "error", record.status, record.latency);
        shared.audit.record(&record);
        response
    };
    if head_size(&req) > shared.max_header_bytes {
        return early(
            Answer::HeadersTooLarge.response(),
            "-",
            "-",
            conn.peer.ip(),
            "request headers too large",
        );
    }
    let active = shared.active.load_full();
    // As sent: the engine compares hosts case-insensitively (`routes::normal_host`).
    let host = req
        .uri()
        .host()
        .or_else(|| req.headers().get(HOST).and_then(|h| h.to_str().ok()).map(strip_port));
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(HOST).and_then(|h| h.to_str().ok()));
    let view = RequestView {
        method: method.as_str(),
        host,
        authority,
        path: &path,
        query: req.uri().query(),
        headers: req.headers(),
        peer: conn.peer.ip(),
        tls: conn.tls,
        listener: conn.listener,
        client_cert: conn.client_cert.as_deref(),
    };
    if let Some(endpoint) = active.engine.token_endpoint(&view) {
        // The Builtin OAuth2 token endpoint: answered here, never counted.
        return crate::oauth2::token(&shared, endpoint, req, start).await;
    }
    let mut now = unix_millis();
    // An opaque bearer token of a profile with introspection: asked about first (the engine
    // does no I/O); a route with several such profiles may need a few.
    for _ in 0..MAX_INTROSPECTIONS {
        let Some(wanted) = active.engine.introspection_wanted(&view, now) else {
            break;
        };
        if let Err(error) = shared.introspector.ensure(wanted).await {
            shared.metrics.backend_error(BackendErrorKind::Introspection);
            tracing::warn!(
                route = wanted.route,
                profile = wanted.profile,
                %error,
                "token introspection failed; answering 503"
            );
            return early(
                Answer::IntrospectionUnavailable { route: wanted.route }.response(),
                wanted.route,
                wanted.profile,
                wanted.client_ip,
                "token introspection failed",
            );
        }
        // The decision is taken after the answer came, not before the question went.
        now = unix_millis();
    }
    let outcome = active.engine.decide(&view, now);
    // A signature that covers a body digest: the body is read (up to a limit) and checked
    // before anything is forwarded; other bodies stream.
    let (req, body_refused) = check_signed_body(req, &outcome, shared.max_signed_body_bytes).await;

    let mut record = audit::Record {
        route: "-",
        profile: "-",
        identity: "-",
        client_ip: conn.peer.ip(),
        method: method.as_str(),
        path: &path,
        status: 0,
        latency: start.elapsed(),
        decision: "no_route",
        reason: "-",
    };
    let (response, decision_label) = match &outcome {
        Outcome::BadRequest { reason } => {
            record.decision = "deny";
            record.reason = reason;
            (Answer::BadRequest.response(), "deny")
        }
        Outcome::NoRoute => {
            record.reason = "no route matches";
            (Answer::NoRoute.response(), "no_route")
        }
        Outcome::Redirect { route, location } => {
            record.route = route;
            record.decision = "redirect";
            record.reason = "https required";
            (Answer::Redirect { route, location }.response(), "redirect")
        }
        Outcome::Deny(denial) => {
            record.route = denial.route;
            record.profile = denial.profile;
            record.client_ip = denial.client_ip;
            record.decision = "deny";
            record.reason = denial.reason;
            let answer = match &denial.kind {
                DenialKind::Unauthorized { challenges } => Answer::Unauthorized {
                    route: denial.route,
                    challenges,
                },
                DenialKind::Forbidden => Answer::Forbidden { route: denial.route },
                DenialKind::InsufficientScope { challenges } => Answer::InsufficientScope {
                    route: denial.route,
                    challenges,
                },
                DenialKind::RateLimited { scope, info } => {
                    shared.metrics.rate_limited(scope.as_str());
                    Answer::RateLimited {
                        route: denial.route,
                        scope: scope.as_str(),
                        info: *info,
                    }
                }
            };
            (answer.response(), "deny")
        }
        Outcome::Allow(admission) if body_refused.is_some() => {
            let route = &*admission.route.name;
            record.route = route;
            record.profile = admission.profile;
            record.identity = &admission.identity;
            record.client_ip = admission.client_ip;
            record.decision = "deny";
            // Refused: the hit is not counted (the signature stays used up).
            active.engine.refund(admission);
            let answer = match body_refused {
                Some(BodyRefused::TooLarge) => {
                    record.reason = "signed request body larger than --max-signed-body-bytes";
                    Answer::SignedBodyTooLarge { route }
                }
                Some(BodyRefused::Unreadable) => {
                    record.reason = "signed request body could not be read";
                    Answer::BadRequest
                }
                _ => {
                    record.reason = "body does not match its signed digest";
                    Answer::BodyDigestMismatch {
                        route,
                        challenges: admission.route.challenges(),
                    }
                }
            };
            (answer.response(), "deny")
        }
        Outcome::Allow(admission) => {
            let route = &*admission.route.name;
            record.route = route;
            record.profile = admission.profile;
            record.identity = &admission.identity;
            record.client_ip = admission.client_ip;
            record.decision = "allow";
            let verdict = Verdict {
                route,
                profile: admission.profile,
                identity: &admission.identity,
            };
            let proto = if conn.tls { "https" } else { "http" };
            let result = match (admission.route.local_port(), conn.listener) {
                (Some(port), Listener::Inbound) => {
                    Some(shared.forwarder.local(req, port, conn.peer.ip(), proto, verdict).await)
                }
                (None, _) => match active.origins.get(admission.route.index) {
                    Some(origin) => Some(origin.forward(req, conn.peer.ip(), proto, verdict).await),
                    None => None,
                },
                _ => None,
            };
            match result {
                Some(Ok(mut resp)) => {
                    if resp.status() == StatusCode::NOT_FOUND {
                        // The backend does not know this URL: the hit is not counted.
                        active.engine.refund(admission);
                    }
                    if let Some(rate) = admission.rate {
                        rate_limit_headers(resp.headers_mut(), rate);
                    }
                    (resp, "allow")
                }
                Some(Err(error)) => {
                    if error.is_backend() {
                        shared.metrics.backend_error(error.kind());
                        tracing::warn!(route, %error, "forward failed");
                    } else {
                        // Refused before reaching the origin: the hit is not counted.
                        tracing::info!(route, %error, "not forwarded");
                        active.engine.refund(admission);
                    }
                    record.decision = "error";
                    let answer = match error {
                        ForwardError::Timeout(_) => {
                            record.reason = "backend timeout";
                            Answer::BackendTimeout { route }
                        }
                        ForwardError::Credentials(CredentialError::BodyTooLarge { limit }) => {
                            record.decision = "deny";
                            record.reason = "request body too large to sign for the origin";
                            Answer::OriginBodyTooLarge { route, limit }
                        }
                        ForwardError::Credentials(CredentialError::Sign(_)) => {
                            record.decision = "deny";
                            record.reason = "request cannot be signed for the origin";
                            Answer::OriginCannotSign { route }
                        }
                        ForwardError::Credentials(CredentialError::RequestBody(_)) => {
                            record.decision = "deny";
                            record.reason = "request body could not be read";
                            Answer::BadRequest
                        }
                        ForwardError::Credentials(CredentialError::Token(_)) => {
                            record.reason = "origin token endpoint failed";
                            Answer::OriginCredentialsUnavailable { route }
                        }
                        _ => {
                            record.reason = "backend unavailable";
                            Answer::BackendDown { route }
                        }
                    };
                    (answer.response(), "error")
                }
                None => {
                    shared
                        .metrics
                        .backend_error(crate::metrics::BackendErrorKind::Unsupported);
                    record.decision = "error";
                    record.reason = "backend not served on this listener";
                    (Answer::NotServed { route }.response(), "error")
                }
            }
        }
    };
    record.status = response.status().as_u16();
    record.latency = start.elapsed();
    shared.metrics.request(
        record.route,
        record.profile,
        decision_label,
        record.status,
        record.latency,
    );
    shared.audit.record(&record);
    response
}

/// Why the body of a signed request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyRefused {
    /// Larger than `--max-signed-body-bytes`: 413.
    TooLarge,
    /// It does not match the signed `Content-Digest` / `Digest`: 401.
    Mismatch,
    /// The client failed to send it: 400.
    Unreadable,
}

/// The request with its body ready to forward. When the admitting signature covers a body
/// digest, the body is read into memory (at most `limit` bytes) and checked against it;
/// otherwise it streams untouched.
async fn check_signed_body(
    req: Request<Incoming>,
    outcome: &Outcome<'_>,
    limit: usize,
) -> (Request<ProxyBody>, Option<BodyRefused>) {
    let digest = match outcome {
        Outcome::Allow(admission) => admission.body_digest,
        _ => None,
    };
    let Some(digest) = digest else {
        return (req.map(BodyExt::boxed_unsync), None);
    };
    let (parts, body) = req.into_parts();
    let refused = |parts, why| (Request::from_parts(parts, crate::body::empty()), Some(why));
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return refused(parts, BodyRefused::TooLarge);
    }
    let bytes: Bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return refused(parts, BodyRefused::TooLarge),
        Err(_) => return refused(parts, BodyRefused::Unreadable),
    };
    if !digest_matches(&parts.headers, digest, &bytes) {
        return refused(parts, BodyRefused::Mismatch);
    }
    (Request::from_parts(parts, full(bytes)), None)
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

/// Milliseconds since the Unix epoch, the engine's clock.
pub(crate) fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Bytes of the request target and headers, as on an HTTP/1.1 wire.
fn head_size<B>(req: &Request<B>) -> usize {
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    req.headers()
        .iter()
        .fold(target, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

/// `host:port` → `host` (an IPv6 literal keeps its brackets).
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    }
}
