//! The controllers behind `portcullis-operator run`.

pub mod admin;
pub mod cache;
pub mod group;
pub mod leader;
pub mod metrics;
pub mod objects;
pub mod plan;
pub mod queue;
pub mod reconcile;
pub mod refs;
pub mod rollout;
pub mod runtime;
pub mod status;
pub mod store;

pub use admin::Health;
pub use metrics::Metrics;
pub use runtime::{Options, RunError, run};
