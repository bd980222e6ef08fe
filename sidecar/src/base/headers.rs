//! Header hygiene between the client and the app: hop-by-hop headers removed, forwarding
//! headers set, and the `X-Portcullis-*` headers only ever written by the sidecar.
//!
//! What the app can trust (docs/api.md, "Security model"): every header under the
//! `X-Portcullis-` prefix, in any spelling a framework may fold into it (any case, `_` for
//! `-`), comes from the sidecar; `X-Real-IP` is the client address the policy engine decided
//! on (after trusted proxies); `X-Forwarded-Proto` is the scheme the client used (the
//! sidecar's own, or `https` when a trusted proxy in front says so); the last `X-Forwarded-For` entry is the sidecar's peer. `Forwarded`,
//! `X-Forwarded-Host` and `X-Forwarded-Port` from the client are removed: the `Host` the
//! request was routed on is the one forwarded.

use std::net::IpAddr;

use bytes::Bytes;
use http::HeaderMap;
use http::header::{
    CONNECTION, CONTENT_LENGTH, COOKIE, HeaderName, HeaderValue, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};

/// Prefix of the headers that carry the sidecar's verdict to the app.
pub const PORTCULLIS_PREFIX: &str = "x-portcullis-";
/// The identity that was admitted (`anonymous`, the Basic user, the API key, ...).
pub const IDENTITY: HeaderName = HeaderName::from_static("x-portcullis-identity");
/// The profile that admitted the call.
pub const PROFILE: HeaderName = HeaderName::from_static("x-portcullis-profile");
/// The route that matched.
pub const ROUTE: HeaderName = HeaderName::from_static("x-portcullis-route");
/// The signed-in person's email (a sign-in session whose ID token had a verified one).
pub const EMAIL: HeaderName = HeaderName::from_static("x-portcullis-email");
/// The client the Builtin provider issued the admitting token to.
pub const CLIENT: HeaderName = HeaderName::from_static("x-portcullis-client");

/// How the identity header is encoded when the identity is not a plain header value.
pub const IDENTITY_ENCODING: HeaderName = HeaderName::from_static("x-portcullis-identity-encoding");

const X_FORWARDED_FOR_NAME: &str = "x-forwarded-for";
const X_FORWARDED_PROTO_NAME: &str = "x-forwarded-proto";
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static(X_FORWARDED_FOR_NAME);
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static(X_FORWARDED_PROTO_NAME);
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// Client-supplied forwarding headers the sidecar does not pass on.
/// Headers a client may send that some framework or library takes as the word of a proxy in
/// front (the client's address, the scheme, the host, the path or the method it "really"
/// used, its client certificate, the user a proxy signed in): the sidecar does not vouch for
/// them, so the app never gets them. Compared with any character other than a letter or a
/// digit taken for `-`, as CGI, WSGI, Rack and lighttpd fold them (`X.Forwarded~Host` reads
/// as `HTTP_X_FORWARDED_HOST`). (`X-Forwarded-For` and `X-Forwarded-Proto` are the sidecar's
/// own and set, not removed; their other spellings are removed.) `Proxy` is httpoxy's
/// (CGI's `HTTP_PROXY`, which some HTTP clients take for their outbound proxy).
const CLIENT_FORWARDING: [&str; 40] = [
    "forwarded",
    "x-url-scheme",
    "front-end-https",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-forwarded-for",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-original-host",
    "x-host",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-scheme",
    "wl-proxy-client-ip",
    "x-client-cert",
    "x-arr-clientcert",
    "x-remote-user",
    "remote-user",
    "x-envoy-original-path",
    "x-webauth-user",
    "proxy",
    "x-original-method",
    "x-remote-group",
    "x-client-verify",
    "x-client-dn",
    "x-client-cert-chain",
    "client-ip",
    "forwarded-for",
    "x-forwarded",
    "x-originating-ip",
    "x-remote-ip",
    "x-remote-addr",
    "x-proxyuser-ip",
    "x-appengine-user-email",
];
/// Families of such headers, by the start of their names (compared the same way): every
/// `X-Forwarded-*` but the sidecar's own two, oauth2-proxy's `X-Auth-Request-*`, Azure's
/// `X-Ms-Client-Principal*`, IAP's `X-Goog-Authenticated-User-*`, ALB's `X-Amzn-Oidc-*`,
/// client-certificate details (`X-Ssl-Client-*`, `Ssl-Client-*`), the Kubernetes
/// authenticating proxy's `X-Remote-Extra-*`, and `Proxy-*` in spellings other than the
/// hop-by-hop ones removed anyway.
const CLIENT_FORWARDING_PREFIXES: [&str; 9] = [
    "x-forwarded-",
    "x-auth-request-",
    "x-ms-client-principal",
    "x-goog-authenticated-user-",
    "x-amzn-oidc-",
    "x-ssl-client-",
    "ssl-client-",
    "x-remote-extra-",
    "proxy-",
];
/// Names whose other spellings go (`Content_Length` would read as `HTTP_CONTENT_LENGTH`):
/// the sidecar's own forwarding headers and the fields that frame a message or describe a
/// connection. The names themselves are set by the sidecar or handled as what they are.
const OTHER_SPELLINGS_GO: [&str; 5] = [
    X_FORWARDED_FOR_NAME,
    X_FORWARDED_PROTO_NAME,
    "content-length",
    "transfer-encoding",
    "keep-alive",
];
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Removes the headers that describe one connection rather than the message (RFC 9110
/// section 7.6.1): `Connection` and every header it names, `Keep-Alive`, `TE`, `Trailer`,
/// `Transfer-Encoding`, `Upgrade` and every `Proxy-*`.
///
/// On every request and response: one pass over the names, then only what is there is
/// removed, by name, without copying any (most responses carry `Connection: keep-alive`
/// and nothing else of these).
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = [false; 6];
    let mut proxy = false;
    for name in headers.keys() {
        match HOP_BY_HOP.iter().position(|hop| hop == name) {
            Some(i) => present[i] = true,
            None => proxy |= name.as_str().starts_with("proxy-"),
        }
    }
    if present[0] {
        for name in connection_named(headers) {
            headers.remove(name);
        }
    }
    for (hop, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, there)| *there) {
        headers.remove(hop);
    }
    if proxy {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for name in names {
            headers.remove(name);
        }
    }
}

