//! Running the sidecar: the configuration in force and what every listener shares
//! ([`state`]), loading and hot-reloading `--config-dir` into it ([`reload`]), the admin
//! listener (`/metrics`, `/healthz`, `/readyz`, `/config`, [`admin`]), and following the
//! grants' revocations in a shared store ([`grants`]).
//!
//! The request path reads [`state::Shared`], so this layer sits below it. Uses
//! [`crate::base`], [`crate::telemetry`], [`crate::identity`], [`crate::listen`] (the
//! client-facing TLS configuration a reload builds) and [`crate::upstream`] (the clients a
//! reload builds); never [`crate::request`].

pub mod admin;
pub mod grants;
pub mod reload;
pub mod state;
