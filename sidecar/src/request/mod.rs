//! The request path: one request from the moment its head is read to its audit line, in the
//! steps docs/api.md's "How the sidecar decides" describes:
//!
//! 1. early refusals: a head over `--max-header-bytes` (431), more than one authority (400,
//!    [`authority_conflict`]) ([`Trip::early`]);
//! 2. the Builtin provider's endpoints, answered here and never counted ([`provider`]), and
//!    the Builtin provider's keys and metadata (RFC 8414);
//! 3. introspection of an opaque bearer token, before deciding ([`introspect`]); a form body
//!    an OAuth 1.0a signature covers is read first ([`body_check::read_form`]);
//! 4. the decision, by the pure policy engine ([`crate::base::engine`]);
//! 5. the body check of a signed digest ([`body_check`]);
//! 6. the answer: a refusal ([`respond`]) or the call forwarded ([`forward`]);
//! 7. the record: one audit line and the request metrics ([`Trip::finish`]).
//!
//! This is the top of the request's journey: it uses every layer below it ([`crate::base`],
//! [`crate::telemetry`], [`crate::identity`], [`crate::listen`], [`crate::upstream`],
//! [`crate::ops`]) and nothing imports it but the wiring in [`crate::server`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::HOST;
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

use crate::base::body::{ProxyBody, paced};
use crate::base::clock::{decision_clock, unix_millis};
use crate::base::engine::{Admission, Denial, DenialKind, NormalPath, Outcome, RequestView};
use crate::identity::introspection::IntrospectError;
use crate::listen::Connection;
use crate::ops::state::{Active, Shared};
use crate::telemetry::audit::Record;
use crate::telemetry::metrics::{BackendErrorKind, RouteMetrics};
use crate::upstream::{CredentialError, ForwardError, Verdict};
use body_check::{BodyRefused, check_signed_body};
use respond::{Answer, rate_limit_headers};

mod body_check;
mod login;
mod provider;
pub mod respond;

pub use crate::base::engine::Listener;

/// Most introspection calls made for one request (one per introspecting profile of its route).
const MAX_INTROSPECTIONS: usize = 4;