/// Whether the `Transfer-Encoding` of a message is one `chunked` and nothing else (no other
/// coding, which a peer would have to be told of, and not none).
pub fn is_lone_chunked(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty());
    codings.next().is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")) && codings.next().is_none()
}

/// The names `Connection` lists, but for the hop-by-hop ones (removed anyway) and `Host`
/// (`Connection: close, host` must not take away the authority the call was routed on).
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty() && !is_never_named(token))
        .filter_map(|token| HeaderName::from_bytes(token).ok())
        .collect()
}

/// Whether `name` describes one connection: a hop-by-hop header or a `Proxy-*` one (the
/// names `Connection` lists aside).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name.as_str().starts_with("proxy-")
}

/// The hop-by-hop headers by name, `Connection` first.
static HOP_BY_HOP: [HeaderName; 6] = [CONNECTION, KEEP_ALIVE, TE, TRAILER, TRANSFER_ENCODING, UPGRADE];

/// A `Connection` token that needs no header removed for it: a hop-by-hop header removed
/// anyway, or one it may not take away: `Host`, and `X-Forwarded-For` and
/// `X-Forwarded-Proto`, whose client values the sidecar has read (its decision may rest on
/// them) and which it keeps or sets for the app.
fn is_never_named(token: &[u8]) -> bool {
    token.eq_ignore_ascii_case(b"host")
        || token.eq_ignore_ascii_case(X_FORWARDED_FOR_NAME.as_bytes())
        || token.eq_ignore_ascii_case(X_FORWARDED_PROTO_NAME.as_bytes())
        || HOP_BY_HOP
            .iter()
            .any(|hop| token.eq_ignore_ascii_case(hop.as_str().as_bytes()))
}

