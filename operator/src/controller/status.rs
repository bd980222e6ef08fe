//! Status that tells the truth: the conditions, observed generation and route list the
//! controller wants on each object, compared with what is there so that a patch is sent
//! only when something other than a timestamp would change.
//!
//! Owns [`DesiredStatus`] (with a route's [`Rollout`] numbers), the pure functions that
//! compute it from the compiler's verdicts, and the merge patch that writes it (built here,
//! sent by `write`). Pure, no I/O. Layer 1 of the list in `controller`: may use layer 0;
//! uses none (only `crate::compile`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use portcullis_api::ApiRouteStatus;
use serde_json::{Value, json};

use crate::compile::{Verdict, reason as compile_reason};

/// Condition types.
pub mod condition {
    /// The spec is valid (with everything it references).
    pub const ACCEPTED: &str = "Accepted";
    /// The object takes effect: a route is published to the sidecars that serve it, a profile
    /// is valid.
    pub const READY: &str = "Ready";
}

/// Reasons of the `Ready` condition (`Accepted` uses the compiler's reasons).
pub mod reason {
    /// The route is in the configuration of every group of pods it selects.
    pub const PUBLISHED: &str = "Published";
    /// No pod labelled `portcullis.dev/inject=true` matches the route's selector.
    pub const NO_WORKLOADS: &str = "NoWorkloads";
    /// The object is not accepted (see the `Accepted` condition).
    pub const NOT_ACCEPTED: &str = "NotAccepted";
    /// The profile is valid.
    pub const VALID: &str = "Valid";
    /// Writing the configuration of a group that serves the route failed (retried).
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// A workload the route selects shares its configuration group name with another
    /// workload (different labels, same hash): neither is served.
    pub const GROUP_COLLISION: &str = "GroupCollision";
}

/// One wanted condition, before timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// A route's rollout, as its status reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    /// The generation of the group serving the route (several groups: their distinct
    /// generations, sorted, joined by `,`); `None` when no group serves it.
    pub config_generation: Option<String>,
    /// Running selected pods whose sidecar reports its group's generation.
    pub current: i32,
    /// Running selected pods (in the groups whose configuration includes the route).
    pub total: i32,
}

impl Rollout {
    /// Whether a route's status already says this.
    pub fn is_current(&self, have: &ApiRouteStatus) -> bool {
        have.config_generation == self.config_generation
            && have.sidecars_current == Some(self.current)
            && have.sidecars_total == Some(self.total)
    }

    /// Adds the fields to a status merge patch (`status` object).
    pub fn patch_into(&self, status: &mut serde_json::Value) {
        status["configGeneration"] = serde_json::json!(self.config_generation);
        status["sidecarsCurrent"] = serde_json::json!(self.current);
        status["sidecarsTotal"] = serde_json::json!(self.total);
    }
}

/// The status the controller wants on one object (the fields it owns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredStatus {
    pub observed_generation: Option<i64>,
    pub conditions: Vec<Wanted>,
    /// Profiles only: the routes that use the profile.
    pub routes: Option<Vec<String>>,
    /// Routes only: `configGeneration`, `sidecarsCurrent`, `sidecarsTotal` (filled by the
    /// reconciler from what the sidecars report, see `rollout::fill`).
    pub rollout: Option<Rollout>,
}

impl DesiredStatus {
    /// The rejection this status reports, if any: `(reason, message)`.
    pub fn rejection(&self) -> Option<(&str, &str)> {
        self.conditions
            .iter()
            .find(|c| c.type_ == condition::ACCEPTED && !c.status)
            .map(|c| (c.reason.as_str(), c.message.as_str()))
    }
}

fn accepted(verdict: &Verdict) -> Wanted {
    match verdict {
        Verdict::Accepted => Wanted {
            type_: condition::ACCEPTED,
            status: true,
            reason: compile_reason::ACCEPTED.to_owned(),
            message: "the spec is valid".to_owned(),
        },
        Verdict::Rejected { reason, message, .. } => Wanted {
            type_: condition::ACCEPTED,
            status: false,
            reason: (*reason).to_owned(),
            message: message.clone(),
        },
    }
}