/// Handles one request end to end. Never fails: every failure is an answer.
///
/// The branches only some requests take (the provider's and sign-in endpoints, a session
/// refresh, a form read, introspection, the shared store, a remote origin) are boxed where
/// they are awaited: the future of the common path stays small, since it is moved into its
/// box once per request ([`crate::server`]).
pub async fn handle(shared: Arc<Shared>, conn: Connection, req: Request<Incoming>) -> Response<ProxyBody> {
    let trip = Trip {
        shared: &shared,
        start: Instant::now(),
        method: req.method().clone(),
        uri: req.uri().clone(),
        peer: conn.peer.ip(),
    };
    // 1. Early refusals.
    if head_size(&req) > shared.max_header_bytes {
        let answer = Answer::HeadersTooLarge.response();
        return trip.early(answer, "error", "-", "-", trip.peer, "request headers too large");
    }
    if let Some(reason) = authority_conflict(&req) {
        return trip.early(Answer::BadRequest.response(), "deny", "-", "-", trip.peer, reason);
    }
    if !transfer_coding_is_chunked(&req) {
        let reason = "transfer coding other than chunked";
        return trip.early(
            Answer::CodingNotImplemented.response(),
            "deny",
            "-",
            "-",
            trip.peer,
            reason,
        );
    }
    // From here on the body must keep coming (`--body-read-timeout`), whoever reads it.
    let req = req.map(|body| paced(body, shared.body_read_timeout));
    let active = shared.active.load_full();
    let view = request_view(&req, &conn);
    // 2. The Builtin OAuth2 provider's endpoints (token, revocation, authorization, grants).
    if let Some(endpoint) = active.engine.provider_endpoint(&view) {
        return Box::pin(provider::serve(&trip, endpoint, req)).await;
    }
    // 2a. A Builtin provider's public documents: its keys and its metadata (RFC 8414).
    if let Some(doc) = active.engine.provider_document(&view) {
        let mut resp = crate::base::body::json(StatusCode::OK, &doc.body);
        resp.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("public, max-age=300"),
        );
        // Without a configured issuer, the document names the host it was asked on.
        resp.headers_mut()
            .insert(http::header::VARY, http::HeaderValue::from_static("Host"));
        return trip.early(resp, "allow", doc.route, doc.profile, trip.peer, "provider document");
    }
    // 2b. Sign-in for people: the callback and the sign-out path; a session close to its
    // expiry is refreshed (the app and the decision see the new one, the browser is told).
    if let Some(endpoint) = active.engine.login_endpoint(&view) {
        return Box::pin(login::endpoint(&trip, endpoint, &view)).await;
    }
    // (No sign-in profile, the common case: no clock read for it.)
    let wanted = if active.engine.login_providers().is_empty() {
        None
    } else {
        active.engine.refresh_wanted(&view, crate::base::clock::unix_secs())
    };
    let refreshed = match wanted {
        Some(r) => {
            let name = r.login.session_cookie_name().to_owned();
            let waiting = Waiting::new(&trip, trip.record(), "client left while its session was refreshed");
            let refreshed = Box::pin(login::refresh(&r, &shared.metrics)).await;
            waiting.over();
            Some((refreshed, name, r.login.clear_session()))
        }
        None => None,
    };
    // Whether the request waited for anything before its decision.
    let mut waited = refreshed.is_some();
    let mut req = req;
    let mut set_cookie = None;
    match refreshed {
        Some((login::Refreshed::New { value, line }, name, _)) => {
            login::replace_cookie(req.headers_mut(), &name, &value);
            set_cookie = Some(line);
        }
        Some((login::Refreshed::Ended, name, clear)) => {
            login::remove_cookie(req.headers_mut(), &name);
            set_cookie = Some(clear);
        }
        Some((login::Refreshed::Kept, ..)) | None => {}
    }
    // 2c. A form body an OAuth 1.0a signature covers is read (bounded) before deciding.
    let wanted = if active.engine.reads_forms() {
        active.engine.form_wanted(&request_view(&req, &conn))
    } else {
        None
    };
    let form = match wanted {
        Some(route) => {
            let record = Record { route, ..trip.record() };
            let waiting = Waiting::new(&trip, record, BODY_LEFT);
            let read = Box::pin(body_check::read_form(req, shared.max_signed_body_bytes)).await;
            waiting.over();
            match read {
                (read, Ok(body)) => {
                    waited = true;
                    req = read;
                    Some(body)
                }
                (_, Err(why)) => {
                    let (answer, reason) = body_refusal(why, route, &[]);
                    let decision = refusal_decision(why);
                    return trip.early(answer.response(), decision, route, "-", trip.peer, reason);
                }
            }
        }
        None => None,
    };
    let mut view = request_view(&req, &conn);
    view.form = form.as_deref();
    // 3. Introspection, then 4. the decision, taken after the answers came. Without a wait
    // so far (a session refreshed, a form read), the request's start is the decision's
    // monotonic reading: one clock read fewer.
    let since = if waited { Instant::now() } else { trip.start };
    let (now, at) = match introspect(&trip, &active, &view, since).await {
        Ok(read) => read,
        Err(answer) => return answer,
    };
    let clock = decision_clock(now, at);
    let outcome = match active.engine.decide(&view, clock) {
        // 4b. What the shared store must decide: the limits (one round trip near a limit, or
        // before this sidecar holds a block of hits), then, once they admit, a signature's
        // replay check.
        Outcome::Allow(mut admission) if admission.limits_pending() => {
            let mut record = trip.record();
            admitted(&admission, &mut record);
            let waiting = Waiting::new(&trip, record, "client left while its limits were checked");
            let taken = match active.engine.pending_hits(&admission, clock) {
                Some(hits) => Some(Box::pin(shared.limiter.take(&hits.list(), hits.fallback(), clock)).await),
                None => None,
            };
            let replay = match active.engine.pending_replay(&admission, clock) {
                Some(entry) if taken.as_ref().is_none_or(Result::is_ok) => {
                    Some(Box::pin(shared.limiter.remember(&entry)).await)
                }
                _ => None,
            };
            waiting.over();
            match active.engine.settle(&mut admission, taken, replay, clock) {
                Ok(()) => Outcome::Allow(admission),
                Err(denial) => Outcome::Deny(denial),
            }
        }
        outcome => outcome,
    };
    // 4c. A browser refused for want of a session is sent to sign in.
    if let Outcome::Deny(denial) = &outcome
        && let Some(start) = active.engine.login_redirect(&view, denial)
    {
        return login::start(&trip, start, &view, denial);
    }
    // 5. The body check of a signed digest.
    let waiting = match &outcome {
        Outcome::Allow(admission) if admission.body_digest.is_some() => {
            let mut record = trip.record();
            admitted(admission, &mut record);
            Some(Waiting::new(&trip, record, BODY_LEFT))
        }
        _ => None,
    };
    let (req, body_refused) = check_signed_body(req, &outcome, shared.max_signed_body_bytes).await;
    if let Some(waiting) = waiting {
        waiting.over();
    }
    // 6. The answer.
    let mut record = trip.record();
    let (response, label) = match &outcome {
        Outcome::Allow(admission) => match body_refused {
            None => {
                // A client that leaves while the app works (a reset HTTP/2 stream, a closed
                // connection) drops this future: the hit it made is recorded all the same.
                let mut unanswered = Unanswered {
                    trip: &trip,
                    record: Some(&mut record),
                };
                let answered = forward(&shared, &active, &conn, req, admission, unanswered.record()).await;
                unanswered.record = None;
                answered
            }
            Some(why) => refuse_body(&active, admission, why, &mut record),
        },
        Outcome::Deny(denial) => deny(&shared, denial, &mut record),
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
    };
    // 7. The record.
    let mut response = response;
    if let Some(line) = set_cookie
        && let Ok(value) = http::HeaderValue::from_str(&line)
    {
        response.headers_mut().append(http::header::SET_COOKIE, value);
    }
    let resolved = match &outcome {
        Outcome::Allow(admission) => active.route_metrics.get(admission.route.index),
        _ => None,
    };
    trip.finish(record, label, response, resolved)
}

