//! Route matching: host (exact or `*.` wildcard), longest segment-aware path prefix,
//! methods, listener.
//!
//! Precedence follows the Gateway API: the most specific host first (exact, then the longest
//! wildcard, then any host), then the longest path prefix, then routes that restrict
//! methods, then by name. Routes are sorted once, at compile time; a match is a scan that
//! stops at the first hit.
//!
//! Paths are matched in their normal form ([`crate::path`]), and so are route prefixes
//! (normalized once, at compile time). Matching is case-sensitive unless the route says
//! `caseInsensitive` (ASCII letters only: everything else in a normal path is ASCII, and
//! escapes are upper-cased on both sides). A path that a more specific case-sensitive route
//! matches only when case is ignored ([`PathMatch::OnlyIgnoringCase`]) is refused by the
//! engine rather than handed to a broader route: an app that ignores case would serve it as
//! the more specific route.

use portcullis_config::Route;

use crate::path;

/// A host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Exact(Box<str>),
    /// `*.example.com` kept as `.example.com`: one or more labels before it.
    Suffix(Box<str>),
}

impl Host {
    fn parse(h: &str) -> Self {
        let h = h.trim_end_matches('.').to_ascii_lowercase();
        match h.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') => Self::Suffix(suffix.into()),
            _ => Self::Exact(h.into()),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(e) => **e == *host,
            Self::Suffix(s) => host.len() > s.len() && host.ends_with(&**s),
        }
    }

    /// (kind, length): exact hosts before wildcards, longer before shorter.
    fn rank(&self) -> (u8, usize) {
        match self {
            Self::Exact(e) => (2, e.len()),
            Self::Suffix(s) => (1, s.len()),
        }
    }
}

/// What a compiled route matches on.
#[derive(Debug, Clone)]
pub struct Matcher {
    hosts: Vec<Host>,
    /// In normal form.
    prefix: Box<str>,
    case_insensitive: bool,
    /// The prefix holds an ASCII letter: a path can match it only when case is ignored.
    has_letters: bool,
    methods: Vec<Box<str>>,
    egress: bool,
}

/// How a request relates to a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathMatch {
    /// The route does not match.
    No,
    /// The route matches.
    Yes,
    /// A case-sensitive route that would match if letter case were ignored (host, method and
    /// listener match too).
    OnlyIgnoringCase,
    /// Host, path and listener match; the route does not list the method.
    OtherMethod,
}

impl Matcher {
    /// The matcher of `route`. Its prefix is brought to normal form; a prefix that has none
    /// (the operator refuses those) keeps its text, and then matches no normal path.
    pub fn new(route: &Route) -> Self {
        let prefix: Box<str> = match path::normalize(&route.path_prefix) {
            Ok(p) => p.into(),
            Err(_) => route.path_prefix.as_str().into(),
        };
        Self {
            hosts: route.hosts.iter().map(|h| Host::parse(h)).collect(),
            has_letters: prefix.bytes().any(|b| b.is_ascii_alphabetic()),
            prefix,
            case_insensitive: route.case_insensitive,
            methods: route.methods.iter().map(|m| m.to_ascii_uppercase().into()).collect(),
            egress: route.egress,
        }
    }

    /// The path prefix, in normal form.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether a request to `host` (normal form) is for this route's hosts.
    pub fn host_matches(&self, host: Option<&str>) -> bool {
        self.host_rank(host).is_some()
    }

    /// Whether the route is served on the egress listener.
    pub fn egress(&self) -> bool {
        self.egress
    }

    /// Whether the route ignores letter case in paths.
    pub fn case_insensitive(&self) -> bool {
        self.case_insensitive
    }

    /// The most specific host pattern that matches `host`, as a rank; `None` when none does.
    fn host_rank(&self, host: Option<&str>) -> Option<(u8, usize)> {
        if self.hosts.is_empty() {
            return Some((0, 0));
        }
        let host = host?;
        self.hosts.iter().filter(|h| h.matches(host)).map(Host::rank).max()
    }

    /// Whether a request (its path in normal form) matches.
    pub fn matches(&self, egress: bool, host: Option<&str>, path: &str, method: &str) -> bool {
        self.path_match(egress, host, path, method) == PathMatch::Yes
    }

    /// How a request (its path in normal form) relates to the route.
    pub fn path_match(&self, egress: bool, host: Option<&str>, path: &str, method: &str) -> PathMatch {
        if self.egress != egress {
            return PathMatch::No;
        }
        // The segment boundary first: it rejects most routes without comparing a byte more.
        let m = match segment_head(&self.prefix, path) {
            None => PathMatch::No,
            Some(head) if head == self.prefix.as_bytes() => PathMatch::Yes,
            Some(head) if self.has_letters && head.eq_ignore_ascii_case(self.prefix.as_bytes()) => {
                if self.case_insensitive {
                    PathMatch::Yes
                } else {
                    PathMatch::OnlyIgnoringCase
                }
            }
            Some(_) => PathMatch::No,
        };
        // HEAD is GET without the body: frameworks serve it with the GET handler, so a route
        // that lists GET guards HEAD too (never left to a broader route).
        let allowed = |m: &str| m == method || (method == "HEAD" && m == "GET");
        if m == PathMatch::No || self.host_rank(host).is_none() {
            return PathMatch::No;
        }
        if !(self.methods.is_empty() || self.methods.iter().any(|m| allowed(m))) {
            return if m == PathMatch::Yes {
                PathMatch::OtherMethod
            } else {
                PathMatch::No
            };
        }
        m
    }

