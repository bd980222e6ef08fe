//! The Portcullis custom resources, `SecurityProfile` and `ApiRoute`, as Rust types.
//!
//! These are the wire types of the public API (group `portcullis.dev`, version
//! `v1alpha1`). The CRD YAML under `crds/` is generated from them (`portcullis-operator
//! crds`), including every doc comment (what `kubectl explain` shows) and every CEL rule
//! that one object can check alone. Rules that need other objects (does the profile
//! exist? are profile types mixed?) are enforced by the operator's compiler.

pub mod api_route;
pub mod common;
pub mod security_profile;

pub use api_route::*;
pub use common::*;
pub use security_profile::*;

/// API group of every Portcullis resource.
pub const GROUP: &str = "portcullis.dev";
/// API version served by this crate.
pub const VERSION: &str = "v1alpha1";

/// Both CRDs, in a stable order (what `portcullis-operator crds` prints).
pub fn crds() -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    use kube::CustomResourceExt;
    vec![SecurityProfile::crd(), ApiRoute::crd()]
}
