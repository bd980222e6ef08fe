//! Sign-in for people: the I/O around the engine's pure sign-in
//! ([`portcullis_policy::oauth2::login`]): randomness, the provider's token endpoint, the
//! redirects and the cookies. Steps:
//!
//! - [`start`]: a browser refused for want of a session is sent to the provider (302), with
//!   the sealed pending sign-in in a cookie; while the provider was never discovered it gets
//!   a 503 page instead (and the `login` backend-error metric): never a redirect loop.
//! - [`endpoint`]: the callback (state checked, state and code used once on this replica,
//!   code exchanged with the client secret, ID token verified, session cookie set, back to
//!   the same-host path the browser first asked for) and the sign-out path (cookies cleared,
//!   RP-initiated logout where the provider offers it).
//! - [`refresh`]: a session close to its expiry is refreshed with its refresh token before
//!   the decision: one refresh per session at a time and a budget per second in all
//!   ([`RefreshGate`]); a refresh the provider or the account rules refuse ends the session.

use std::sync::OnceLock;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::{HeaderValue, Response, StatusCode};
use portcullis_policy::oauth2::login::{
    LoginError, Random, RefreshGate, RefreshTurn, STATE_TTL_SECS, Session, UsedOnce, is_sign_in_cookie,
};
use portcullis_policy::{LoginEndpoint, LoginRedirect, LoginStart, LoginStep, RefreshRequest};
use ring::rand::{SecureRandom, SystemRandom};

use super::Trip;
use crate::base::body::{ProxyBody, full};
use crate::base::clock::unix_secs;
use crate::base::engine::{Denial, RequestView};
use crate::identity::discovery::token_call;
use crate::telemetry::metrics::BackendErrorKind;

/// States and codes remembered on this replica (each for the life of a pending sign-in).
const USED_CAPACITY: usize = 100_000;

fn used() -> &'static UsedOnce {
    static USED: OnceLock<UsedOnce> = OnceLock::new();
    USED.get_or_init(|| UsedOnce::new(USED_CAPACITY))
}

/// Sign-ins under way one browser may hold for a profile before the older are cleared.
const MAX_PENDING_SIGN_INS: usize = 4;

/// Sessions whose refresh is remembered at most on this replica.
const REFRESH_CAPACITY: usize = 100_000;
/// Most refresh calls to the providers a second from this replica.
const REFRESHES_PER_SECOND: u32 = 50;

fn refresh_gate() -> &'static RefreshGate {
    static GATE: OnceLock<RefreshGate> = OnceLock::new();
    GATE.get_or_init(|| RefreshGate::new(REFRESH_CAPACITY, REFRESHES_PER_SECOND))
}

/// A provider's 4xx that says the client itself is refused (`invalid_client`, or 401): a
/// misconfiguration (the client secret), not the person's doing.
fn client_refused(status: u16, code: Option<&str>) -> bool {
    status == 401 || code == Some("invalid_client") || code == Some("unauthorized_client")
}

fn random<const N: usize>() -> Option<[u8; N]> {
    let mut out = [0u8; N];
    SystemRandom::new().fill(&mut out).ok()?;
    Some(out)
}

/// A small HTML page (a browser reads these), never cached.
fn page(status: StatusCode, title: &str, message: &str) -> Response<ProxyBody> {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{message}</p></body></html>\n"
    );
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A 302 to `location` setting `cookies`.
fn redirect(location: &str, cookies: &[String]) -> Response<ProxyBody> {
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::FOUND;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(LOCATION, v);
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            h.append(SET_COOKIE, v);
        }
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn unavailable(
    trip: &Trip<'_>,
    route: &str,
    profile: &str,
    denial_ip: std::net::IpAddr,
    reason: &str,
) -> Response<ProxyBody> {
    trip.shared.metrics.backend_error(BackendErrorKind::Login);
    let resp = page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Sign-in unavailable",
        "The identity provider cannot be reached right now. Please try again in a minute.",
    );
    trip.early(resp, "error", route, profile, denial_ip, reason)
}

