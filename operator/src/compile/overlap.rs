//! Routes of different owners that share paths on one workload.
//!
//! An ApiRoute selects pods by label, so anyone who may create ApiRoutes in a namespace could
//! otherwise add a longer path prefix under another team's route on that team's workload
//! (the longest prefix wins) and serve those paths with profiles of their choosing — or an
//! equal prefix, or a shorter one that exposes the rest of the app. The rule: when two routes
//! **overlap** —
//!
//! - their workload selectors could select the same pod (not provably disjoint),
//! - they serve the same listener (both `egress`, or neither),
//! - one path prefix contains the other on segment boundaries (compared in the sidecar's
//!   normal form, without regard to case when either route ignores case),
//! - and their hosts overlap (no hosts = any host; `*.` wildcards match one or more labels)
//!   or they forward to the same local port (the app ignores the Host header, so another
//!   host name reaches the same paths of the same app) —
//!
//! and their **owners** differ, the newer route (by `metadata.creationTimestamp`, then name;
//! without a timestamp, as `render` reads files, by name) is refused with `RouteOverlap`,
//! unless the older one allows it. The owner of a route is its label [`OWNER_LABEL`]; a route
//! without it is its own owner (it shares paths with no other route by default). The older
//! route allows newer ones by listing their names (or `*`) in its annotation
//! [`ALLOW_OVERLAP_ANNOTATION`].
//!
//! The rule looks only at the routes' own specs and metadata, never at their other verdicts
//! or at the pods that exist, so the controller, the validating webhook and `render` decide
//! alike, and a route is refused (or not) whatever order objects are created in. Labels are
//! claims anyone who writes a route can make: the validating webhook accepts a shared owner
//! only from a user who may update the routes it would share paths with
//! ([`shared_owner_routes`]).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use portcullis_api::ApiRoute;

use super::{Problem, reason};

/// Label naming a route's owner: routes with the same owner may share paths.
pub const OWNER_LABEL: &str = "portcullis.dev/owner";
/// Annotation on a route listing newer routes (comma-separated names, or `*`) that may share
/// its paths although their owner differs.
pub const ALLOW_OVERLAP_ANNOTATION: &str = "portcullis.dev/allow-overlap";

/// The routes refused for overlapping an older route of another owner, by name, each with
/// the problem naming the first such older route.
pub(crate) fn refusals(routes: &[&ApiRoute]) -> BTreeMap<String, Problem> {
    let ordered: Vec<Prepared> = by_age(routes).into_iter().map(Prepared::new).collect();
    let mut out = BTreeMap::new();
    for (i, newer) in ordered.iter().enumerate() {
        let Some(older) = ordered[..i].iter().find(|older| {
            overlap(older, newer) && !owner_shared(older.route, newer.route) && !allows(older.route, newer.route)
        }) else {
            continue;
        };
        out.insert(name(newer.route).to_owned(), problem(older.route, newer.route));
    }
    out
}

/// A route with its path prefix in normal form, as [`overlap`] compares it.
struct Prepared<'a> {
    route: &'a ApiRoute,
    path: String,
    /// `path` in lower case (compared when either route ignores case).
    folded: String,
}

impl<'a> Prepared<'a> {
    fn new(route: &'a ApiRoute) -> Self {
        let path = normal(&route.spec.path_prefix);
        Self {
            route,
            folded: path.to_ascii_lowercase(),
            path,
        }
    }
}

/// The routes among `others` that an update of `route` (`old`: its stored version) would
/// newly overlap while being the older of the two, with another owner and without allowing
/// them: the compiler would refuse those routes, so the update would take their paths over.
/// For the validating webhook, which refuses such an update (the compiler, which knows no
/// history, can only refuse the newer route). A route's own consent (its annotation) or
/// owner label changing is not a new overlap: withdrawing consent is the older owner's right.
pub fn taken_over(route: &ApiRoute, old: Option<&ApiRoute>, others: &[ApiRoute]) -> Vec<String> {
    let (ordered, at) = by_age_with(route, others);
    let (new, old) = (Prepared::new(route), old.map(Prepared::new));
    let mut out: Vec<String> = ordered[at + 1..]
        .iter()
        .filter(|newer| {
            let newer_prepared = Prepared::new(newer);
            overlap(&new, &newer_prepared)
                && !old.as_ref().is_some_and(|old| overlap(old, &newer_prepared))
                && !owner_shared(route, newer)
                && !allows(route, newer)
        })
        .map(|r| name(r).to_owned())
        .collect();
    out.sort();
    out
}

