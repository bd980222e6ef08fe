//! Rate limits shared by every replica of a pod group through Redis.
//!
//! [`SharedLimiter`] implements the policy engine's `Limiter` over a [`Store`] (a Redis
//! server or Redis Cluster; [`store`]). Far from a limit, requests take their hits from
//! blocks reserved ahead in the store (no round trip on their path); near it, each takes its
//! own hit in one round trip, so that the hits admitted in a window across all replicas are
//! exactly min(demand, limit). When the store is unavailable each replica enforces its share
//! of every limit, counted locally, until the store answers again ([`shared`]).

pub mod shared;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use shared::{Counter, Mode, Options, SharedLimiter};
pub use store::{Store, StoreError, Target};