    /// Where a matching route sits for a request to `host`: its host's rank and its prefix's
    /// length. Routes at the same place share a path (and differ in methods at most).
    pub fn place(&self, host: Option<&str>) -> (Option<(u8, usize)>, usize) {
        (self.host_rank(host), self.prefix.len())
    }

    /// The methods it lists, for `Allow` (`HEAD` with `GET`); empty: all.
    pub fn allow(&self) -> String {
        let mut out: Vec<&str> = self.methods.iter().map(|m| &**m).collect();
        if out.contains(&"GET") && !out.contains(&"HEAD") {
            out.push("HEAD");
        }
        out.join(", ")
    }

    /// Sort key: smaller sorts first (most specific).
    pub fn precedence(&self) -> impl Ord + use<> {
        let host = self.hosts.iter().map(Host::rank).max().unwrap_or((0, 0));
        (
            std::cmp::Reverse(host),
            std::cmp::Reverse(self.prefix.len()),
            std::cmp::Reverse(!self.methods.is_empty()),
        )
    }
}

/// Whether `prefix` matches `path` on segment boundaries: `/api` matches `/api`, `/api/` and
/// `/api/v1`, never `/apix`. A `.` or a percent-escape after the prefix is a boundary too:
/// `/api` covers `/api.json`, which frameworks with format suffixes (Rails, Spring's suffix
/// patterns) serve as `/api`, and `/api%20` or `/api%3F`, which an app that trims or decodes
/// the path reads as `/api`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with(['/', '.', '%']),
    }
}

/// [`prefix_matches`] with ASCII letters compared without regard to case.
pub fn prefix_matches_ignoring_case(prefix: &str, path: &str) -> bool {
    segment_head(prefix, path).is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// The first `prefix.len()` bytes of `path` when a segment boundary follows them (or `prefix`
/// ends with `/`): the part of `path` that `prefix` must equal to match it.
fn segment_head<'p>(prefix: &str, path: &'p str) -> Option<&'p [u8]> {
    let (prefix, path) = (prefix.as_bytes(), path.as_bytes());
    let rest = path.get(prefix.len()..)?;
    let boundary = rest.is_empty()
        || rest.starts_with(b"/")
        || rest.starts_with(b".")
        || rest.starts_with(b"%")
        || prefix.ends_with(b"/");
    path.get(..prefix.len()).filter(|_| boundary)
}

pub use portcullis_config::{valid_authority, valid_host};