/// The routes among `others` whose paths `route` may share only because both carry the same
/// [`OWNER_LABEL`] (they overlap, and no [`ALLOW_OVERLAP_ANNOTATION`] allows it): for the
/// validating webhook, which accepts the claim only from a user who may update those routes.
pub fn shared_owner_routes(route: &ApiRoute, others: &[ApiRoute]) -> Vec<String> {
    let (ordered, at) = by_age_with(route, others);
    let mut out: Vec<String> = ordered
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != at)
        .filter(|(i, other)| {
            let (older, newer) = if *i < at { (**other, route) } else { (route, **other) };
            overlap(&Prepared::new(older), &Prepared::new(newer)) && owner_shared(older, newer) && !allows(older, newer)
        })
        .map(|(_, other)| name(other).to_owned())
        .collect();
    out.sort();
    out
}

/// `route` among `others` (any other version of it left out), oldest first, and its place.
fn by_age_with<'a>(route: &'a ApiRoute, others: &'a [ApiRoute]) -> (Vec<&'a ApiRoute>, usize) {
    let mut all: Vec<&ApiRoute> = others.iter().filter(|o| name(o) != name(route)).collect();
    all.push(route);
    let ordered = by_age(&all);
    let at = ordered
        .iter()
        .position(|r| std::ptr::eq(*r, route))
        .expect("the route is in the list");
    (ordered, at)
}

fn name(route: &ApiRoute) -> &str {
    route.metadata.name.as_deref().unwrap_or_default()
}

/// Oldest first: by creation time (none: newest), then by name.
fn by_age<'a>(routes: &[&'a ApiRoute]) -> Vec<&'a ApiRoute> {
    let mut ordered = routes.to_vec();
    ordered.sort_by(|a, b| {
        let created = |r: &ApiRoute| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        match (created(a), created(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
        .then_with(|| name(a).cmp(name(b)))
    });
    ordered
}

fn owner(route: &ApiRoute) -> Option<&str> {
    route
        .metadata
        .labels
        .as_ref()?
        .get(OWNER_LABEL)
        .map(String::as_str)
        .filter(|o| !o.is_empty())
}

fn owner_shared(a: &ApiRoute, b: &ApiRoute) -> bool {
    owner(a).is_some_and(|o| owner(b) == Some(o))
}

/// Whether `older` lists `newer` in its [`ALLOW_OVERLAP_ANNOTATION`].
fn allows(older: &ApiRoute, newer: &ApiRoute) -> bool {
    older
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ALLOW_OVERLAP_ANNOTATION))
        .is_some_and(|list| list.split(',').map(str::trim).any(|n| n == "*" || n == name(newer)))
}

fn problem(older: &ApiRoute, newer: &ApiRoute) -> Problem {
    let (older_name, newer_name) = (name(older), name(newer));
    let hosts = |r: &ApiRoute| match r.spec.hosts.as_slice() {
        [] => "any host".to_owned(),
        hosts => hosts.join(", "),
    };
    Problem::new(
        reason::ROUTE_OVERLAP,
        "spec.pathPrefix",
        format!(
            "{:?} ({}) overlaps ApiRoute {older_name:?} ({:?}, {}), which is older, may select the same \
             pods and has another owner ({}); to share its paths, give both routes the same label \
             {OWNER_LABEL}, or annotate ApiRoute {older_name:?} with {ALLOW_OVERLAP_ANNOTATION}: \"{newer_name}\"",
            newer.spec.path_prefix,
            hosts(newer),
            older.spec.path_prefix,
            hosts(older),
            owner(older).map_or_else(|| "none".to_owned(), |o| format!("{o:?}")),
        ),
    )
}

/// Whether two routes compete for the same requests or the same app's paths (see the module
/// documentation); owners aside. Cheapest tests first.
fn overlap(a: &Prepared, b: &Prepared) -> bool {
    let (x, y) = (&a.route.spec, &b.route.spec);
    let paths = if x.case_insensitive || y.case_insensitive {
        prefixes_overlap(&a.folded, &b.folded)
    } else {
        prefixes_overlap(&a.path, &b.path)
    };
    x.egress == y.egress
        && paths
        && (hosts_overlap(&x.hosts, &y.hosts) || x.backend.port.is_some_and(|p| y.backend.port == Some(p)))
        && selectors_may_intersect(&x.workload_selector, &y.workload_selector)
}