/// Sends a browser refused by `denial` to sign in.
pub(super) fn start(
    trip: &Trip<'_>,
    to: LoginRedirect<'_>,
    view: &RequestView<'_>,
    denial: &Denial<'_>,
) -> Response<ProxyBody> {
    let s = match to {
        LoginRedirect::SignIn(s) => s,
        LoginRedirect::Https {
            route,
            profile,
            location,
        } => {
            let resp = redirect(&location, &[]);
            return trip.early(
                resp,
                "redirect",
                route,
                profile,
                denial.client_ip,
                "sign-in needs https",
            );
        }
        LoginRedirect::HttpsUnavailable { route, profile } => {
            let resp = page(
                StatusCode::FORBIDDEN,
                "HTTPS required",
                "Signing in works over HTTPS only: open this page with https://.",
            );
            return trip.early(resp, "deny", route, profile, denial.client_ip, "sign-in needs https");
        }
    };
    sign_in(trip, s, view, denial)
}

/// Sends the browser to the provider with a pending sign-in cookie.
fn sign_in(trip: &Trip<'_>, s: LoginStart<'_>, view: &RequestView<'_>, denial: &Denial<'_>) -> Response<ProxyBody> {
    let Some(doc) = s.login.discovered() else {
        return unavailable(
            trip,
            s.route,
            s.profile,
            denial.client_ip,
            "identity provider not discovered",
        );
    };
    let (Some(state), Some(nonce), Some(verifier), Some(seal)) = (random(), random(), random(), random()) else {
        return unavailable(trip, s.route, s.profile, denial.client_ip, "no randomness");
    };
    let authority = view.authority.or(view.host).unwrap_or("");
    let redirect_uri = s.login.redirect_uri(authority, s.https);
    let return_to = match view.query {
        Some(q) => format!("{}?{q}", view.path),
        None => view.path.to_owned(),
    };
    let random = Random {
        state,
        nonce,
        verifier,
        seal,
    };
    let (location, cookie) = s.login.start(&doc, &redirect_uri, &return_to, &random, unix_secs());
    // A bound on sign-ins under way per browser: past it, the others' cookies are cleared
    // (those tabs sign in again) rather than fill the browser's cookie jar.
    let mut cookies = vec![cookie];
    let pending: Vec<String> = cookie_pairs(view.headers)
        .filter_map(|p| String::from_utf8(pair_name(&p).to_vec()).ok())
        .filter(|name| s.login.is_pending_cookie(name))
        .collect();
    if pending.len() >= MAX_PENDING_SIGN_INS {
        cookies.extend(
            pending
                .iter()
                .map(|name| format!("{name}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax")),
        );
    }
    trip.early(
        redirect(&location, &cookies),
        "redirect",
        s.route,
        s.profile,
        denial.client_ip,
        "sign-in required",
    )
}