/// The record of a request forwarded and not yet answered: if the client leaves first (its
/// request's future is dropped), the hit is audited with status 499 (nginx's "client closed
/// request") and counted, since the app may carry it out.
struct Unanswered<'t, 'r, 'a> {
    trip: &'t Trip<'t>,
    record: Option<&'r mut Record<'a>>,
}

impl<'a> Unanswered<'_, '_, 'a> {
    fn record(&mut self) -> &mut Record<'a> {
        self.record.as_deref_mut().expect("armed")
    }
}

impl Drop for Unanswered<'_, '_, '_> {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            self.trip.left(record, "client left before the answer");
        }
    }
}

/// The audit reason of a client that left while the body a signature covers was read (an
/// OAuth 1.0a form, a signed digest's body), whether its request ended then or its body did.
const BODY_LEFT: &str = "client left while its body was read";

/// A wait on the client's behalf before its request is decided or forwarded (its session's
/// refresh, its token's introspection, the shared store, its form or signed body read): if
/// the client leaves meanwhile (its request's future is dropped), the request is audited
/// with status 499 and decision `abandoned` all the same. [`Waiting::over`] when the wait is.
struct Waiting<'t, 'a> {
    trip: &'t Trip<'t>,
    record: Record<'a>,
    reason: &'static str,
    armed: bool,
}

impl<'t, 'a> Waiting<'t, 'a> {
    fn new(trip: &'t Trip<'t>, record: Record<'a>, reason: &'static str) -> Self {
        Self {
            trip,
            record,
            reason,
            armed: true,
        }
    }

    /// The wait ended with the client still there: nothing to record here.
    fn over(mut self) {
        self.armed = false;
    }
}

impl Drop for Waiting<'_, '_> {
    fn drop(&mut self) {
        if self.armed {
            self.record.decision = "abandoned";
            self.trip.left(&mut self.record, self.reason);
        }
    }
}