/// Removes what only the sidecar may say: every header a framework may read as
/// `X-Portcullis-*` (`X_Portcullis_Identity` becomes `HTTP_X_PORTCULLIS_IDENTITY` in CGI, as
/// `X-Portcullis-Identity` does), and the forwarding and override headers the sidecar does
/// not vouch for ([`CLIENT_FORWARDING`], in any such spelling).
pub fn remove_portcullis(headers: &mut HeaderMap) {
    // One pass over the names first: most messages carry none of these.
    if !headers.keys().any(is_sidecar_only) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|k| is_sidecar_only(k)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

fn is_sidecar_only(name: &HeaderName) -> bool {
    let name = name.as_str();
    // Most fields (`host`, `accept`, `authorization`, ...) start with a letter none of these
    // names starts with, and are told apart there.
    if !name
        .as_bytes()
        .first()
        .is_some_and(|b| SIDECAR_ONLY_FIRST[usize::from(*b)])
    {
        return false;
    }
    let own = name == X_FORWARDED_FOR_NAME || name == X_FORWARDED_PROTO_NAME;
    folds_to(name, PORTCULLIS_PREFIX, true)
        || CLIENT_FORWARDING.iter().any(|f| folds_to(name, f, false))
        || (!own && CLIENT_FORWARDING_PREFIXES.iter().any(|f| folds_to(name, f, true)))
        || OTHER_SPELLINGS_GO
            .iter()
            .any(|real| name != *real && folds_to(name, real, false))
}

/// The first bytes a name [`is_sidecar_only`] may start with: those of the names it checks,
/// and every byte that folds to `-` (none of them starts with `-`, but a table made from the
/// lists stays right if one ever does).
static SIDECAR_ONLY_FIRST: [bool; 256] = {
    let mut first = [false; 256];
    let mut b = 0;
    while b < 256 {
        first[b] = !(b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    first[PORTCULLIS_PREFIX.as_bytes()[0] as usize] = true;
    let mut i = 0;
    while i < CLIENT_FORWARDING.len() {
        first[CLIENT_FORWARDING[i].as_bytes()[0] as usize] = true;
        i += 1;
    }
    let mut i = 0;
    while i < CLIENT_FORWARDING_PREFIXES.len() {
        first[CLIENT_FORWARDING_PREFIXES[i].as_bytes()[0] as usize] = true;
        i += 1;
    }
    let mut i = 0;
    while i < OTHER_SPELLINGS_GO.len() {
        first[OTHER_SPELLINGS_GO[i].as_bytes()[0] as usize] = true;
        i += 1;
    }
    first
};

/// Whether `name` (lower case, as `HeaderName` keeps it) reads as `target` (or, with
/// `prefix`, as something starting with it) once every character other than a letter or a
/// digit is taken for `-` (CGI's `HTTP_*` names turn them all into `_`).
fn folds_to(name: &str, target: &str, prefix: bool) -> bool {
    let (name, target) = (name.as_bytes(), target.as_bytes());
    (if prefix {
        name.len() >= target.len()
    } else {
        name.len() == target.len()
    }) && name
        .iter()
        .zip(target)
        .all(|(b, t)| b == t || (!b.is_ascii_alphanumeric() && *t == b'-'))
}

/// Who the sidecar admitted, told to the app in `X-Portcullis-*` headers and `X-Real-IP`.
#[derive(Debug, Clone, Copy)]
pub struct Verdict<'a> {
    pub route: &'a str,
    pub profile: &'a str,
    /// The identity the profile authenticated (never a client-chosen audit override).
    pub identity: &'a str,
    /// The signed-in person's email (sign-in sessions), told in `X-Portcullis-Email`.
    pub email: Option<&'a str>,
    /// The client the Builtin provider issued the token to, told in `X-Portcullis-Client`.
    pub client: Option<&'a str>,
    /// The client address the engine decided on (after trusted proxies).
    pub client_ip: IpAddr,
    /// The connection's peer (told in `X-Forwarded-For`).
    pub peer: &'a PeerAddr,
    /// The route's and its profiles' names as header values, made when the configuration
    /// was loaded ([`RouteNames`]); `None`: made from `route` and `profile` here.
    pub names: Option<&'a RouteNames>,
}

/// A route's name and its profiles' names as header values, made once per configuration so
/// that admitting a call copies none of them (a clone of a [`HeaderValue`] shares its bytes).
/// A name that is not a plain header value is left out and written as [`set_verdict`] would.
#[derive(Debug, Clone, Default)]
pub struct RouteNames {
    route: Option<HeaderValue>,
    profiles: Box<[(Box<str>, HeaderValue)]>,
}

impl RouteNames {
    pub fn new<'a>(route: &str, profiles: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            route: plain_value(route),
            profiles: profiles
                .into_iter()
                .filter_map(|name| Some((name.into(), plain_value(name)?)))
                .collect(),
        }
    }

    fn profile(&self, name: &str) -> Option<&HeaderValue> {
        self.profiles.iter().find(|(n, _)| **n == *name).map(|(_, v)| v)
    }
}