/// A route's status: `Accepted` from the verdict, `Ready` when it is published to the
/// `groups` configuration groups that serve its `pods` selected pods.
pub fn route_status(verdict: &Verdict, generation: Option<i64>, groups: usize, pods: usize) -> DesiredStatus {
    let ready = match verdict {
        Verdict::Rejected { message, .. } => Wanted {
            type_: condition::READY,
            status: false,
            reason: reason::NOT_ACCEPTED.to_owned(),
            message: message.clone(),
        },
        Verdict::Accepted if groups == 0 => Wanted {
            type_: condition::READY,
            status: false,
            reason: reason::NO_WORKLOADS.to_owned(),
            message: "no pod labelled portcullis.dev/inject=true matches spec.workloadSelector".to_owned(),
        },
        Verdict::Accepted => Wanted {
            type_: condition::READY,
            status: true,
            reason: reason::PUBLISHED.to_owned(),
            message: format!("published to {groups} configuration group(s) serving {pods} pod(s)"),
        },
    };
    DesiredStatus {
        observed_generation: generation,
        conditions: vec![accepted(verdict), ready],
        routes: None,
        rollout: None,
    }
}

/// A profile's status: `Accepted` and `Ready` from the verdict, and the routes using it.
pub fn profile_status(verdict: &Verdict, generation: Option<i64>, routes: &[String]) -> DesiredStatus {
    let ready = match verdict {
        Verdict::Accepted => Wanted {
            type_: condition::READY,
            status: true,
            reason: reason::VALID.to_owned(),
            message: format!("used by {} route(s)", routes.len()),
        },
        Verdict::Rejected { message, .. } => Wanted {
            type_: condition::READY,
            status: false,
            reason: reason::NOT_ACCEPTED.to_owned(),
            message: message.clone(),
        },
    };
    DesiredStatus {
        observed_generation: generation,
        conditions: vec![accepted(verdict), ready],
        routes: Some(routes.to_vec()),
        rollout: None,
    }
}

/// Turns a route's `Ready=True` into `False` with [`reason::APPLY_FAILED`]: the configuration
/// of a group serving it could not be written.
pub fn not_published(desired: &mut DesiredStatus, message: &str) {
    if let Some(ready) = desired
        .conditions
        .iter_mut()
        .find(|c| c.type_ == condition::READY && c.status)
    {
        ready.status = false;
        ready.reason = reason::APPLY_FAILED.to_owned();
        ready.message = message.to_owned();
    }
}

/// Turns an accepted route's `Ready` into `False` with [`reason::GROUP_COLLISION`]: a
/// workload it selects shares its group name with another workload, so that group serves
/// nothing.
pub fn group_collision(desired: &mut DesiredStatus, message: &str) {
    if desired.rejection().is_some() {
        return;
    }
    if let Some(ready) = desired.conditions.iter_mut().find(|c| c.type_ == condition::READY) {
        ready.status = false;
        ready.reason = reason::GROUP_COLLISION.to_owned();
        ready.message = message.to_owned();
    }
}