/// One request's journey: what its audit line and metrics need from start to end.
struct Trip<'s> {
    shared: &'s Shared,
    start: Instant,
    method: Method,
    /// The request target as received (its path, without the query string, is audited; a
    /// clone shares the bytes hyper read).
    uri: Uri,
    peer: IpAddr,
}

impl Trip<'_> {
    /// The record of a request no route has claimed yet.
    fn record(&self) -> Record<'_> {
        Record {
            route: "-",
            profile: "-",
            identity: "-",
            authenticated: None,
            client_ip: self.peer,
            method: self.method.as_str(),
            path: self.uri.path(),
            status: 0,
            // Set by `finish`: one clock read per request for it.
            latency: std::time::Duration::ZERO,
            decision: "no_route",
            reason: "-",
        }
    }

    /// Records a request refused before it was decided and answers it.
    fn early(
        &self,
        response: Response<ProxyBody>,
        decision: &'static str,
        route: &str,
        profile: &str,
        client_ip: IpAddr,
        reason: &str,
    ) -> Response<ProxyBody> {
        let record = Record {
            route,
            profile,
            client_ip,
            decision,
            reason,
            ..self.record()
        };
        self.finish(record, decision, response, None)
    }

    /// Records a request whose client left before its answer (its future was dropped).
    fn left(&self, record: &mut Record<'_>, reason: &'static str) {
        record.status = respond::CLIENT_CLOSED_REQUEST;
        record.latency = self.start.elapsed();
        record.reason = reason;
        let metrics = &self.shared.metrics;
        metrics.request(
            record.route,
            record.profile,
            record.decision,
            record.status,
            record.latency,
        );
        self.shared.audit.record(record);
    }

    /// Writes the audit line and the request metrics (`label` is the metrics' decision; the
    /// route's metrics `resolved` when it was admitted), and answers.
    fn finish(
        &self,
        mut record: Record<'_>,
        label: &str,
        response: Response<ProxyBody>,
        resolved: Option<&RouteMetrics>,
    ) -> Response<ProxyBody> {
        record.status = response.status().as_u16();
        record.latency = self.start.elapsed();
        let metrics = &self.shared.metrics;
        match resolved {
            Some(resolved) => metrics.request_on(
                resolved,
                record.route,
                record.profile,
                label,
                record.status,
                record.latency,
            ),
            None => metrics.request(record.route, record.profile, label, record.status, record.latency),
        }
        self.shared.audit.record(&record);
        response
    }
}

/// The facts of the request the engine decides on. Hosts as sent: the engine compares them
/// case-insensitively (`routes::normal_host`).
fn request_view<'r>(req: &'r Request<ProxyBody>, conn: &'r Connection) -> RequestView<'r> {
    // The request target's authority (HTTP/2, absolute form), else the one `Host`, looked up
    // once.
    let (host, authority) = match req.uri().authority() {
        Some(authority) => (Some(authority.host()), Some(authority.as_str())),
        None => {
            let header = req.headers().get(HOST).and_then(|h| h.to_str().ok());
            (header.map(strip_port), header)
        }
    };
    RequestView {
        method: req.method().as_str(),
        host,
        authority,
        path: req.uri().path(),
        query: req.uri().query(),
        headers: req.headers(),
        peer: conn.peer.ip(),
        tls: conn.tls,
        listener: conn.listener,
        client_cert: conn.client_cert.as_deref(),
        form: None,
    }
}