/// Writes the verdict: `X-Portcullis-Route`, `-Profile`, `-Identity` and `X-Real-IP`. An
/// identity that is not a plain visible-ASCII header value is percent-encoded (UTF-8, `%`
/// included) and flagged with `X-Portcullis-Identity-Encoding: percent`, so it is never
/// left out and never ambiguous.
pub fn set_verdict(headers: &mut HeaderMap, verdict: &Verdict<'_>) {
    verdict_fields(verdict, |name, value| {
        headers.insert(name, value);
    });
}

/// The verdict's fields ([`set_verdict`]), each given to `field` once, in that order.
fn verdict_fields(verdict: &Verdict<'_>, mut field: impl FnMut(HeaderName, HeaderValue)) {
    let mut plain = |name: HeaderName, shared: Option<&HeaderValue>, value: &str| match shared
        .cloned()
        .or_else(|| plain_value(value))
    {
        Some(value) => {
            field(name, value);
            true
        }
        None => false,
    };
    plain(ROUTE, verdict.names.and_then(|n| n.route.as_ref()), verdict.route);
    plain(
        PROFILE,
        verdict.names.and_then(|n| n.profile(verdict.profile)),
        verdict.profile,
    );
    if let Some(email) = verdict.email {
        plain(EMAIL, None, email);
    }
    if let Some(client) = verdict.client {
        plain(CLIENT, None, client);
    }
    if !plain(IDENTITY, None, verdict.identity)
        && let Ok(encoded) = HeaderValue::from_str(&percent_encode_identity(verdict.identity))
    {
        field(IDENTITY, encoded);
        field(IDENTITY_ENCODING, HeaderValue::from_static("percent"));
    }
    field(X_REAL_IP, verdict.peer.value_for(verdict.client_ip));
}

/// A connection's peer address, and its text as a header value made once per connection: the
/// `X-Forwarded-For` and `X-Real-IP` of each of its requests share it (a clone) rather than
/// format and copy the address again.
#[derive(Debug, Clone)]
pub struct PeerAddr {
    ip: IpAddr,
    value: HeaderValue,
}

impl PeerAddr {
    pub fn new(ip: IpAddr) -> Self {
        Self {
            ip,
            value: ip_value(ip),
        }
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// `ip` as a header value: the peer's own, shared, when it is the peer.
    pub fn value_for(&self, ip: IpAddr) -> HeaderValue {
        if ip == self.ip {
            self.value.clone()
        } else {
            ip_value(ip)
        }
    }
}

/// `value` as a header value when it is plain: visible ASCII (spaces inside allowed), no `%`.
fn plain_value(value: &str) -> Option<HeaderValue> {
    let plain = value.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'%')
        && !value.starts_with(' ')
        && !value.ends_with(' ');
    if plain { HeaderValue::from_str(value).ok() } else { None }
}

/// `%XX` for every byte that is not visible ASCII, for `%` and for spaces.
fn percent_encode_identity(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(
                char::from_digit(u32::from(b >> 4), 16)
                    .unwrap_or('0')
                    .to_ascii_uppercase(),
            );
            out.push(
                char::from_digit(u32::from(b & 15), 16)
                    .unwrap_or('0')
                    .to_ascii_uppercase(),
            );
        }
    }
    out
}

/// Appends `peer` to `X-Forwarded-For` (joining earlier values into one line) and sets
/// `X-Forwarded-Proto`.
pub fn set_forwarded(headers: &mut HeaderMap, peer: &PeerAddr, proto: &'static str) {
    let value = forwarded_for(headers, peer);
    headers.insert(X_FORWARDED_FOR, value);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
}

/// `X-Forwarded-For` with `peer` appended: the earlier values that are not blank, then the
/// peer, on one line.
fn forwarded_for(headers: &HeaderMap, peer: &PeerAddr) -> HeaderValue {
    let mut earlier = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .map(|v| v.as_bytes().trim_ascii())
        .filter(|v| !v.is_empty())
        .peekable();
    if earlier.peek().is_none() {
        // The usual case: the peer alone, shared.
        return peer.value.clone();
    }
    let mut chain = Vec::with_capacity(64);
    for value in earlier {
        chain.extend_from_slice(value);
        chain.extend_from_slice(b", ");
    }
    chain.extend_from_slice(peer.value.as_bytes());
    // Earlier values (valid header values) and an address: cannot fail.
    HeaderValue::from_maybe_shared(Bytes::from(chain)).unwrap_or_else(|_| peer.value.clone())
}