fn status_str(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

fn same_condition(have: &Condition, want: &Wanted, generation: Option<i64>) -> bool {
    have.type_ == want.type_
        && have.status == status_str(want.status)
        && have.reason == want.reason
        && have.message == want.message
        && have.observed_generation == generation
}

/// Whether the object's status already says what `desired` says (timestamps aside).
pub fn is_current(
    observed_generation: Option<i64>,
    conditions: &[Condition],
    routes: Option<&[String]>,
    desired: &DesiredStatus,
) -> bool {
    observed_generation == desired.observed_generation
        && desired.conditions.iter().all(|want| {
            conditions
                .iter()
                .any(|have| same_condition(have, want, desired.observed_generation))
        })
        && desired
            .routes
            .as_deref()
            .is_none_or(|want| routes.unwrap_or_default() == want)
}

/// The conditions to write: each keeps its `lastTransitionTime` unless its status flips.
/// Conditions of other types are kept as they are.
pub fn conditions(desired: &DesiredStatus, existing: &[Condition], now: &Time) -> Vec<Condition> {
    let mut out: Vec<Condition> = existing
        .iter()
        .filter(|c| desired.conditions.iter().all(|w| w.type_ != c.type_))
        .cloned()
        .collect();
    for want in &desired.conditions {
        let previous = existing.iter().find(|c| c.type_ == want.type_);
        let since = match previous {
            Some(p) if p.status == status_str(want.status) => p.last_transition_time.clone(),
            _ => now.clone(),
        };
        out.push(Condition {
            type_: want.type_.to_owned(),
            status: status_str(want.status).to_owned(),
            reason: want.reason.clone(),
            message: want.message.clone(),
            observed_generation: desired.observed_generation,
            last_transition_time: since,
        });
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// The merge patch that writes `desired` (and only the fields the controller owns).
pub fn patch(desired: &DesiredStatus, existing: &[Condition], now: &Time) -> Value {
    let mut status = json!({
        "observedGeneration": desired.observed_generation,
        "conditions": conditions(desired, existing, now),
    });
    if let Some(routes) = &desired.routes {
        // An empty list removes the field (the CRD omits empty lists).
        status["routes"] = if routes.is_empty() { Value::Null } else { json!(routes) };
    }
    if let Some(rollout) = &desired.rollout {
        rollout.patch_into(&mut status);
    }
    json!({ "status": status })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn rejected() -> Verdict {
        Verdict::Rejected {
            reason: compile_reason::PROFILE_NOT_FOUND,
            field: "spec.profiles[0].name".into(),
            message: "spec.profiles[0].name: SecurityProfile \"x\" not found".into(),
        }
    }

    #[test]
    fn a_rejected_route_says_why_in_both_conditions() {
        let s = route_status(&rejected(), Some(3), 0, 0);
        assert_eq!(s.rejection().unwrap().0, "ProfileNotFound");
        let c = conditions(&s, &[], &time("2026-01-01T00:00:00Z"));
        assert_eq!(c[0].type_, "Accepted");
        assert_eq!(c[0].status, "False");
        assert!(c[0].message.starts_with("spec.profiles[0].name"));
        assert_eq!((c[1].type_.as_str(), c[1].reason.as_str()), ("Ready", "NotAccepted"));
        assert_eq!(c[0].observed_generation, Some(3));
    }

    #[test]
    fn ready_needs_selected_pods() {
        let none = route_status(&Verdict::Accepted, Some(1), 0, 0);
        assert_eq!(none.conditions[1].reason, "NoWorkloads");
        let some = route_status(&Verdict::Accepted, Some(1), 2, 5);
        assert!(some.conditions[1].status);
        assert!(some.rejection().is_none());
    }

    #[test]
    fn a_failed_write_makes_a_published_route_not_ready() {
        let mut s = route_status(&Verdict::Accepted, Some(1), 1, 1);
        not_published(&mut s, "writing the configuration of group g: 500");
        assert!(!s.conditions[1].status);
        assert_eq!(s.conditions[1].reason, "ApplyFailed");
        assert!(s.conditions[0].status, "still accepted");
        // A rejected route stays as it is.
        let mut r = route_status(&rejected(), Some(1), 0, 0);
        not_published(&mut r, "x");
        assert_eq!(r.conditions[1].reason, "NotAccepted");
    }

    #[test]
    fn only_timestamps_changing_is_no_change() {
        let desired = profile_status(&Verdict::Accepted, Some(2), &["a".into()]);
        let written = conditions(&desired, &[], &time("2026-01-01T00:00:00Z"));
        assert!(is_current(Some(2), &written, Some(&["a".into()]), &desired));
        assert!(!is_current(Some(1), &written, Some(&["a".into()]), &desired));
        assert!(!is_current(Some(2), &written, Some(&[]), &desired));
        let rejected = profile_status(&rejected(), Some(2), &["a".into()]);
        assert!(!is_current(Some(2), &written, Some(&["a".into()]), &rejected));
    }

    #[test]
    fn transition_times_move_only_on_flips() {
        let t0 = time("2026-01-01T00:00:00Z");
        let t1 = time("2026-01-02T00:00:00Z");
        let first = conditions(&route_status(&Verdict::Accepted, Some(1), 1, 1), &[], &t0);
        // Same statuses, new message: times kept.
        let again = conditions(&route_status(&Verdict::Accepted, Some(2), 2, 2), &first, &t1);
        assert!(again.iter().all(|c| c.last_transition_time == t0));
        // Accepted flips to False: its time moves; Ready flips too.
        let flipped = conditions(&route_status(&rejected(), Some(3), 2, 2), &again, &t1);
        assert!(flipped.iter().all(|c| c.last_transition_time == t1));
    }

    #[test]
    fn patch_clears_an_empty_route_list_and_keeps_foreign_conditions() {
        let foreign = Condition {
            type_: "CertificateIssued".into(),
            status: "True".into(),
            reason: "Issued".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: time("2026-01-01T00:00:00Z"),
        };
        let p = patch(
            &profile_status(&Verdict::Accepted, Some(1), &[]),
            std::slice::from_ref(&foreign),
            &time("2026-01-01T00:00:00Z"),
        );
        assert!(p["status"]["routes"].is_null() && p["status"].as_object().unwrap().contains_key("routes"));
        assert_eq!(p["status"]["conditions"].as_array().unwrap().len(), 3);
    }
}