/// Step 3: an opaque bearer token of a profile with introspection is asked about first (the
/// engine does no I/O); a route with several such profiles may need a few. Returns the clock
/// to decide with (Unix milliseconds and the monotonic moment of that reading: `since`, a
/// moment just before this call, unless an answer was waited for), read after the last
/// answer came; or the 503 a failed introspection gets (fail closed).
async fn introspect(
    trip: &Trip<'_>,
    active: &Active,
    view: &RequestView<'_>,
    since: Instant,
) -> Result<(u64, Instant), Response<ProxyBody>> {
    let mut now = unix_millis();
    let mut at = since;
    for _ in 0..MAX_INTROSPECTIONS {
        let Some(wanted) = active.engine.introspection_wanted(view, now) else {
            break;
        };
        let record = Record {
            route: wanted.route,
            profile: wanted.profile,
            client_ip: wanted.client_ip,
            ..trip.record()
        };
        let waiting = Waiting::new(trip, record, "client left during its token's introspection");
        let ensured = Box::pin(trip.shared.introspector.ensure(wanted)).await;
        waiting.over();
        if let Err(error) = ensured {
            let metrics = &trip.shared.metrics;
            let route = wanted.route;
            let (answer, decision, reason) = match error {
                IntrospectError::Idp(error) => {
                    metrics.backend_error(BackendErrorKind::Introspection);
                    tracing::warn!(route, profile = wanted.profile, %error,
                        "token introspection failed; answering 503");
                    let answer = Answer::IntrospectionUnavailable { route };
                    (answer, "error", "token introspection failed")
                }
                IntrospectError::Busy => {
                    metrics.rate_limited("introspection");
                    let answer = Answer::IntrospectionBusy { route };
                    (answer, "error", "too many token introspections in progress")
                }
                IntrospectError::ClientOverBudget { retry_after_secs } => {
                    metrics.rate_limited("introspection_client");
                    let answer = Answer::IntrospectionThrottled {
                        route,
                        retry_after_secs,
                    };
                    (answer, "deny", "client's token introspection budget used up")
                }
            };
            return Err(trip.early(
                answer.response(),
                decision,
                route,
                wanted.profile,
                wanted.client_ip,
                reason,
            ));
        }
        now = unix_millis();
        at = Instant::now();
    }
    Ok((now, at))
}

/// Step 6, refused: the engine's denial as an answer.
fn deny<'a>(shared: &Shared, denial: &'a Denial<'a>, record: &mut Record<'a>) -> (Response<ProxyBody>, &'static str) {
    record.route = denial.route;
    record.profile = denial.profile;
    record.client_ip = denial.client_ip;
    record.decision = "deny";
    record.reason = denial.reason;
    if let Some(identity) = &denial.identity {
        record.identity = identity;
    }
    let answer = match &denial.kind {
        DenialKind::Unauthorized { challenges } => Answer::Unauthorized {
            route: denial.route,
            challenges,
        },
        DenialKind::Forbidden => Answer::Forbidden { route: denial.route },
        DenialKind::MethodNotAllowed { allow } => Answer::MethodNotAllowed {
            route: denial.route,
            allow,
        },
        DenialKind::InsufficientScope { challenges } => Answer::InsufficientScope {
            route: denial.route,
            challenges,
        },
        DenialKind::Throttled { retry_after_secs } => {
            shared.metrics.rate_limited("auth_failures");
            Answer::Throttled {
                route: denial.route,
                retry_after_secs: *retry_after_secs,
            }
        }
        DenialKind::StoreUnavailable { retry_after_secs } => Answer::StoreUnavailable {
            route: denial.route,
            retry_after_secs: *retry_after_secs,
        },
        DenialKind::TooManyConsumers { retry_after_secs } => Answer::TooManyConsumers {
            route: denial.route,
            retry_after_secs: *retry_after_secs,
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

/// The record's fields of an admitted call.
fn admitted<'a>(admission: &'a Admission<'a>, record: &mut Record<'a>) -> &'a str {
    let route = &*admission.route.name;
    record.route = route;
    record.profile = admission.profile;
    // The audit line names the profile's identity header when present (seed 002 section 5);
    // the app is told who authenticated.
    record.identity = admission.audit_identity.as_deref().unwrap_or(&admission.identity);
    record.authenticated = admission
        .audit_identity
        .as_deref()
        .filter(|a| *a != admission.identity)
        .map(|_| &*admission.identity);
    record.client_ip = admission.client_ip;
    route
}

/// Step 6, admitted but its body refused by the body check: the hit is not counted (the
/// signature stays used up).
fn refuse_body<'a>(
    active: &Active,
    admission: &'a Admission<'a>,
    why: BodyRefused,
    record: &mut Record<'a>,
) -> (Response<ProxyBody>, &'static str) {
    let route = admitted(admission, record);
    let decision = refusal_decision(why);
    record.decision = decision;
    active.engine.refund(admission);
    let (answer, reason) = body_refusal(why, route, admission.route.challenges());
    record.reason = reason;
    (answer.response(), decision)
}

