//! The Portcullis sidecar: the proxy in front of every workload.
//!
//! The source follows a request (`sidecar/README.md` walks one through it). From the bottom
//! up, each layer using only the ones listed before it:
//!
//! - [`base`]: body type, clock, form encoding, header hygiene, TLS primitives, the seam to
//!   the policy engine ([`portcullis_policy`]);
//! - [`telemetry`]: metrics and the audit log;
//! - [`identity`]: every call to an identity provider (key sets, introspection, origin tokens)
//!   on one client with one error type;
//! - [`listen`]: listeners, the TLS accept, connection settings;
//! - [`upstream`]: forwarding to the app or an origin, the pool, credentials toward origins;
//! - [`ops`]: the configuration in force and shared state, hot reload, the admin listener;
//! - [`request`]: the request path (early refusals, token endpoint, introspection, decide,
//!   body check, answer or forward, record);
//! - [`server`] wires them together; [`cli`] and [`demo`] stand aside.
//!
//! `tests/layers.rs` checks every `use crate::` line against this order.

pub mod base;
pub mod cli;
pub mod demo;
pub mod identity;
pub mod listen;
pub mod ops;
pub mod request;
pub mod server;
pub mod telemetry;
pub mod upstream;

pub use cli::{Cli, Command, ServeArgs};
pub use server::run;
