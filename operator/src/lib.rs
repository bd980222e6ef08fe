//! The Portcullis operator: turns `SecurityProfile` and `ApiRoute` resources into the
//! configuration each sidecar enforces.
//!
//! - [`compile`]: the pure compiler shared by `render` and the controllers.
//! - [`render`]: `portcullis-operator render`, the compiler over YAML files.
//! - [`controller`]: `portcullis-operator run`, the controllers (pure plan, writes, leader
//!   election, admin port).
//! - [`certs`]: the operator's CA and the certificates it issues (leader only).
//! - [`webhook`] and [`webhook_server`]: the admission webhooks and their HTTPS listener
//!   (every replica).

#![forbid(unsafe_code)]

pub mod ca;
pub mod certs;
pub mod compile;
pub mod controller;
pub mod render;
pub mod webhook;
pub mod webhook_server;

/// The files under `crds/`: one per CRD, each a single YAML document.
pub fn crd_files() -> Vec<(&'static str, String)> {
    use kube::CustomResourceExt;
    let yaml = |crd| format!("---\n{}", serde_yaml::to_string(&crd).expect("CRDs serialize"));
    vec![
        ("securityprofile.yaml", yaml(portcullis_api::SecurityProfile::crd())),
        ("apiroute.yaml", yaml(portcullis_api::ApiRoute::crd())),
    ]
}

/// Both CRDs as one multi-document YAML stream (`portcullis-operator crds`): the files under
/// `crds/`, concatenated.
pub fn crds_yaml() -> String {
    crd_files().into_iter().map(|(_, yaml)| yaml).collect()
}