/// The audit's decision for a body refused for `why`: `abandoned` when the client left while
/// it was read (nobody refused it), else `deny`.
fn refusal_decision(why: BodyRefused) -> &'static str {
    match why {
        BodyRefused::ClientLeft => "abandoned",
        _ => "deny",
    }
}

/// The answer to a signed body refused for `why` on `route`, and the audit reason.
fn body_refusal<'a>(why: BodyRefused, route: &'a str, challenges: &'a [String]) -> (Answer<'a>, &'static str) {
    match why {
        BodyRefused::TooLarge => (
            Answer::SignedBodyTooLarge { route },
            "signed request body larger than --max-signed-body-bytes",
        ),
        BodyRefused::Stalled => (Answer::BodyStalled { route }, "request body stalled"),
        BodyRefused::ClientLeft => (Answer::ClientGone { route }, BODY_LEFT),
        BodyRefused::Unreadable => (Answer::BadRequest, "signed request body could not be read"),
        BodyRefused::Busy => (
            Answer::BodyBufferFull { route },
            "request bodies held in memory are at their budget",
        ),
        BodyRefused::Mismatch => (
            Answer::BodyDigestMismatch { route, challenges },
            "body does not match its signed digest",
        ),
    }
}

/// Step 6, admitted: the call goes to the app (inbound listeners) or to the route's origin.
/// A 404 from the backend, or a call refused before it reached the origin, is not counted.
async fn forward<'a>(
    shared: &Shared,
    active: &Active,
    conn: &Connection,
    req: Request<ProxyBody>,
    admission: &'a Admission<'a>,
    record: &mut Record<'a>,
) -> (Response<ProxyBody>, &'static str) {
    let route = admitted(admission, record);
    record.decision = "allow";
    let req = match with_normal_path(req, &admission.path) {
        Ok(req) => req,
        Err(_) => {
            // The normal form of a valid path is a valid path; refuse rather than forward
            // something other than what was decided on.
            active.engine.refund(admission);
            record.decision = "deny";
            record.reason = "path cannot be forwarded in its normal form";
            return (Answer::BadRequest.response(), "deny");
        }
    };
    let mut req = req;
    if !active.engine.login_providers().is_empty() {
        // The sidecar's sign-in cookies are its own: the app never sees them.
        login::strip_cookies(req.headers_mut());
    }
    let verdict = Verdict {
        route,
        profile: admission.profile,
        identity: &admission.identity,
        email: admission.told.as_ref().and_then(|t| t.email.as_deref()),
        client: admission.told.as_ref().and_then(|t| t.client.as_deref()),
        client_ip: admission.client_ip,
        peer: &conn.peer_addr,
        names: active.names.get(admission.route.index),
    };
    let proto = if admission.https { "https" } else { "http" };
    let result = match (admission.route.local_port(), conn.listener) {
        (Some(port), Listener::Inbound) => Some(shared.forwarder.local(req, port, proto, verdict).await),
        (None, _) => match active.origins.get(admission.route.index) {
            Some(origin) => Some(Box::pin(origin.forward(req, proto, verdict)).await),
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
                rate_limit_headers(resp.headers_mut(), rate, &active.limit_values);
            }
            (resp, "allow")
        }
        Some(Err(error)) if error.is_client_gone() => {
            // The app had the request (its body cut short): the hit stays counted.
            record.reason = "client left before the answer";
            (Answer::ClientGone { route }.response(), "allow")
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
            let (answer, decision, reason) = forward_failure(route, error);
            record.decision = decision;
            record.reason = reason;
            (answer.response(), "error")
        }
        None => {
            shared.metrics.backend_error(BackendErrorKind::Unsupported);
            record.decision = "error";
            record.reason = "backend not served on this listener";
            (Answer::NotServed { route }.response(), "error")
        }
    }
}

