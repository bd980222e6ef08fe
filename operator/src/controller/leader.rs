//! Leader election on a `coordination.k8s.io/v1` Lease, so two replicas are safe: only the
//! holder reconciles. The holder renews the Lease every `renew_every`; another replica takes
//! it over once `leaseDurationSeconds` have passed on its own clock without seeing the Lease
//! change (as client-go does: the holder's `renewTime` comes from another machine's clock and
//! is never compared with ours; an [`Observer`] remembers when the record last changed). A
//! holder that finds another holder, or cannot renew within two thirds of the lease duration
//! (each attempt is bounded by what is left of that: a renewal that hangs does not keep a
//! deposed leader reconciling), stops reconciling (the process exits 1 and is restarted as a
//! standby). On a graceful shutdown the holder releases the Lease so a standby takes over at
//! once.
//!
//! The decision is a pure function ([`decide`]); every write carries the resourceVersion it
//! was decided on, so two replicas racing for one Lease cannot both win.
//!
//! I/O (the Lease). Layer 5 of the list in `controller`: may use layers 0–4, uses none;
//! `runtime` drives it.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
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

/// What this replica has seen of the Lease: its last spec, and when (on our monotonic
/// clock) that spec was first seen. Expiry is judged from this, never from the holder's
/// timestamps.
#[derive(Clone, Debug, Default)]
pub struct Observer {
    seen: Option<(Option<LeaseSpec>, Instant)>,
}

impl Observer {
    /// Records the spec read at `now`; returns when it was first seen unchanged.
    pub fn observe(&mut self, spec: Option<&LeaseSpec>, now: Instant) -> Instant {
        match &self.seen {
            Some((last, since)) if last.as_ref() == spec => *since,
            _ => {
                self.seen = Some((spec.cloned(), now));
                now
            }
        }
    }
}

/// Decides from the Lease's spec (`None`: no Lease), seen unchanged since `since`, at `now`
/// (both on our own monotonic clock).
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, since: Instant, now: Instant) -> Decision {
    let Some(spec) = spec else { return Decision::Create };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == identity => Decision::Renew,
        None | Some("") => Decision::TakeOver,
        Some(_) => {
            let seconds = u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(0);
            if now.saturating_duration_since(since) < Duration::from_secs(seconds) {
                Decision::Wait
            } else {
                Decision::TakeOver
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

/// One attempt to acquire or renew. `Ok(true)`: we hold the Lease now. `observer` keeps
/// what this replica saw of the Lease between attempts.
pub async fn try_hold(api: &Api<Lease>, cfg: &LeaseConfig, observer: &mut Observer) -> Result<bool, kube::Error> {
    let current = api.get_opt(&cfg.name).await?;
    let spec = current.as_ref().and_then(|l| l.spec.as_ref());
    let seen = Instant::now();
    let since = observer.observe(spec, seen);
    let decision = decide(spec, &cfg.identity, since, seen);
    // What we write: our own clock's time (for people reading the Lease; no replica of ours
    // compares it with its clock).
    let now = Timestamp::now();
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
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(20);
        assert_eq!(decide(None, "me", t0, now), Decision::Create);
        let mine = spec(Some("me"), "2026-01-01T00:00:00Z");
        assert_eq!(decide(Some(&mine), "me", t0, now), Decision::Renew);
        let other = spec(Some("other"), "2026-01-01T00:00:10Z");
        // Seen unchanged for less than the duration (15 s): wait; for longer: take over.
        assert_eq!(
            decide(Some(&other), "me", t0 + Duration::from_secs(10), now),
            Decision::Wait
        );
        assert_eq!(decide(Some(&other), "me", t0, now), Decision::TakeOver);
        assert_eq!(
            decide(Some(&spec(None, "2026-01-01T00:00:19Z")), "me", now, now),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&spec(Some(""), "2026-01-01T00:00:19Z")), "me", now, now),
            Decision::TakeOver
        );
    }

    /// Issue 15, item 11: the holder's renewTime is another machine's clock; only a change
    /// of the record, seen on our clock, counts.
    #[test]
    fn expiry_is_judged_by_local_observation_not_the_holders_clock() {
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let mut observer = Observer::default();
        // A holder whose clock is an hour behind ours, renewing every 5 s.
        let behind = |s: &str| spec(Some("other"), s);
        for (i, renewed) in ["2025-12-31T23:00:00Z", "2025-12-31T23:00:05Z", "2025-12-31T23:00:10Z"]
            .iter()
            .enumerate()
        {
            let now = t0 + secs(5 * i as u64);
            let since = observer.observe(Some(&behind(renewed)), now);
            assert_eq!(decide(Some(&behind(renewed)), "me", since, now), Decision::Wait);
        }
        // It stops renewing: after the duration without a change, take over.
        let last = behind("2025-12-31T23:00:10Z");
        let since = observer.observe(Some(&last), t0 + secs(24));
        assert_eq!(decide(Some(&last), "me", since, t0 + secs(24)), Decision::Wait);
        assert_eq!(decide(Some(&last), "me", since, t0 + secs(25)), Decision::TakeOver);

        // A dead holder whose clock was an hour ahead: no waiting for its future renewTime.
        let mut observer = Observer::default();
        let ahead = spec(Some("other"), "2026-01-01T01:00:00Z");
        let since = observer.observe(Some(&ahead), t0);
        assert_eq!(decide(Some(&ahead), "me", since, t0 + secs(14)), Decision::Wait);
        let since = observer.observe(Some(&ahead), t0 + secs(15));
        assert_eq!(since, t0);
        assert_eq!(decide(Some(&ahead), "me", since, t0 + secs(15)), Decision::TakeOver);
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
