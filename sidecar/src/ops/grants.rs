//! With a shared store (`--limits-store`), every replica follows the revocations of the
//! Builtin providers' grants there: each half second it asks the store for those made since
//! it last asked, so an access token of a grant revoked on one replica is refused by every
//! replica within a second. A replica that starts reads every revocation still listed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::state::Shared;

/// How often the store is asked.
const EVERY: Duration = Duration::from_millis(500);
/// Revocations are asked for again this far back (ms of the store's clock): a failover to a
/// replica whose clock is a little behind loses none.
const OVERLAP_MS: u64 = 2_000;
/// Least time between two warnings that the store cannot be asked.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Follows the revocations for the life of the process (returns at once without a store).
pub async fn follow_revocations(shared: Arc<Shared>) {
    let Some(store) = shared.limiter.store() else {
        return;
    };
    let mut since: HashMap<String, u64> = HashMap::new();
    let mut warned: Option<Instant> = None;
    let mut ticker = tokio::time::interval(EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let active = shared.active.load_full();
        for provider in active.engine.builtin_providers() {
            let owner = provider.owner();
            let from = since.get(owner).map_or(0, |t| t.saturating_sub(OVERLAP_MS));
            match store.revocations_since(owner, from).await {
                Ok(r) => {
                    let grants: Vec<(&str, u64)> = r.grants.iter().map(|(id, at)| (id.as_str(), *at)).collect();
                    let clients: Vec<(&str, u64)> = r.clients.iter().map(|(c, at)| (c.as_str(), *at)).collect();
                    let ttl = u64::from(provider.ttl_seconds());
                    provider
                        .book()
                        .learn_revocations(&grants, &clients, ttl, r.now_ms / 1000);
                    since.insert(owner.to_owned(), r.now_ms);
                }
                Err(error) => {
                    if warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                        tracing::warn!(%error, profile = owner,
                            "cannot read the grants' revocations from the limits store: other replicas' revocations wait for it");
                        warned = Some(Instant::now());
                    }
                }
            }
        }
    }
}