/// The request with the path the engine matched (its normal form) and the query as sent: the
/// app receives exactly the path that was decided on.
fn with_normal_path(req: Request<ProxyBody>, path: &NormalPath) -> Result<Request<ProxyBody>, http::Error> {
    let NormalPath::Rewritten(normal) = path else {
        return Ok(req);
    };
    let (mut parts, body) = req.into_parts();
    let target = match parts.uri.query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal.clone(),
    };
    let mut uri = parts.uri.into_parts();
    uri.path_and_query = Some(http::uri::PathAndQuery::try_from(target)?);
    parts.uri = http::Uri::from_parts(uri)?;
    Ok(Request::from_parts(parts, body))
}

/// A failed forward as an answer, with the audit line's decision and reason: `deny` when
/// the request itself could not be sent, `error` when the backend failed.
fn forward_failure(route: &str, error: ForwardError) -> (Answer<'_>, &'static str, &'static str) {
    if error.is_body_stalled() {
        return (Answer::BodyStalled { route }, "deny", "request body stalled");
    }
    match error {
        ForwardError::Timeout(_) => (Answer::BackendTimeout { route }, "error", "backend timeout"),
        ForwardError::Credentials(CredentialError::BodyTooLarge { limit }) => (
            Answer::OriginBodyTooLarge { route, limit },
            "deny",
            "request body too large to sign for the origin",
        ),
        ForwardError::Credentials(CredentialError::Sign(_)) => (
            Answer::OriginCannotSign { route },
            "deny",
            "request cannot be signed for the origin",
        ),
        ForwardError::Credentials(CredentialError::RequestBody(_)) => {
            (Answer::BadRequest, "deny", "request body could not be read")
        }
        ForwardError::Credentials(CredentialError::Busy(_)) => (
            Answer::BodyBufferFull { route },
            "deny",
            "request bodies held in memory are at their budget",
        ),
        ForwardError::Credentials(CredentialError::Token(_)) => (
            Answer::OriginCredentialsUnavailable { route },
            "error",
            "origin token endpoint failed",
        ),
        ForwardError::ThisPod => (
            Answer::NotServed { route },
            "error",
            "the origin is this pod (a loopback or unspecified address)",
        ),
        ForwardError::OwnPort(_) => (
            Answer::NotServed { route },
            "error",
            "backend port is one of the sidecar's own listeners",
        ),
        _ => (Answer::BackendDown { route }, "error", "backend unavailable"),
    }
}

/// Why a request names more than one authority, if it does: a repeated `Host`, or a `Host`
/// that disagrees with the authority of the request target (absolute form, HTTP/2
/// `:authority`). The sidecar routes on one authority and forwards that one; a request that
/// could be read as aimed at two hosts is refused (400) rather than routed as one and
/// received by the app as the other.
fn authority_conflict<B>(req: &Request<B>) -> Option<&'static str> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Some("repeated Host header");
    }
    // Bytes outside visible ASCII: the engine would see no host at all (and route as for a
    // host-less request), while an app may read it as a name it knows (Node drops a soft
    // hyphen).
    if host.is_some_and(|h| h.to_str().is_err()) {
        return Some("malformed host");
    }
    match (req.uri().authority(), host) {
        (Some(authority), Some(host)) if !host.as_bytes().eq_ignore_ascii_case(authority.as_str().as_bytes()) => {
            Some("Host header disagrees with the request target")
        }
        _ => None,
    }
}

/// Whether the request's body has no transfer coding but, at most, one `chunked`. hyper reads
/// `gzip, chunked` as chunked and hands on the decoded chunks: the app would get a body coded
/// with gzip and not be told so.
fn transfer_coding_is_chunked<B>(req: &Request<B>) -> bool {
    let headers = req.headers();
    !headers.contains_key(http::header::TRANSFER_ENCODING) || crate::base::headers::is_lone_chunked(headers)
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