/// Serves the callback or the sign-out path.
pub(super) async fn endpoint(trip: &Trip<'_>, ep: LoginEndpoint<'_>, view: &RequestView<'_>) -> Response<ProxyBody> {
    let (route, profile, ip) = (ep.route, ep.profile, ep.client_ip);
    let forbidden = |title, text, reason| {
        let resp = page(StatusCode::FORBIDDEN, title, text);
        trip.early(resp, "deny", route, profile, ip, reason)
    };
    if ep.https_required {
        return forbidden("HTTPS required", "Sign in over HTTPS.", "sign-in step over plain HTTP");
    }
    if !ep.trusted {
        return forbidden(
            "Forbidden",
            "Sign-in is not offered to this address.",
            "client address outside the profile's trusted ranges",
        );
    }
    let login = ep.login;
    let authority = view.authority.or(view.host).unwrap_or("");
    let scheme = if ep.https { "https" } else { "http" };
    if ep.step == LoginStep::Logout {
        // The host as a redirect URI registered with the provider is written: lower case,
        // without a trailing dot.
        let post_logout = format!("{scheme}://{}/", return_authority(authority, ep.https));
        let location = login.logout_location(login.discovered().as_deref(), &post_logout);
        // Signing out ends every sign-in of this browser with the sidecar (profiles may share
        // the sign-out path): this profile's cookies and any other sign-in cookie it sent.
        let mut clear: Vec<String> = vec![login.clear_session()];
        for pair in cookie_pairs(view.headers) {
            let Ok(name) = std::str::from_utf8(pair_name(&pair)) else {
                continue;
            };
            if is_sign_in_cookie(name) && !clear.iter().any(|c| c.split('=').next() == Some(name)) {
                clear.push(format!("{name}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax"));
            }
        }
        let resp = redirect(&location, &clear);
        return trip.early(resp, "redirect", route, profile, ip, "signed out");
    }
    let now = unix_secs();
    let refused = |e: LoginError| {
        let status = match e {
            LoginError::NotAllowed => StatusCode::FORBIDDEN,
            LoginError::SessionTooLarge => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        let mut resp = page(status, "Sign-in failed", &e.to_string());
        // This sign-in's pending cookie only: another tab's sign-in goes on.
        if let Some(v) = login
            .clear_pending(view.query)
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            resp.headers_mut().append(SET_COOKIE, v);
        }
        trip.early(resp, "deny", route, profile, ip, e.reason())
    };
    let cb = match login.callback(view.query, view.headers, now) {
        Ok(cb) => cb,
        Err(e) => return refused(e),
    };
    let until = cb.pending.created + STATE_TTL_SECS;
    if let Err(e) = used()
        .first_use("state", &cb.pending.state, until, now)
        .and_then(|()| used().first_use("code", &cb.code, now + STATE_TTL_SECS, now))
    {
        return refused(e);
    }
    let Some(doc) = login.discovered() else {
        return unavailable(trip, route, profile, ip, "identity provider not discovered");
    };
    let redirect_uri = login.redirect_uri(authority, ep.https);
    let form = login.code_form(&cb.code, &redirect_uri, &cb.pending.verifier);
    let (client_id, secret) = login.client();
    let answer = match token_call(&doc.token_endpoint, client_id, secret.expose(), form).await {
        Ok(body) => body,
        Err(crate::identity::client::IdpError::Refused { status, code, .. }) if (400..500).contains(&status) => {
            let code = code.as_deref().unwrap_or("-");
            if client_refused(status, Some(code)) {
                trip.shared.metrics.backend_error(BackendErrorKind::Login);
                tracing::warn!(
                    route,
                    profile,
                    status,
                    code,
                    "the provider refuses this client: check clientId and the client secret"
                );
            } else {
                tracing::info!(route, profile, status, code, "sign-in code refused by the provider");
            }
            return refused(LoginError::ProviderRefused);
        }
        Err(error) => {
            tracing::warn!(route, profile, %error, "sign-in token endpoint failed");
            return unavailable(trip, route, profile, ip, "sign-in token endpoint failed");
        }
    };
    let session = match login.accept_tokens(&answer, Some(&cb.pending.nonce), None, now) {
        Ok(s) => s,
        Err(e) => return refused(e),
    };
    let Some(seal) = random() else {
        return unavailable(trip, route, profile, ip, "no randomness");
    };
    let cookie = match login.session_cookie(&session, seal, now) {
        Ok(c) => c,
        Err(e) => return refused(e),
    };
    let mut set = vec![cookie];
    set.extend(login.clear_pending(view.query));
    let resp = redirect(&cb.pending.return_to, &set);
    let record = crate::telemetry::audit::Record {
        route,
        profile,
        identity: &session.subject,
        client_ip: ip,
        decision: "redirect",
        reason: "signed in",
        ..trip.record()
    };
    trip.finish(record, "redirect", resp, None)
}

