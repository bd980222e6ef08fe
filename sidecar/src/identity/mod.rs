//! Every call the sidecar makes to an identity provider, on one HTTP client ([`client`]) with
//! one error type ([`client::IdpError`]): the OAuth2 key sets bearer JWTs are verified with
//! ([`jwks`]), RFC 7662 introspection of opaque tokens ([`introspection`]), and the
//! client-credentials tokens the sidecar obtains for calls toward origins ([`origin_token`]).
//! The answers go into the policy engine's caches and slots; the engine itself never does
//! I/O. Uses only [`crate::base`]; what it needs of the configuration in force it is handed by
//! its callers.

pub mod client;
pub mod discovery;
pub mod introspection;
pub mod jwks;
pub mod origin_token;
