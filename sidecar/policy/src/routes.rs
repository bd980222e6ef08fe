//! Route matching: host (exact or `*.` wildcard), longest segment-aware path prefix,
//! methods, listener.
//!
//! Precedence follows the Gateway API: the most specific host first (exact, then the longest
//! wildcard, then any host), then the longest path prefix, then routes that restrict
//! methods, then by name. Routes are sorted once, at compile time; a match is a scan that
//! stops at the first hit.

use portcullis_config::Route;

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
    prefix: Box<str>,
    methods: Vec<Box<str>>,
    egress: bool,
}

impl Matcher {
    /// The matcher of `route`.
    pub fn new(route: &Route) -> Self {
        Self {
            hosts: route.hosts.iter().map(|h| Host::parse(h)).collect(),
            prefix: route.path_prefix.as_str().into(),
            methods: route.methods.iter().map(|m| m.to_ascii_uppercase().into()).collect(),
            egress: route.egress,
        }
    }

    /// The most specific host pattern that matches `host`, as a rank; `None` when none does.
    fn host_rank(&self, host: Option<&str>) -> Option<(u8, usize)> {
        if self.hosts.is_empty() {
            return Some((0, 0));
        }
        let host = host?;
        self.hosts.iter().filter(|h| h.matches(host)).map(Host::rank).max()
    }

    /// Whether a request matches.
    pub fn matches(&self, egress: bool, host: Option<&str>, path: &str, method: &str) -> bool {
        self.egress == egress
            && prefix_matches(&self.prefix, path)
            && (self.methods.is_empty() || self.methods.iter().any(|m| **m == *method))
            && self.host_rank(host).is_some()
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
/// `/api/v1`, never `/apix`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

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

/// Whether `path` could reach the backend as another path than the one matched: dot
/// segments (literal or percent-encoded) and backslashes. Such requests are refused rather
/// than guessed at.
pub fn is_ambiguous_path(path: &str) -> bool {
    if !path.starts_with('/') || path.contains('\\') || has_dot_segment(path) {
        return true;
    }
    if path.contains('%') {
        let decoded = path
            .to_ascii_lowercase()
            .replace("%2e", ".")
            .replace("%2f", "/")
            .replace("%5c", "\\");
        return decoded.contains('\\') || has_dot_segment(&decoded);
    }
    false
}

fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "." || s == "..")
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
        })
    }

    #[test]
    fn prefixes_match_on_segments() {
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/"));
        assert!(prefix_matches("/api", "/api/v1"));
        assert!(!prefix_matches("/api", "/apix"));
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
    fn ambiguous_paths() {
        for p in [
            "/public/../admin",
            "/public/./x",
            "/a/%2e%2e/b",
            "/a/%2E./b",
            "/a/..",
            "/a\\b",
            "/a/%5c..",
            "/a%2f..%2fb",
            "*",
        ] {
            assert!(is_ambiguous_path(p), "{p}");
        }
        for p in ["/", "/a/b", "/a/..b/c", "/a/b.c", "/a%20b", "/files/group%2Fproject"] {
            assert!(!is_ambiguous_path(p), "{p}");
        }
    }

    #[test]
    fn hosts_normalize() {
        assert_eq!(normal_host("API.Example.com."), "api.example.com");
        assert!(matches!(normal_host("api"), std::borrow::Cow::Borrowed(_)));
    }
}