/// What became of a session's refresh ([`refresh`]).
pub(super) enum Refreshed {
    /// The new session: its sealed cookie value and its `Set-Cookie` line.
    New { value: String, line: String },
    /// Not refreshed now (another request is at it, the budget is spent, the provider is
    /// unreachable): the session is judged as it is.
    Kept,
    /// The provider refused the refresh token, or the account rules refuse the person now:
    /// the session ends (the request has none, the browser is told to drop it).
    Ended,
}

/// Refreshes the session of `r` with its refresh token.
pub(super) async fn refresh(r: &RefreshRequest<'_>, metrics: &crate::telemetry::metrics::Metrics) -> Refreshed {
    let login = r.login;
    let (Some(doc), Some(rt)) = (login.discovered(), r.session.refresh_token.as_deref()) else {
        return Refreshed::Kept;
    };
    let now = unix_secs();
    match refresh_gate().turn(&r.session, now) {
        RefreshTurn::Go => {}
        RefreshTurn::Wait => return Refreshed::Kept,
        RefreshTurn::Ended => return Refreshed::Ended,
    }
    let (client_id, secret) = login.client();
    let ended = |reason: &str| {
        tracing::info!(
            route = r.route,
            profile = r.profile,
            reason,
            "session refresh refused: session ended"
        );
        refresh_gate().ended(&r.session);
        Refreshed::Ended
    };
    let body = match token_call(&doc.token_endpoint, client_id, secret.expose(), login.refresh_form(rt)).await {
        Ok(body) => body,
        Err(crate::identity::client::IdpError::Refused { status, code, .. })
            if (400..500).contains(&status) && !client_refused(status, code.as_deref()) =>
        {
            return ended(code.as_deref().unwrap_or("refresh token refused"));
        }
        Err(error) => {
            metrics.backend_error(BackendErrorKind::Login);
            tracing::warn!(route = r.route, profile = r.profile, %error, "session refresh failed");
            return Refreshed::Kept;
        }
    };
    let session: Session = match login.accept_tokens(&body, None, Some(&r.session), now) {
        Ok(s) => s,
        Err(e) => return ended(e.reason()),
    };
    let Some(line) = random().and_then(|seal| login.session_cookie(&session, seal, now).ok()) else {
        return Refreshed::Kept;
    };
    match line.split(';').next().and_then(|p| p.split_once('=')) {
        Some((_, value)) => Refreshed::New {
            value: value.to_owned(),
            line,
        },
        None => Refreshed::Kept,
    }
}

/// `authority` as a return URL registered with a provider is written: lower case, the host
/// without a trailing dot, the scheme's default port left out.
fn return_authority(authority: &str, https: bool) -> String {
    let authority = authority.to_ascii_lowercase();
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority.as_str(), None),
    };
    let host = host.trim_end_matches('.');
    let default = if https { "443" } else { "80" };
    match port.map(|p| p.trim_start_matches('0')) {
        Some(p) if !p.is_empty() && p != default => format!("{host}:{p}"),
        _ => host.to_owned(),
    }
}

/// Removes cookie `name` from the request's `Cookie` headers (one line left).
pub(super) fn remove_cookie(headers: &mut http::HeaderMap, name: &str) {
    let kept: Vec<Vec<u8>> = cookie_pairs(headers)
        .filter(|p| pair_name(p) != name.as_bytes())
        .collect();
    set_cookie_line(headers, kept);
}

/// Puts `name=value` in the request's `Cookie` header in place of the browser's (one line).
pub(super) fn replace_cookie(headers: &mut http::HeaderMap, name: &str, value: &str) {
    let mut pairs: Vec<Vec<u8>> = cookie_pairs(headers)
        .filter(|p| pair_name(p) != name.as_bytes())
        .collect();
    pairs.push(format!("{name}={value}").into_bytes());
    set_cookie_line(headers, pairs);
}

