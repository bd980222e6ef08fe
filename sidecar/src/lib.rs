//! The Portcullis sidecar: the proxy in front of every workload.
//!
//! Every inbound call passes through [`proxy::handle`], which asks the policy engine
//! ([`portcullis_policy`]) for a decision, answers denials through the single mapping in
//! [`respond`], and forwards admitted calls to the app with [`forward`]. The configuration is
//! read from `--config-dir`, compiled, and swapped atomically by [`reload`]; the admin listener
//! ([`admin`]) exposes `/metrics`, `/healthz`, `/readyz` and `/config`.
//!
//! The request path in order: accept ([`server`]) → snapshot the active configuration
//! ([`state`]) → introspect an opaque bearer token when needed ([`introspection`]) → decide ([`engine`]) → deny ([`respond`]) or forward ([`forward`]) → audit
//! ([`audit`]) and count ([`metrics`]).

pub mod admin;
pub mod audit;
pub mod body;
pub mod cli;
pub mod demo;
pub mod engine;
pub mod forward;
pub mod headers;
pub mod introspection;
pub mod metrics;
pub mod oauth2;
pub mod origin_auth;
pub mod pool;
pub mod proxy;
pub mod reload;
pub mod respond;
pub mod server;
pub mod state;
pub mod tls;

pub use cli::{Cli, Command, ServeArgs};
pub use server::run;