/// A path prefix in the sidecar's normal form, as far as comparing prefixes needs: escapes of
/// unreserved characters decoded, other escapes upper-cased, runs of `/` merged, a trailing
/// `/` dropped (but for the root).
fn normal(prefix: &str) -> String {
    let bytes = prefix.as_bytes();
    let mut out = String::with_capacity(prefix.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |j: usize| bytes.get(j).and_then(|b| (*b as char).to_digit(16));
        let c = match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                i += 3;
                let decoded = (hi * 16 + lo) as u8;
                if decoded.is_ascii_alphanumeric() || b"-._~".contains(&decoded) {
                    decoded as char
                } else {
                    out.push_str(&format!("%{decoded:02X}"));
                    continue;
                }
            }
            _ => {
                i += 1;
                b as char
            }
        };
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    if out.len() > 1 && out.ends_with('/') {
        out.pop();
    }
    out
}

/// Whether one prefix contains the other on segment boundaries (`/api` and `/api/v1` do,
/// `/api` and `/apix` do not).
#[cfg(test)]
fn paths_overlap(a: &str, b: &str, fold_case: bool) -> bool {
    let fold = |p: String| if fold_case { p.to_ascii_lowercase() } else { p };
    prefixes_overlap(&fold(normal(a)), &fold(normal(b)))
}

/// Whether one prefix (in normal form) contains the other on segment boundaries.
fn prefixes_overlap(a: &str, b: &str) -> bool {
    let contains = |short: &str, long: &str| {
        long == short || short == "/" || long.strip_prefix(short).is_some_and(|rest| rest.starts_with('/'))
    };
    contains(a, b) || contains(b, a)
}

/// Whether some Host could match a host of each list (an empty list matches any host).
fn hosts_overlap(a: &[String], b: &[String]) -> bool {
    if a.is_empty() || b.is_empty() {
        return true;
    }
    a.iter().any(|x| b.iter().any(|y| host_pair_overlaps(x, y)))
}

fn host_pair_overlaps(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    // `*.example.com` matches `x.example.com`, `x.y.example.com`, ...
    let covers = |wild: &str, other: &str| {
        wild.strip_prefix('*')
            .is_some_and(|suffix| suffix.starts_with('.') && other.ends_with(suffix) && other.len() > suffix.len())
    };
    a == b || covers(&a, &b) || covers(&b, &a)
}

/// What one selector (or two, combined) requires of one label key.
#[derive(Clone, Debug)]
struct KeyConstraint {
    /// A pod without the label can match.
    may_be_absent: bool,
    /// When present, the value must be one of these (`None`: any value).
    allowed: Option<BTreeSet<String>>,
    /// When present, the value must be none of these.
    excluded: BTreeSet<String>,
}

impl KeyConstraint {
    fn any() -> Self {
        Self {
            may_be_absent: true,
            allowed: None,
            excluded: BTreeSet::new(),
        }
    }

    fn and(&mut self, other: &KeyConstraint) {
        self.may_be_absent &= other.may_be_absent;
        self.allowed = match (self.allowed.take(), &other.allowed) {
            (None, o) => o.clone(),
            (Some(s), None) => Some(s),
            (Some(s), Some(o)) => Some(s.intersection(o).cloned().collect()),
        };
        self.excluded.extend(other.excluded.iter().cloned());
    }

    fn satisfiable(&self) -> bool {
        // Label values are unbounded: only a finite allowed set can run out.
        self.may_be_absent
            || self
                .allowed
                .as_ref()
                .is_none_or(|allowed| allowed.iter().any(|v| !self.excluded.contains(v)))
    }
}

/// Each key's constraint under a selector; `None` when the selector selects nothing (an
/// unknown operator, as in [`super::selector_matches`]).
fn constraints(selector: &LabelSelector) -> Option<BTreeMap<String, KeyConstraint>> {
    let mut out: BTreeMap<String, KeyConstraint> = BTreeMap::new();
    let mut add = |key: &str, c: KeyConstraint| {
        out.entry(key.to_owned()).or_insert_with(KeyConstraint::any).and(&c);
    };
    for (k, v) in selector.match_labels.iter().flatten() {
        add(
            k,
            KeyConstraint {
                may_be_absent: false,
                allowed: Some(BTreeSet::from([v.clone()])),
                excluded: BTreeSet::new(),
            },
        );
    }
    for req in selector.match_expressions.iter().flatten() {
        let values: BTreeSet<String> = req.values.iter().flatten().cloned().collect();
        let c = match req.operator.as_str() {
            "In" => KeyConstraint {
                may_be_absent: false,
                allowed: Some(values),
                excluded: BTreeSet::new(),
            },
            "NotIn" => KeyConstraint {
                may_be_absent: true,
                allowed: None,
                excluded: values,
            },
            "Exists" => KeyConstraint {
                may_be_absent: false,
                allowed: None,
                excluded: BTreeSet::new(),
            },
            "DoesNotExist" => KeyConstraint {
                may_be_absent: true,
                allowed: Some(BTreeSet::new()),
                excluded: BTreeSet::new(),
            },
            _ => return None,
        };
        add(&req.key, c);
    }
    Some(out)
}

