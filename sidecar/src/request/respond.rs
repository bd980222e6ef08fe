//! The one place where decisions and failures become HTTP answers: status, headers and a
//! small JSON body `{"error": "...", "route": ...}`. Nothing here ever names a secret.

use http::header::{HeaderName, HeaderValue, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, Response, StatusCode};
use serde::Serialize;

use crate::base::body::{ProxyBody, json};
use crate::base::values::{LimitValues, number_value};

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

pub use crate::base::engine::RateInfo;

/// An answer the sidecar gives itself, without the backend.
#[derive(Debug, Clone)]
pub enum Answer<'a> {
    /// No route matches the request.
    NoRoute,
    /// The request cannot be served as sent (e.g. an ambiguous path).
    BadRequest,
    /// The request's body has a transfer coding other than a lone `chunked` (RFC 9112
    /// section 6.1): 501, as the app could not be told what the body is coded with.
    CodingNotImplemented,
    /// The route is HTTPS-only: go to `location`.
    Redirect { route: &'a str, location: &'a str },
    /// Credentials missing or wrong; `challenges` are `WWW-Authenticate` values.
    Unauthorized { route: &'a str, challenges: &'a [String] },
    /// Credentials right, but not allowed (e.g. outside the trusted IP ranges).
    Forbidden { route: &'a str },
    /// The route on the path does not list the method: 405 with `Allow`.
    MethodNotAllowed { route: &'a str, allow: &'a str },
    /// A valid OAuth2 token without a required scope: 403 with `challenges`.
    InsufficientScope { route: &'a str, challenges: &'a [String] },
    /// Over a rate limit (`scope`: `org`, `profile`, `consumer` or `quota`).
    RateLimited {
        route: &'a str,
        scope: &'a str,
        info: RateInfo,
    },
    /// Too many failed authentications from this address or for this user: 429, credentials
    /// not looked at, `Retry-After` the end of the window.
    Throttled { route: &'a str, retry_after_secs: u64 },
    /// The body does not match the digest its HTTP message signature covers (401 with the
    /// route's challenges).
    BodyDigestMismatch { route: &'a str, challenges: &'a [String] },
    /// The body of a signed request (whose digest must be checked) is larger than
    /// `--max-signed-body-bytes`.
    SignedBodyTooLarge { route: &'a str },
    /// The request head is larger than allowed.
    HeadersTooLarge,
    /// A body must be held in memory (signed digest, signing or a retry toward the origin)
    /// and the bodies held are at `--body-buffer-budget`: 503, retry shortly.
    BodyBufferFull { route: &'a str },
    /// The body must be signed toward the origin and is larger than
    /// `--max-signed-body-bytes`.
    OriginBodyTooLarge { route: &'a str, limit: u64 },
    /// The request lacks a component the origin signature must cover.
    OriginCannotSign { route: &'a str },
    /// No credentials for the origin could be obtained (token endpoint down or refusing).
    OriginCredentialsUnavailable { route: &'a str },
    /// An opaque bearer token could not be introspected (the endpoint is down, slow, refused
    /// the sidecar's client or answered junk): 503, fail closed.
    IntrospectionUnavailable { route: &'a str },
    /// Too many introspection calls in progress in all: 503, `Retry-After: 1`.
    IntrospectionBusy { route: &'a str },
    /// The client's introspection budget is used up: 429 with `Retry-After`.
    IntrospectionThrottled { route: &'a str, retry_after_secs: u64 },
    /// The client stopped sending its request body for `--body-read-timeout`.
    BodyStalled { route: &'a str },
    /// The client left while its request body was on its way to the backend (the answer is
    /// for the record: no one reads it).
    ClientGone { route: &'a str },
    /// The shared limits store could not be asked and the profile refuses calls then
    /// (`onStoreUnavailable: Deny`, or a signed call whose replay check needs the store): 503
    /// with `Retry-After`.
    StoreUnavailable { route: &'a str, retry_after_secs: u64 },
    /// A new consumer while the sidecar keeps as many consumers' counters as it may
    /// (`--max-consumers`): 503 with `Retry-After`.
    TooManyConsumers { route: &'a str, retry_after_secs: u64 },
    /// The backend refused the connection or failed.
    BackendDown { route: &'a str },
    /// The backend did not answer in time.
    BackendTimeout { route: &'a str },
    /// The route's backend cannot be reached from this listener (a local backend on the
    /// egress listener; the compiler refuses such routes, so this only guards the invariant).
    NotServed { route: &'a str },
}

/// The status recorded for a request whose client left before it was answered (nginx's
/// "client closed request").
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

impl Answer<'_> {
    /// The response for this answer.
    pub fn response(&self) -> Response<ProxyBody> {
        let (status, error, route) = match self {
            Self::NoRoute => (StatusCode::NOT_FOUND, "no route", None),
            Self::BadRequest => (StatusCode::BAD_REQUEST, "bad request", None),
            Self::CodingNotImplemented => (StatusCode::NOT_IMPLEMENTED, "transfer coding not implemented", None),
            Self::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request headers too large",
                None,
            ),
            Self::Redirect { route, .. } => (StatusCode::PERMANENT_REDIRECT, "https required", Some(*route)),
            Self::Unauthorized { route, .. } => (StatusCode::UNAUTHORIZED, "unauthorized", Some(*route)),
            Self::Forbidden { route } => (StatusCode::FORBIDDEN, "forbidden", Some(*route)),
            Self::MethodNotAllowed { route, .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method not allowed", Some(*route))
            }
            Self::InsufficientScope { route, .. } => (StatusCode::FORBIDDEN, "insufficient scope", Some(*route)),
            Self::BodyDigestMismatch { route, .. } => (
                StatusCode::UNAUTHORIZED,
                "body does not match its signed digest",
                Some(*route),
            ),
            Self::SignedBodyTooLarge { route } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "signed request body too large",
                Some(*route),
            ),
            Self::RateLimited { route, .. } => (StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded", Some(*route)),
            Self::Throttled { route, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed authentications",
                Some(*route),
            ),
            Self::BodyBufferFull { route } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many request bodies held in memory; retry shortly",
                Some(*route),
            ),
            Self::OriginBodyTooLarge { route, .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large to sign for the origin",
                Some(*route),
            ),
            Self::OriginCannotSign { route } => (
                StatusCode::BAD_REQUEST,
                "request cannot be signed for the origin: a covered component is missing",
                Some(*route),
            ),
            Self::OriginCredentialsUnavailable { route } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "origin credentials unavailable: the token endpoint failed",
                Some(*route),
            ),
            Self::IntrospectionUnavailable { route } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "token introspection unavailable: the introspection endpoint failed",
                Some(*route),
            ),
            Self::IntrospectionBusy { route } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "token introspection busy: too many calls in progress",
                Some(*route),
            ),
            Self::IntrospectionThrottled { route, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "too many token introspections for this client",
                Some(*route),
            ),
            Self::ClientGone { route } => (
                StatusCode::from_u16(CLIENT_CLOSED_REQUEST).expect("a valid status"),
                "client left before the answer",
                Some(*route),
            ),
            Self::BodyStalled { route } => (
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
                Some(*route),
            ),
            Self::StoreUnavailable { route, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "limits store unavailable; retry shortly",
                Some(*route),
            ),
            Self::TooManyConsumers { route, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many consumers at once; retry shortly",
                Some(*route),
            ),
            Self::BackendDown { route } => (StatusCode::BAD_GATEWAY, "backend unavailable", Some(*route)),
            Self::BackendTimeout { route } => (StatusCode::GATEWAY_TIMEOUT, "backend timeout", Some(*route)),
            Self::NotServed { route } => (
                StatusCode::BAD_GATEWAY,
                "backend not served on this listener",
                Some(*route),
            ),
        };
        let limit_bytes = match self {
            Self::OriginBodyTooLarge { limit, .. } => Some(*limit),
            _ => None,
        };
        let mut resp = json(
            status,
            &ErrorBody {
                error,
                route,
                limit_bytes,
            },
        );
        let headers = resp.headers_mut();
        match self {
            Self::Redirect { location, .. } => {
                if let Ok(v) = HeaderValue::from_str(location) {
                    headers.insert(LOCATION, v);
                }
            }
            Self::Unauthorized { challenges, .. }
            | Self::BodyDigestMismatch { challenges, .. }
            | Self::InsufficientScope { challenges, .. } => {
                for c in challenges.iter() {
                    if let Ok(v) = HeaderValue::from_str(c) {
                        headers.append(WWW_AUTHENTICATE, v);
                    }
                }
            }
            Self::RateLimited { info, .. } => {
                rate_limit_headers(headers, *info, &LimitValues::default());
                headers.insert(RETRY_AFTER, HeaderValue::from(info.reset_secs.max(1)));
            }
            Self::MethodNotAllowed { allow, .. } => {
                if let Ok(v) = HeaderValue::from_str(allow) {
                    headers.insert(http::header::ALLOW, v);
                }
            }
            Self::IntrospectionBusy { .. } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(1u64));
            }
            Self::Throttled { retry_after_secs, .. }
            | Self::IntrospectionThrottled { retry_after_secs, .. }
            | Self::StoreUnavailable { retry_after_secs, .. }
            | Self::TooManyConsumers { retry_after_secs, .. } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Self::BodyBufferFull { .. } => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody<'a> {
    error: &'a str,
    route: Option<&'a str>,
    /// The limit a body exceeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    limit_bytes: Option<u64>,
}

/// Adds `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`; the limit from
/// `limits` when the configuration has it made already.
pub fn rate_limit_headers(headers: &mut HeaderMap, info: RateInfo, limits: &LimitValues) {
    headers.insert(RATELIMIT_LIMIT, limits.value(info.limit));
    headers.insert(RATELIMIT_REMAINING, number_value(info.remaining.into()));
    headers.insert(RATELIMIT_RESET, number_value(info.reset_secs));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_answer_carries_every_header() {
        let info = RateInfo {
            limit: 5,
            remaining: 0,
            reset_secs: 42,
        };
        let r = Answer::RateLimited {
            route: "finance",
            scope: "profile",
            info,
        }
        .response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "42");
        assert_eq!(r.headers()["ratelimit-limit"], "5");
        assert_eq!(r.headers()["ratelimit-remaining"], "0");
        assert_eq!(r.headers()["ratelimit-reset"], "42");
    }

    #[test]
    fn signed_body_answers() {
        let challenges = vec!["Signature realm=\"finance\"".to_owned()];
        let r = Answer::BodyDigestMismatch {
            route: "finance",
            challenges: &challenges,
        }
        .response();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Signature realm=\"finance\"");
        assert_eq!(r.headers()["content-type"], "application/json");
        let r = Answer::SignedBodyTooLarge { route: "finance" }.response();
        assert_eq!(r.status(), 413);
    }

    #[test]
    fn unauthorized_carries_challenges() {
        let challenges = vec!["Basic realm=\"finance\"".to_owned()];
        let r = Answer::Unauthorized {
            route: "finance",
            challenges: &challenges,
        }
        .response();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"finance\"");
    }
}