/// Removes the sidecar's sign-in cookies (`__Host-portcullis-session-*`,
/// `__Host-portcullis-login-*`, and the same names without the prefix) from the request's
/// `Cookie` headers.
pub(super) fn strip_cookies(headers: &mut http::HeaderMap) {
    let ours = |p: &[u8]| std::str::from_utf8(pair_name(p)).is_ok_and(is_sign_in_cookie);
    if !cookie_pairs(headers).any(|p| ours(&p)) {
        return;
    }
    let kept: Vec<Vec<u8>> = cookie_pairs(headers).filter(|p| !ours(p)).collect();
    set_cookie_line(headers, kept);
}

/// Replaces the request's `Cookie` headers with one line of `pairs` (none when empty). The
/// bytes are kept as they came: a cookie the browser sent in UTF-8 (or any byte a header may
/// carry) passes to the app unchanged.
fn set_cookie_line(headers: &mut http::HeaderMap, pairs: Vec<Vec<u8>>) {
    headers.remove(http::header::COOKIE);
    if pairs.is_empty() {
        return;
    }
    if let Ok(v) = HeaderValue::from_bytes(&pairs.join(&b"; "[..])) {
        headers.insert(http::header::COOKIE, v);
    }
}

/// The name of a `name=value` pair.
fn pair_name(pair: &[u8]) -> &[u8] {
    pair.split(|&b| b == b'=').next().unwrap_or(b"")
}

/// Every `name=value` pair of the request's `Cookie` headers, as bytes (a cookie that is not
/// ASCII spoils none of the others).
fn cookie_pairs(headers: &http::HeaderMap) -> impl Iterator<Item = Vec<u8>> + '_ {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .map(|p| p.trim_ascii().to_vec())
        .filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_urls_are_written_as_registered() {
        for (sent, https, want) in [
            ("LOCALHOST", false, "localhost"),
            ("localhost.", false, "localhost"),
            ("Fake.Example.COM.:443", true, "fake.example.com"),
            ("fake.localhost:80", false, "fake.localhost"),
            ("localhost:0080", false, "localhost"),
            ("app.example.com:8443", true, "app.example.com:8443"),
            ("app.example.com:80", true, "app.example.com:80"),
            ("[::1]:8080", false, "[::1]:8080"),
            ("[::1]", false, "[::1]"),
        ] {
            assert_eq!(return_authority(sent, https), want, "{sent}");
        }
    }

    #[test]
    fn sign_in_cookies_never_reach_the_app_and_a_refreshed_one_replaces_the_old() {
        let mut h = http::HeaderMap::new();
        h.append(
            http::header::COOKIE,
            "a=1; __Host-portcullis-session-p=old".parse().unwrap(),
        );
        h.append(
            http::header::COOKIE,
            "__Host-portcullis-login-p-tag=x; b=2".parse().unwrap(),
        );
        h.append(http::header::COOKIE, "portcullis-session-p=spoofed".parse().unwrap());
        replace_cookie(&mut h, "__Host-portcullis-session-p", "new");
        assert_eq!(
            h[http::header::COOKIE],
            "a=1; __Host-portcullis-login-p-tag=x; b=2; portcullis-session-p=spoofed; __Host-portcullis-session-p=new"
        );
        strip_cookies(&mut h);
        assert_eq!(h[http::header::COOKIE], "a=1; b=2");
        let mut only = http::HeaderMap::new();
        only.insert(http::header::COOKIE, "__Host-portcullis-session-p=v".parse().unwrap());
        strip_cookies(&mut only);
        assert!(!only.contains_key(http::header::COOKIE));
        // An ended session's cookie is taken out of the request.
        let mut ended = http::HeaderMap::new();
        ended.insert(
            http::header::COOKIE,
            "a=1; __Host-portcullis-session-p=v; b=2".parse().unwrap(),
        );
        remove_cookie(&mut ended, "__Host-portcullis-session-p");
        assert_eq!(ended[http::header::COOKIE], "a=1; b=2");
    }
}