/// Whether some set of labels satisfies both selectors (false only when provably not).
fn selectors_may_intersect(a: &LabelSelector, b: &LabelSelector) -> bool {
    let (Some(mut a), Some(b)) = (constraints(a), constraints(b)) else {
        return false;
    };
    for (key, c) in b {
        a.entry(key).or_insert_with(KeyConstraint::any).and(&c);
    }
    a.values().all(KeyConstraint::satisfiable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(yaml: &str) -> LabelSelector {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn selectors_intersect_unless_provably_disjoint() {
        let cases = [
            ("{matchLabels: {app: a}}", "{matchLabels: {app: a}}", true),
            ("{matchLabels: {app: a}}", "{matchLabels: {app: b}}", false),
            ("{matchLabels: {app: a}}", "{matchLabels: {tier: web}}", true),
            ("{}", "{matchLabels: {app: b}}", true),
            (
                "{matchLabels: {app: a}}",
                "{matchExpressions: [{key: app, operator: In, values: [b, c]}]}",
                false,
            ),
            (
                "{matchLabels: {app: a}}",
                "{matchExpressions: [{key: app, operator: In, values: [a, c]}]}",
                true,
            ),
            (
                "{matchLabels: {app: a}}",
                "{matchExpressions: [{key: app, operator: NotIn, values: [a]}]}",
                false,
            ),
            (
                "{matchLabels: {app: a}}",
                "{matchExpressions: [{key: app, operator: DoesNotExist}]}",
                false,
            ),
            (
                "{matchExpressions: [{key: app, operator: NotIn, values: [a]}]}",
                "{matchExpressions: [{key: app, operator: DoesNotExist}]}",
                true,
            ),
            (
                "{matchExpressions: [{key: app, operator: Exists}]}",
                "{matchExpressions: [{key: app, operator: NotIn, values: [a]}]}",
                true,
            ),
            ("{matchExpressions: [{key: app, operator: Sometimes}]}", "{}", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(selectors_may_intersect(&selector(a), &selector(b)), want, "{a} / {b}");
            assert_eq!(selectors_may_intersect(&selector(b), &selector(a)), want, "{b} / {a}");
        }
    }

    #[test]
    fn paths_overlap_on_segment_boundaries_in_normal_form() {
        let cases = [
            ("/", "/anything", false, true),
            ("/api", "/api", false, true),
            ("/api", "/api/v1", false, true),
            ("/api/", "/api/v1", false, true),
            ("/api", "/apix", false, false),
            ("/api", "/API/v1", false, false),
            ("/api", "/API/v1", true, true),
            ("/fin%61nce", "/finance/pay", false, true),
            ("//finance", "/finance/pay", false, true),
            ("/a/b", "/a/c", false, false),
        ];
        for (a, b, fold, want) in cases {
            assert_eq!(paths_overlap(a, b, fold), want, "{a} / {b}");
            assert_eq!(paths_overlap(b, a, fold), want, "{b} / {a}");
        }
    }

    #[test]
    fn hosts_overlap_when_some_host_matches_both() {
        let h = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(hosts_overlap(&h(&[]), &h(&["a.example.com"])));
        assert!(hosts_overlap(
            &h(&["a.example.com"]),
            &h(&["b.example.com", "a.example.com"])
        ));
        assert!(!hosts_overlap(&h(&["a.example.com"]), &h(&["b.example.com"])));
        assert!(hosts_overlap(&h(&["*.example.com"]), &h(&["a.b.example.com"])));
        assert!(hosts_overlap(&h(&["*.example.com"]), &h(&["*.b.example.com"])));
        assert!(!hosts_overlap(&h(&["*.example.com"]), &h(&["example.com"])));
        assert!(!hosts_overlap(&h(&["*.example.com"]), &h(&["*.example.org"])));
    }
}