/// What the sidecar does to a request's fields on its way to the app: the connection's
/// fields and every one only the sidecar may say go ([`remove_hop_by_hop`],
/// [`remove_portcullis`]), `X-Forwarded-For` and `-Proto` are set ([`set_forwarded`]) and
/// the verdict added ([`set_verdict`]). Applied to a header map ([`Self::apply`]) or, for a
/// request written by hand, to the fields as they are written ([`Self::fields`]), which
/// spares the map its removals and insertions.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub verdict: Verdict<'a>,
    /// The scheme told in `X-Forwarded-Proto`.
    pub proto: &'static str,
}

impl Outgoing<'_> {
    /// Makes `headers` what the app gets.
    pub fn apply(&self, headers: &mut HeaderMap) {
        remove_hop_by_hop(headers);
        remove_portcullis(headers);
        if let Some(cookies) = joined_cookies(headers) {
            headers.insert(COOKIE, cookies);
        }
        if let Some(length) = one_length(headers) {
            headers.insert(CONTENT_LENGTH, length);
        }
        set_forwarded(headers, self.verdict.peer, self.proto);
        set_verdict(headers, &self.verdict);
    }

    /// Gives `field` each field the app gets from `headers`, which are left as they are: the
    /// same fields [`Self::apply`] leaves, the client's first in their order, then
    /// `X-Forwarded-For`, `X-Forwarded-Proto` and the verdict.
    pub fn fields(&self, headers: &HeaderMap, mut field: impl FnMut(&HeaderName, &[u8])) {
        let named = if headers.contains_key(CONNECTION) {
            connection_named(headers)
        } else {
            Vec::new()
        };
        let gone = |name: &HeaderName| is_hop_by_hop(name) || named.contains(name) || is_sidecar_only(name);
        // `Cookie` and `Content-Length` are written after the others, each as one field
        // (`joined_cookies`, `one_length`).
        let (mut cookies, mut lengths) = (false, false);
        for (name, value) in headers {
            if name == COOKIE {
                cookies = true;
            } else if name == CONTENT_LENGTH {
                lengths = true;
            } else if !gone(name) && name != X_FORWARDED_FOR && name != X_FORWARDED_PROTO {
                field(name, value.as_bytes());
            }
        }
        for (there, name, one) in [
            (
                cookies,
                &COOKIE,
                joined_cookies as fn(&HeaderMap) -> Option<HeaderValue>,
            ),
            (lengths, &CONTENT_LENGTH, one_length),
        ] {
            if there && !gone(name) {
                match one(headers) {
                    Some(value) => field(name, value.as_bytes()),
                    None => headers.get_all(name).iter().for_each(|v| field(name, v.as_bytes())),
                }
            }
        }
        // (`Connection` cannot name `X-Forwarded-For` away: [`is_never_named`].)
        field(&X_FORWARDED_FOR, forwarded_for(headers, self.verdict.peer).as_bytes());
        field(&X_FORWARDED_PROTO, self.proto.as_bytes());
        verdict_fields(&self.verdict, |name, value| field(&name, value.as_bytes()));
    }
}

/// The request's `Cookie` fields as the one field HTTP/1.1 has (RFC 9113 section 8.2.3: an
/// HTTP/2 client may send each cookie as a field of its own, and an app over HTTP/1.1 may
/// read only the first), joined with `; `; `None` when there are fewer than two.
fn joined_cookies(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut fields = headers.get_all(COOKIE).iter();
    let first = fields.next()?;
    let mut rest = fields.peekable();
    rest.peek()?;
    let mut joined = first.as_bytes().to_vec();
    for value in rest {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(value.as_bytes());
    }
    // Header values joined with `; `: cannot fail.
    HeaderValue::from_maybe_shared(Bytes::from(joined)).ok()
}

/// The request's `Content-Length` as one field when it came as several that state one
/// length (HTTP/2 lets `5` and `05` through; an app over HTTP/1.1 may refuse two fields, or
/// read another one than the sidecar did); `None` when there is at most one, or they differ
/// (which neither hyper's HTTP/1.1 server nor its HTTP/2 one lets through).
fn one_length(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut fields = headers.get_all(CONTENT_LENGTH).iter();
    let first = fields.next()?;
    let mut rest = fields.peekable();
    rest.peek()?;
    let parse = |v: &HeaderValue| v.to_str().ok()?.trim().parse::<u64>().ok();
    let length = parse(first)?;
    rest.all(|v| parse(v) == Some(length))
        .then(|| crate::base::values::number_value(length))
}