/// Normalizes a request host for matching: lower case, without a trailing dot. Returns the
/// input when it is already normal.
pub fn normal_host(host: &str) -> std::borrow::Cow<'_, str> {
    let h = host.strip_suffix('.').unwrap_or(host);
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(h.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_config::Backend;

    fn route(hosts: &[&str], prefix: &str, methods: &[&str]) -> Matcher {
        Matcher::new(&Route {
            name: "r".into(),
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            path_prefix: prefix.into(),
            methods: methods.iter().map(|s| s.to_string()).collect(),
            profiles: vec![],
            ssl_only: false,
            tls: false,
            backend: Backend::Local { port: 1 },
            egress: false,
            case_insensitive: false,
        })
    }

    #[test]
    fn prefixes_match_on_segments() {
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/"));
        assert!(prefix_matches("/api", "/api/v1"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(prefix_matches("/api", "/api.json"), "format suffixes are the route's");
        assert!(prefix_matches("/api", "/api."));
        assert!(prefix_matches("/api", "/api%20"));
        assert!(!prefix_matches("/api/", "/api"));
        assert!(prefix_matches("/api/", "/api/v1"));
        assert!(!prefix_matches("/api", "/ap"));
    }

    #[test]
    fn hosts_exact_and_wildcard() {
        let r = route(&["api.example.com", "*.apps.example.com"], "/", &[]);
        assert!(r.matches(false, Some("api.example.com"), "/", "GET"));
        assert!(r.matches(false, Some("a.apps.example.com"), "/", "GET"));
        assert!(r.matches(false, Some("a.b.apps.example.com"), "/", "GET"));
        assert!(!r.matches(false, Some("apps.example.com"), "/", "GET"));
        assert!(!r.matches(false, Some("evilapps.example.com"), "/", "GET"));
        assert!(!r.matches(false, None, "/", "GET"), "a host-bound route needs a Host");
        assert!(
            !r.matches(true, Some("api.example.com"), "/", "GET"),
            "not an egress route"
        );
        let any = route(&[], "/", &[]);
        assert!(any.matches(false, None, "/", "GET"));
    }

    #[test]
    fn methods() {
        let r = route(&[], "/", &["get", "POST"]);
        assert!(r.matches(false, None, "/", "GET"));
        assert!(r.matches(false, None, "/", "POST"));
        assert!(!r.matches(false, None, "/", "DELETE"));
    }

    #[test]
    fn precedence_host_then_prefix_then_methods() {
        let mut rs = [
            route(&[], "/api", &[]),
            route(&["*.example.com"], "/", &[]),
            route(&["api.example.com"], "/", &[]),
            route(&[], "/api/v1", &[]),
            route(&[], "/api", &["GET"]),
        ];
        rs.sort_by_key(|r| r.precedence());
        let order: Vec<String> = rs
            .iter()
            .map(|r| format!("{:?}{}{:?}", r.hosts.first(), r.prefix, r.methods))
            .collect();
        assert_eq!(
            order,
            [
                "Some(Exact(\"api.example.com\"))/[]",
                "Some(Suffix(\".example.com\"))/[]",
                "None/api/v1[]",
                "None/api[\"GET\"]",
                "None/api[]",
            ]
        );
    }

    #[test]
    fn prefixes_are_normalized_once() {
        let r = route(&[], "/%61dmin//x%c3%a9", &[]);
        assert_eq!(r.prefix(), "/admin/x%C3%A9");
        assert!(r.matches(false, None, "/admin/x%C3%A9/1", "GET"));
        // A prefix without a normal form matches no normal path.
        for bad in ["/a;b", "/a/../b", "/a%2Fb"] {
            let r = route(&[], bad, &[]);
            assert_eq!(r.prefix(), bad);
            for p in ["/a", "/b", "/a/b", "/"] {
                assert!(!r.matches(false, None, p, "GET"), "{bad} {p}");
            }
        }
    }

    #[test]
    fn case_sensitive_unless_the_route_says_otherwise() {
        let sensitive = route(&[], "/admin", &[]);
        assert_eq!(sensitive.path_match(false, None, "/admin/x", "GET"), PathMatch::Yes);
        assert_eq!(
            sensitive.path_match(false, None, "/Admin/x", "GET"),
            PathMatch::OnlyIgnoringCase
        );
        assert_eq!(
            sensitive.path_match(false, None, "/ADMIN", "GET"),
            PathMatch::OnlyIgnoringCase
        );
        assert_eq!(sensitive.path_match(false, None, "/Adminx", "GET"), PathMatch::No);
        assert!(!sensitive.matches(false, None, "/Admin/x", "GET"));
        let mut insensitive = route(&[], "/admin", &["GET"]);
        insensitive.case_insensitive = true;
        assert_eq!(insensitive.path_match(false, None, "/Admin/x", "GET"), PathMatch::Yes);
        assert_eq!(insensitive.path_match(false, None, "/aDMIN", "GET"), PathMatch::Yes);
        assert_eq!(
            insensitive.path_match(false, None, "/Admin/x", "POST"),
            PathMatch::OtherMethod
        );
        assert_eq!(insensitive.path_match(false, None, "/Admins", "GET"), PathMatch::No);
        // Other criteria still apply to a case variant.
        let bound = route(&["api.example.com"], "/admin", &["GET"]);
        assert_eq!(
            bound.path_match(false, Some("x.example.com"), "/Admin", "GET"),
            PathMatch::No
        );
        assert_eq!(
            bound.path_match(false, Some("api.example.com"), "/Admin", "POST"),
            PathMatch::No
        );
        assert_eq!(
            bound.path_match(true, Some("api.example.com"), "/Admin", "GET"),
            PathMatch::No
        );
        // No letters, no case variant to look for.
        let digits = route(&[], "/2024/", &[]);
        assert!(!digits.has_letters);
        assert_eq!(digits.path_match(false, None, "/2024/x", "GET"), PathMatch::Yes);
        assert_eq!(digits.path_match(false, None, "/2025/x", "GET"), PathMatch::No);
    }

    #[test]
    fn prefixes_ignoring_case_on_segments() {
        assert!(prefix_matches_ignoring_case("/api", "/API"));
        assert!(prefix_matches_ignoring_case("/api", "/Api/v1"));
        assert!(prefix_matches_ignoring_case("/api/", "/API/v1"));
        assert!(!prefix_matches_ignoring_case("/api", "/APIx"));
        assert!(!prefix_matches_ignoring_case("/api", "/AP"));
        assert!(!prefix_matches_ignoring_case("/api/", "/API"));
        assert!(prefix_matches_ignoring_case("/", "/anything"));
    }

    #[test]
    fn hosts_normalize() {
        assert_eq!(normal_host("API.Example.com."), "api.example.com");
        assert!(matches!(normal_host("api"), std::borrow::Cow::Borrowed(_)));
    }
}
