//! The controllers behind `portcullis-operator run`.
//!
//! # Layers
//!
//! The modules form layers, bottom to top. A module may use (`use super::x`,
//! `crate::controller::x::…`) only modules of the layers below its own, never one of its own
//! layer or above, so their imports cannot form a cycle. `tests/layering.rs` reads this list
//! and the sources and fails on an import that breaks it; a new module must be added here.
//!
//! 0. **`group`, `refs`, `store`, `cache`, `queue`, `metrics`**: self-contained pieces (group
//!    names and labels, Secret references, the in-memory stores and caches, the work queue,
//!    the metrics); use no sibling.
//! 1. **`status`, `objects`**: pure planning types — desired statuses (with a route's
//!    rollout numbers) and the status patch body; what the stores keep of each kind and the
//!    Secret data digest.
//! 2. **`plan`**: pure planning — one namespace's snapshot → the desired ConfigMaps, Secrets
//!    and statuses, and whether existing objects are current.
//! 3. **`rollout`**: the in-memory table of running sidecars and what they report, one poll
//!    round through a `Probe`, and the pure per-route rollout counts.
//! 4. **`context`**: the shared `Context` (client, settings, generation key, stores, caches,
//!    sidecars, metrics, recorder), `known_namespaces` and `FIELD_MANAGER`.
//! 5. **`write`, `poller`, `leader`, `admin`, `generation_key`**: I/O — object writes and
//!    status patches, the sidecar poller and its HTTP probe, the leader Lease, the admin
//!    port, the generation key's Secret.
//! 6. **`reconcile`**: one namespace's reconcile (plan, then writes).
//! 7. **`runtime`**: `run` — leader election, watches, workers, shutdown.

pub mod admin;
pub mod cache;
pub mod context;
pub mod generation_key;
pub mod group;
pub mod leader;
pub mod metrics;
pub mod objects;
pub mod plan;
pub mod poller;
pub mod queue;
pub mod reconcile;
pub mod refs;
pub mod rollout;
pub mod runtime;
pub mod status;
pub mod store;
mod write;

pub use admin::Health;
pub use metrics::Metrics;
pub use runtime::{Options, RunError, run};
