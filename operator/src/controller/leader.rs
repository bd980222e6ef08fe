//! Leader election on a `coordination.k8s.io/v1` Lease, so two replicas are safe: only the
//! holder reconciles. The holder renews the Lease every `renew_every`; another replica takes
//! it over once `renewTime + leaseDurationSeconds` has passed without a renewal. A holder
//! that finds another holder, or cannot renew within two thirds of the lease duration, stops
//! reconciling (the process exits 1 and is restarted as a standby). On a graceful shutdown the holder releases the Lease so a standby
//! takes over at once.
//!
//! The decision is a pure function ([`decide`]); every write carries the resourceVersion it
//! was decided on, so two replicas racing for one Lease cannot both win.
//!
//! I/O (the Lease). Layer 5 of the list in `controller`: may use layers 0–4, uses none;
//! `runtime` drives it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;

/// Where the Lease is and who this replica is.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long a Lease lasts without renewal.
    pub duration: Duration,
    /// How often the holder renews and a standby retries.
    pub renew_every: Duration,
}

/// What to do with the Lease as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it, held by us.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    TakeOver,
    /// Another replica holds it.
    Wait,
}

/// Decides from the Lease's spec (`None`: no Lease) at `now`.
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else { return Decision::Create };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == identity => Decision::Renew,
        None | Some("") => Decision::TakeOver,
        Some(_) => {
            let duration = SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(15).into());
            let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map(|t| t.0);
            match renewed {
                Some(at) if at + duration > now => Decision::Wait,
                _ => Decision::TakeOver,
            }
        }
    }
}

/// The spec a write for `decision` sets.
fn held_spec(previous: Option<&LeaseSpec>, cfg: &LeaseConfig, decision: Decision, now: Timestamp) -> LeaseSpec {
    let previous = previous.cloned().unwrap_or_default();
    let transitions = previous.lease_transitions.unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(i32::try_from(cfg.duration.as_secs().max(1)).unwrap_or(i32::MAX)),
        acquire_time: match decision {
            Decision::Renew => previous.acquire_time.clone().or(Some(MicroTime(now))),
            _ => Some(MicroTime(now)),
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(match decision {
            Decision::TakeOver => transitions + 1,
            _ => transitions,
        }),
        ..previous
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// One attempt to acquire or renew. `Ok(true)`: we hold the Lease now.
pub async fn try_hold(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let current = api.get_opt(&cfg.name).await?;
    let decision = decide(current.as_ref().and_then(|l| l.spec.as_ref()), &cfg.identity, now);
    let result = match (decision, current) {
        (Decision::Wait, _) => return Ok(false),
        (Decision::Create, _) | (_, None) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(held_spec(None, cfg, Decision::Create, now)),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        (decision, Some(mut lease)) => {
            lease.spec = Some(held_spec(lease.spec.as_ref(), cfg, decision, now));
            lease.metadata.managed_fields = None;
            api.replace(&cfg.name, &PostParams::default(), &lease).await.map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(true),
        Err(e) if is_conflict(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up if we hold it, so a standby takes over without waiting for expiry.
pub async fn release(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        return Ok(());
    };
    let Some(spec) = lease.spec.as_mut() else { return Ok(()) };
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    lease.metadata.managed_fields = None;
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn spec(holder: Option<&str>, renewed: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            ..Default::default()
        }
    }

    #[test]
    fn decisions() {
        let now = at("2026-01-01T00:00:20Z");
        assert_eq!(decide(None, "me", now), Decision::Create);
        assert_eq!(
            decide(Some(&spec(Some("me"), "2026-01-01T00:00:00Z")), "me", now),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&spec(Some("other"), "2026-01-01T00:00:10Z")), "me", now),
            Decision::Wait
        );
        assert_eq!(
            decide(Some(&spec(Some("other"), "2026-01-01T00:00:04Z")), "me", now),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&spec(None, "2026-01-01T00:00:19Z")), "me", now),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&spec(Some(""), "2026-01-01T00:00:19Z")), "me", now),
            Decision::TakeOver
        );
    }

    #[test]
    fn takeovers_count_transitions_and_renewals_keep_the_acquire_time() {
        let cfg = LeaseConfig {
            namespace: "ns".into(),
            name: "l".into(),
            identity: "me".into(),
            duration: Duration::from_secs(10),
            renew_every: Duration::from_secs(2),
        };
        let now = at("2026-01-01T00:01:00Z");
        let mut old = spec(Some("other"), "2026-01-01T00:00:00Z");
        old.lease_transitions = Some(3);
        let taken = held_spec(Some(&old), &cfg, Decision::TakeOver, now);
        assert_eq!(taken.holder_identity.as_deref(), Some("me"));
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(taken.lease_duration_seconds, Some(10));
        let later = at("2026-01-01T00:01:02Z");
        let renewed = held_spec(Some(&taken), &cfg, Decision::Renew, later);
        assert_eq!(renewed.acquire_time, Some(MicroTime(now)));
        assert_eq!(renewed.renew_time, Some(MicroTime(later)));
        assert_eq!(renewed.lease_transitions, Some(4));
    }
}