/// `ip` in its usual text form as a header value: formatted on the stack, copied once.
pub fn ip_value(ip: IpAddr) -> HeaderValue {
    let (text, len) = ip_text(ip);
    HeaderValue::from_bytes(&text[..len]).unwrap_or(HeaderValue::from_static("-"))
}

/// Appends `ip` in its usual text form.
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    let (text, len) = ip_text(ip);
    out.extend_from_slice(&text[..len]);
}

/// `ip` in its usual text form on the stack, and its length (IPv4 without going through
/// `fmt`; IPv6 takes at most 45 characters).
fn ip_text(ip: IpAddr) -> ([u8; 48], usize) {
    let mut text = [0u8; 48];
    let len = match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            let mut put = |b: u8| {
                text[n] = b;
                n += 1;
            };
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    put(b'.');
                }
                if octet >= 100 {
                    put(b'0' + octet / 100);
                }
                if octet >= 10 {
                    put(b'0' + octet / 10 % 10);
                }
                put(b'0' + octet % 10);
            }
            n
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let mut out = &mut text[..];
            let _ = write!(out, "{v6}");
            let left = out.len();
            text.len() - left
        }
    };
    (text, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn spoofed_verdict_headers_go() {
        let mut h = map(&[
            ("x-portcullis-identity", "admin"),
            ("X-Portcullis-Other", "1"),
            ("X_Portcullis_Identity", "admin"),
            ("x-portcullis_identity", "admin"),
            ("forwarded", "for=1.2.3.4;host=admin.example"),
            ("x-forwarded-host", "admin.example"),
            ("x-forwarded-port", "443"),
            ("x-real-ip", "1.2.3.4"),
            ("x-kept", "y"),
            ("x-portcullisx", "kept: not the prefix"),
        ]);
        remove_portcullis(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h.contains_key("x-kept") && h.contains_key("x-portcullisx"));
    }

    /// Whole families of a proxy's headers go (httpoxy's `Proxy` among them), and other
    /// spellings of the fields that frame a message; the real ones, and names that only look
    /// alike, stay.
    #[test]
    fn proxy_header_families_and_framing_spellings_go() {
        let mut h = map(&[
            ("x-auth-request-access-token", "t"),
            ("x-auth-request-redirect", "https://evil/"),
            ("x-ms-client-principal-idp", "aad"),
            ("x-goog-authenticated-user-groups", "admins"),
            ("x-amzn-oidc-accesstoken-x", "t"),
            ("x-forwarded-access-token", "t"),
            ("x-forwarded-method", "DELETE"),
            ("x-forwarded-tlsclientcert", "c"),
            ("x-ssl-client-s-dn", "CN=admin"),
            ("ssl-client-verify", "SUCCESS"),
            ("x-remote-extra-scopes", "all"),
            ("x-remote-group", "system:masters"),
            ("proxy", "http://evil.example:8080"),
            ("client-ip", "6.6.6.6"),
            ("x_forwarded", "for=6.6.6.6"),
            ("proxy_authorization", "Basic eDp5"),
            ("keep_alive", "1"),
            ("transfer_encoding", "chunked"),
            ("content_length", "999"),
            ("content-length", "2"),
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-proxy-like", "kept"),
            ("proxyx", "kept"),
        ]);
        remove_portcullis(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "content-length",
                "proxyx",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-proxy-like"
            ]
        );
    }

    /// `Connection` cannot take away the client's forwarding chain: the sidecar read it (a
    /// trusted proxy's `X-Forwarded-For` is what the decision's client address rests on), and
    /// the app is promised it with the peer appended.
    #[test]
    fn connection_cannot_name_the_forwarding_chain_away() {
        let peer = PeerAddr::new("127.0.0.1".parse().unwrap());
        let mut h = map(&[
            ("connection", "X-Forwarded-For, x-forwarded-proto"),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        remove_hop_by_hop(&mut h);
        set_forwarded(&mut h, &peer, "http");
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    }

    /// Several `Cookie` fields (HTTP/2 sends one per cookie) reach the app as one, and
    /// several `Content-Length` fields stating one length as one; each path does the same.
    #[test]
    fn cookies_and_lengths_arrive_as_one_field() {
        let peer = PeerAddr::new("10.9.9.9".parse().unwrap());
        let outgoing = Outgoing {
            verdict: Verdict {
                route: "r",
                profile: "p",
                identity: "alice",
                email: None,
                client: None,
                client_ip: "10.9.9.9".parse().unwrap(),
                peer: &peer,
                names: None,
            },
            proto: "http",
        };
        let headers = map(&[
            ("cookie", "a=1"),
            ("content-length", "5"),
            ("cookie", "b=2"),
            ("content-length", "05"),
        ]);
        let mut applied = headers.clone();
        outgoing.apply(&mut applied);
        assert_eq!(applied.get_all(COOKIE).iter().collect::<Vec<_>>(), ["a=1; b=2"]);
        assert_eq!(applied.get_all(CONTENT_LENGTH).iter().collect::<Vec<_>>(), ["5"]);
        let mut written = Vec::new();
        outgoing.fields(&headers, |name, value| {
            if name == COOKIE || name == CONTENT_LENGTH {
                written.push(format!("{name}: {}", String::from_utf8_lossy(value)));
            }
        });
        assert_eq!(written, ["cookie: a=1; b=2", "content-length: 5"]);
        // One of each is left as it is; lengths that differ are not made one.
        let mut one = map(&[("cookie", "a=1"), ("content-length", "7"), ("content-length", "8")]);
        outgoing.apply(&mut one);
        assert_eq!(one["cookie"], "a=1");
        assert_eq!(one.get_all(CONTENT_LENGTH).iter().count(), 2);
    }

    #[test]
    fn only_what_connection_names_goes() {
        let mut h = map(&[
            ("connection", "Keep-Alive,, close ,X-Named"),
            ("connection", "x-second"),
            ("keep-alive", "timeout=5"),
            ("x-named", "1"),
            ("close", "1"),
            ("x-second", "1"),
            ("x-kept", "yes"),
            ("proxy-x", "1"),
        ]);
        remove_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-kept"], "{h:?}");
        let mut h = map(&[("connection", "keep-alive"), ("content-length", "5")]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["content-length"]);
    }

    #[test]
    fn connection_cannot_name_host_away() {
        let mut h = map(&[("connection", "close, host, HOST"), ("host", "public.example")]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h["host"], "public.example");
    }

    #[test]
    fn identities_that_are_not_header_values_are_encoded() {
        let peer = PeerAddr::new("10.9.9.9".parse().unwrap());
        let verdict = |identity| Verdict {
            route: "r",
            profile: "p",
            identity,
            email: None,
            client: None,
            client_ip: "10.1.2.3".parse().unwrap(),
            peer: &peer,
            names: None,
        };
        let mut h = HeaderMap::new();
        set_verdict(&mut h, &verdict("alice"));
        assert_eq!(h["x-portcullis-identity"], "alice");
        assert!(!h.contains_key("x-portcullis-identity-encoding"));
        assert_eq!(h["x-real-ip"], "10.1.2.3");
        let mut h = HeaderMap::new();
        set_verdict(&mut h, &verdict("Zoë 100%\r\nx: y"));
        assert_eq!(h["x-portcullis-identity"], "Zo%C3%AB%20100%25%0D%0Ax:%20y");
        assert_eq!(h["x-portcullis-identity-encoding"], "percent");
        assert_eq!(h["x-portcullis-route"], "r");
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = map(&[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2")]);
        set_forwarded(&mut h, &PeerAddr::new("10.0.0.1".parse().unwrap()), "http");
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, &PeerAddr::new("::1".parse().unwrap()), "https");
        assert_eq!(h["x-forwarded-for"], "::1");
        let mut h = map(&[("x-forwarded-for", " "), ("x-forwarded-for", "9.9.9.9 ")]);
        set_forwarded(&mut h, &PeerAddr::new("192.168.0.1".parse().unwrap()), "http");
        assert_eq!(h["x-forwarded-for"], "9.9.9.9, 192.168.0.1");
    }

    /// `X-Real-IP` is the decided client's address: the peer's shared text when it is the
    /// peer, its own otherwise (a client behind a trusted proxy).
    #[test]
    fn the_real_ip_is_the_client_decided_on() {
        let peer = PeerAddr::new("2001:db8::7".parse().unwrap());
        assert_eq!(peer.value_for(peer.ip()), "2001:db8::7");
        assert_eq!(peer.value_for("203.0.113.5".parse().unwrap()), "203.0.113.5");
    }

    #[test]
    fn addresses_print_as_std_does() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.99.100.255",
            "127.0.0.1",
            "2001:db8::1",
            "::ffff:1.2.3.4",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
    }

    /// The fields written by hand are the ones the map path leaves, value for value, for
    /// every mix of hostile fields: hop-by-hop ones, ones `Connection` names (the sidecar's
    /// own among them), spoofed verdicts in other spellings, forwarding chains.
    #[test]
    fn fields_written_are_what_apply_leaves() {
        let pool: [(&str, &str); 22] = [
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("content-length", "00"),
            ("connection", "cookie"),
            ("connection", "keep-alive, X-Forwarded-For"),
            ("connection", "close, x-named, host, x-forwarded-proto"),
            ("x-named", "1"),
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", " "),
            ("x-forwarded-for", "2.2.2.2, 3.3.3.3"),
            ("x-forwarded-proto", "https"),
            ("x_forwarded_for", "6.6.6.6"),
            ("x-portcullis-identity", "admin"),
            ("X_Portcullis_Route", "other"),
            ("x-real-ip", "9.9.9.9"),
            ("proxy-authorization", "Basic x"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("host", "public.example"),
            ("accept", "*/*"),
            ("accept", "text/plain"),
            ("content-length", "0"),
        ];
        let peer = PeerAddr::new("10.9.9.9".parse().unwrap());
        let names = RouteNames::new("orders", ["partners"]);
        let verdicts = [
            ("alice", None, None, "10.9.9.9", Some(&names)),
            ("Zoë 100%", Some("z@example.com"), Some("app-1"), "203.0.113.5", None),
        ];
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        for round in 0..2_000 {
            // A pseudo-random subset of the pool, in a pseudo-random order (xorshift).
            let mut pairs = Vec::new();
            for _ in 0..(round % 9) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                pairs.push(pool[(rng % pool.len() as u64) as usize]);
            }
            let headers = map(&pairs);
            let (identity, email, client, client_ip, names) = verdicts[round % 2];
            let outgoing = Outgoing {
                verdict: Verdict {
                    route: "orders",
                    profile: "partners",
                    identity,
                    email,
                    client,
                    client_ip: client_ip.parse().unwrap(),
                    peer: &peer,
                    names,
                },
                proto: if round % 3 == 0 { "https" } else { "http" },
            };
            let mut applied = headers.clone();
            outgoing.apply(&mut applied);
            let mut written = HeaderMap::new();
            outgoing.fields(&headers, |name, value| {
                written.append(name.clone(), HeaderValue::from_bytes(value).unwrap());
            });
            let by_name = |h: &HeaderMap| {
                let mut all: Vec<(String, Vec<Vec<u8>>)> = h
                    .keys()
                    .map(|k| {
                        (
                            k.to_string(),
                            h.get_all(k).iter().map(|v| v.as_bytes().to_vec()).collect(),
                        )
                    })
                    .collect();
                all.sort();
                all
            };
            assert_eq!(by_name(&written), by_name(&applied), "{pairs:?}");
        }
    }

    /// The first-byte table lets through every name the lists hold, in every spelling that
    /// folds to it, and stops the usual fields at once.
    #[test]
    fn sidecar_only_names_pass_the_first_byte_table() {
        let own = [
            PORTCULLIS_PREFIX.to_owned() + "identity",
            "x_forwarded_for".into(),
            "x.forwarded.proto".into(),
        ];
        let families = CLIENT_FORWARDING_PREFIXES.iter().map(|p| format!("{p}x"));
        let spellings = OTHER_SPELLINGS_GO.iter().map(|n| n.replace('-', "_"));
        for name in CLIENT_FORWARDING
            .iter()
            .map(|n| (*n).to_owned())
            .chain(own)
            .chain(families)
            .chain(spellings)
        {
            for spelling in [name.clone(), name.replace('-', "_"), name.replace('-', ".")] {
                let header = HeaderName::from_bytes(spelling.as_bytes()).unwrap();
                assert!(is_sidecar_only(&header), "{spelling}");
            }
        }
        for usual in [
            "host",
            "accept",
            "authorization",
            "user-agent",
            "content-type",
            "x-request-id",
        ] {
            assert!(!is_sidecar_only(&HeaderName::from_static(usual)), "{usual}");
        }
    }

    #[test]
    fn clean_messages_are_left_alone() {
        let mut h = map(&[("host", "a"), ("accept", "*/*"), ("x-proxy-like", "kept")]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 3);
    }
}
