//! The pure half of the certificate manager: from (now, the CA's Secret, the issued Secrets,
//! the routes, the published bundles) to what should be written. No I/O; keys are generated
//! here, but every decision — issue, keep, rotate, drop the previous CA — is a function of
//! the inputs and `now`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use portcullis_api::{ApiRoute, CertificateStatus};

use crate::ca::{self, Ca, CaError, CertInfo, Subject};
use crate::compile::{issued_client_secret, issued_serving_secret};

/// Label on every object the certificate manager writes; its value says which one.
pub const CERT_LABEL: &str = "portcullis.dev/certificate";
/// Name of the CA's Secret (in the operator's namespace).
pub const CA_SECRET: &str = "portcullis-ca";
/// Key of the CA's Secret holding the previous CA certificate during a rotation.
pub const PREVIOUS_KEY: &str = "previous.crt";
/// Annotation of the CA's Secret: when the CA was last rotated (Unix seconds).
pub const ROTATED_AT_ANNOTATION: &str = "portcullis.dev/rotated-at";
/// Name of the ConfigMap holding the CA bundle, in every namespace with routes.
pub const BUNDLE_CONFIGMAP: &str = "portcullis-ca-bundle";
/// Key of the bundle in that ConfigMap (and of the issuing CA in each issued Secret).
pub const BUNDLE_KEY: &str = "ca.crt";
/// Common name of the CA.
pub const CA_NAME: &str = "Portcullis operator CA";

const TLS_TYPE: &str = "kubernetes.io/tls";
const DAY: i64 = 86_400;

/// How long certificates live (seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    pub ca: i64,
    pub leaf: i64,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            ca: 365 * DAY,
            leaf: 30 * DAY,
        }
    }
}

/// What an issued Secret holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `spec.tls.issue: true`: a serving certificate for the route's hosts.
    Serving,
    /// `backend.origin.tls.clientCertificate.issue: true`: a client certificate.
    Client,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Serving => "serving",
            Kind::Client => "client",
        }
    }

    fn from_label(v: &str) -> Option<Self> {
        match v {
            "serving" => Some(Kind::Serving),
            "client" => Some(Kind::Client),
            _ => None,
        }
    }

    pub fn secret_name(self, route: &str) -> String {
        match self {
            Kind::Serving => issued_serving_secret(route),
            Kind::Client => issued_client_secret(route),
        }
    }
}

/// The CA as read from (or about to be written to) its Secret.
#[derive(Clone, Debug)]
pub struct CaState {
    pub ca: Ca,
    /// The CA this one replaced, while certificates it signed may still be in use.
    pub previous_pem: Option<String>,
    /// When the current CA replaced the previous one.
    pub rotated_at: Option<i64>,
}

impl CaState {
    /// Reads the CA's Secret: the certificate must be a CA, unexpired, and match its key.
    pub fn from_secret(secret: &Secret, now: i64) -> Result<Self, CaError> {
        let text = |key: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
        };
        let ca = Ca::from_pem(
            &text("tls.crt").unwrap_or_default(),
            &text("tls.key").unwrap_or_default(),
            now,
        )?;
        let rotated_at = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ROTATED_AT_ANNOTATION))
            .and_then(|v| v.parse().ok());
        let previous_pem = text(PREVIOUS_KEY).filter(|p| ca::inspect(p, "previous CA").is_ok());
        Ok(Self {
            ca,
            previous_pem,
            rotated_at,
        })
    }

    /// The Secret that holds this CA.
    pub fn to_secret(&self, namespace: &str) -> Secret {
        let mut data = BTreeMap::from([
            ("tls.crt".to_owned(), bytes(self.ca.cert_pem())),
            ("tls.key".to_owned(), bytes(self.ca.key_pem())),
            (BUNDLE_KEY.to_owned(), bytes(self.ca.cert_pem())),
        ]);
        if let Some(prev) = &self.previous_pem {
            data.insert(PREVIOUS_KEY.to_owned(), bytes(prev));
        }
        let mut meta = meta(CA_SECRET, namespace, "ca", None);
        if let Some(at) = self.rotated_at {
            meta.annotations = Some(BTreeMap::from([(ROTATED_AT_ANNOTATION.to_owned(), at.to_string())]));
        }
        Secret {
            metadata: meta,
            type_: Some(TLS_TYPE.to_owned()),
            data: Some(data),
            ..Default::default()
        }
    }

    pub fn fingerprint(&self) -> &str {
        &self.ca.info().sha256_fingerprint
    }

    pub fn previous_info(&self) -> Option<CertInfo> {
        ca::inspect(self.previous_pem.as_deref()?, "previous CA").ok()
    }

    /// The CA bundle: the current CA, then the previous one while it is kept.
    pub fn bundle(&self) -> String {
        let mut out = self.ca.cert_pem().to_owned();
        if let Some(prev) = &self.previous_pem {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(prev);
        }
        out
    }
}

/// What the manager remembers of an issued Secret: facts about its certificate, never its
/// key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedSecret {
    pub namespace: String,
    pub name: String,
    pub kind: Option<Kind>,
    pub owner_uids: Vec<String>,
    /// `None` when the Secret is not a readable kubernetes.io/tls Secret whose key matches.
    pub leaf: Option<CertInfo>,
    /// SHA-256 fingerprint of the CA certificate that follows the leaf in `tls.crt`.
    pub issuer: Option<String>,
}

impl IssuedSecret {
    pub fn from_secret(secret: &Secret) -> Self {
        let meta = &secret.metadata;
        let text = |key: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
        };
        let chain = text("tls.crt").unwrap_or_default();
        let key = text("tls.key").unwrap_or_default();
        let readable = secret.type_.as_deref() == Some(TLS_TYPE)
            && ca::check_key_matches(&chain, &key, "issued certificate").is_ok();
        let certs = pem_certificates(&chain);
        Self {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            // Only a Secret named as the manager names them is taken for one of its own.
            kind: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(CERT_LABEL))
                .and_then(|v| Kind::from_label(v))
                .filter(|k| meta.name.as_deref().is_some_and(|n| n.ends_with(&k.secret_name("")))),
            owner_uids: meta.owner_references.iter().flatten().map(|o| o.uid.clone()).collect(),
            leaf: readable
                .then(|| ca::inspect(&chain, "issued certificate").ok())
                .flatten(),
            issuer: certs
                .get(1)
                .and_then(|c| ca::inspect(c, "issuing CA").ok())
                .map(|i| i.sha256_fingerprint),
        }
    }
}

/// The PEM certificates of a chain, in order.
pub fn pem_certificates(pem: &str) -> Vec<&str> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    let mut offset = 0;
    while let Some(start) = rest.find(BEGIN) {
        let Some(end) = rest[start..].find(END) else { break };
        let stop = start + end + END.len();
        out.push(&pem[offset + start..offset + stop]);
        offset += stop;
        rest = &pem[offset..];
    }
    out
}

/// Everything a plan depends on.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    pub now: i64,
    /// The operator's namespace (the CA's Secret, and always a bundle).
    pub namespace: &'a str,
    /// The CA read from its Secret; `None` when there is none or it is unusable.
    pub ca: Option<&'a CaState>,
    /// Every ApiRoute.
    pub routes: &'a [ApiRoute],
    /// Every Secret the manager issued (label [`CERT_LABEL`] serving or client).
    pub issued: &'a [IssuedSecret],
    /// Content of each namespace's bundle ConfigMap.
    pub bundles: &'a BTreeMap<String, String>,
    pub lifetimes: Lifetimes,
    /// Keep a CA even when no route asks for a certificate (the webhooks need one).
    pub always: bool,
}

/// One route's certificates for its status.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteCertificates {
    pub namespace: String,
    pub route: String,
    pub certificates: Vec<CertificateStatus>,
}

/// A certificate to (re)issue, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reissue {
    pub namespace: String,
    pub name: String,
    pub why: &'static str,
}

/// What should be written.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The CA after this plan (`None`: no CA is needed and none exists).
    pub ca: Option<CaState>,
    /// The CA's Secret, when it changes (new CA, rotation, previous CA dropped).
    pub ca_secret: Option<Secret>,
    /// Why the CA's Secret is written.
    pub ca_why: Option<&'static str>,
    /// Issued Secrets to apply.
    pub secrets: Vec<Secret>,
    /// What was issued and why (for logs).
    pub reissued: Vec<Reissue>,
    /// Issued Secrets no route asks for any more: (namespace, name).
    pub delete_secrets: Vec<(String, String)>,
    /// Bundle ConfigMaps to apply.
    pub configmaps: Vec<ConfigMap>,
    /// Namespaces whose bundle ConfigMap should go (no routes left).
    pub delete_configmaps: Vec<String>,
    /// Route statuses whose `certificates` differ.
    pub statuses: Vec<RouteCertificates>,
    /// The CA bundle (current CA, plus the previous one while it is kept).
    pub bundle: Option<String>,
    /// When something is next due (renewal, dropping the previous CA).
    pub next_due: Option<i64>,
    /// Certificates that could not be issued (route, message; never key material).
    pub failures: Vec<(String, String)>,
}

/// What a route asks for: (kind, subject).
pub fn wanted(route: &ApiRoute) -> Vec<(Kind, Subject)> {
    let name = route.metadata.name.as_deref().unwrap_or_default();
    let namespace = route.metadata.namespace.as_deref().unwrap_or_default();
    let mut out = Vec::new();
    if route.spec.tls.as_ref().and_then(|t| t.issue) == Some(true) {
        let mut hosts: Vec<String> = route.spec.hosts.clone();
        if hosts.is_empty() {
            hosts.push(format!("{name}.{namespace}.svc"));
        }
        hosts.sort();
        hosts.dedup();
        out.push((Kind::Serving, Subject::Serving { hosts }));
    }
    let client = route
        .spec
        .backend
        .origin
        .as_ref()
        .and_then(|o| o.tls.as_ref())
        .and_then(|t| t.client_certificate.as_ref())
        .and_then(|c| c.issue);
    if client == Some(true) {
        out.push((
            Kind::Client,
            Subject::Client {
                common_name: format!("{namespace}/{name}"),
            },
        ));
    }
    out
}

/// Why an existing certificate must be issued again, or `None` when it can stay.
pub fn reissue_reason(
    existing: Option<&IssuedSecret>,
    subject: &Subject,
    owner_uid: Option<&str>,
    ca: &CaState,
    now: i64,
) -> Option<&'static str> {
    let Some(existing) = existing else {
        return Some("missing");
    };
    let Some(leaf) = &existing.leaf else {
        return Some("unreadable or key mismatch");
    };
    let previous = ca.previous_info().map(|p| p.sha256_fingerprint);
    let issuer = existing.issuer.as_deref();
    if issuer != Some(ca.fingerprint()) && (issuer.is_none() || issuer != previous.as_deref()) {
        return Some("signed by an unknown CA");
    }
    match subject {
        Subject::Serving { hosts } => {
            let have: BTreeSet<&str> = leaf.dns_names.iter().map(String::as_str).collect();
            let want: BTreeSet<&str> = hosts.iter().map(String::as_str).collect();
            if have != want {
                return Some("hosts changed");
            }
        }
        Subject::Client { common_name } => {
            if leaf.subject != format!("CN={common_name}") {
                return Some("subject changed");
            }
        }
    }
    if let Some(uid) = owner_uid
        && existing.owner_uids != [uid]
    {
        return Some("owner changed");
    }
    if leaf.not_after <= now {
        return Some("expired");
    }
    if ca::needs_renewal(leaf.not_before, leaf.not_after, now) {
        return Some("renewal due");
    }
    None
}

fn due(t: i64, out: &mut Plan) {
    out.next_due = Some(out.next_due.map_or(t, |d| d.min(t)));
}

fn renewal_time(info: &CertInfo) -> i64 {
    info.not_before + (info.not_after - info.not_before).max(0) * 2 / 3
}

/// Plans the certificates.
pub fn plan(i: &Inputs) -> Plan {
    let mut out = Plan::default();
    let asked: Vec<(&ApiRoute, Vec<(Kind, Subject)>)> = i.routes.iter().map(|r| (r, wanted(r))).collect();
    let any_asked = asked.iter().any(|(_, w)| !w.is_empty());

    // The CA: created when first needed, rotated at two thirds of its lifetime.
    let mut state = match i.ca {
        Some(ca) if !ca::needs_renewal(ca.ca.info().not_before, ca.ca.info().not_after, i.now) => ca.clone(),
        Some(old) => match Ca::generate(CA_NAME, i.now, i.lifetimes.ca) {
            Ok(ca) => {
                out.ca_why = Some("rotated at two thirds of its lifetime");
                CaState {
                    ca,
                    previous_pem: Some(old.ca.cert_pem().to_owned()),
                    rotated_at: Some(i.now),
                }
            }
            Err(e) => {
                out.failures.push(("CA".into(), e.to_string()));
                old.clone()
            }
        },
        None if any_asked || i.always => match Ca::generate(CA_NAME, i.now, i.lifetimes.ca) {
            Ok(ca) => {
                out.ca_why = Some("created");
                CaState {
                    ca,
                    previous_pem: None,
                    rotated_at: None,
                }
            }
            Err(e) => {
                out.failures.push(("CA".into(), e.to_string()));
                return out;
            }
        },
        None => {
            // No CA and none needed: only clean up what an earlier CA left.
            out.delete_secrets = i
                .issued
                .iter()
                .filter(|s| s.kind.is_some())
                .map(|s| (s.namespace.clone(), s.name.clone()))
                .collect();
            out.delete_configmaps = i.bundles.keys().cloned().collect();
            out.statuses = statuses(i.routes, &BTreeMap::new());
            return out;
        }
    };
    let info = state.ca.info().clone();
    due(renewal_time(&info), &mut out);

    // Issued certificates.
    let existing: BTreeMap<(&str, &str), &IssuedSecret> = i
        .issued
        .iter()
        .map(|s| ((s.namespace.as_str(), s.name.as_str()), s))
        .collect();
    let mut keep: BTreeSet<(String, String)> = BTreeSet::new();
    // Leaves in use after this plan: (namespace, name) -> (info, issuer fingerprint).
    let mut current: BTreeMap<(String, String), (CertInfo, Option<String>)> = BTreeMap::new();
    for (route, wants) in &asked {
        let namespace = route.metadata.namespace.clone().unwrap_or_default();
        let name = route.metadata.name.clone().unwrap_or_default();
        for (kind, subject) in wants {
            let secret_name = kind.secret_name(&name);
            let key = (namespace.clone(), secret_name.clone());
            keep.insert(key.clone());
            let have = existing.get(&(namespace.as_str(), secret_name.as_str())).copied();
            match reissue_reason(have, subject, route.metadata.uid.as_deref(), &state, i.now) {
                None => {
                    let have = have.expect("kept certificates exist");
                    let leaf = have.leaf.clone().expect("kept certificates are readable");
                    due(renewal_time(&leaf), &mut out);
                    current.insert(key, (leaf, have.issuer.clone()));
                }
                Some(why) => match state.ca.issue(subject, i.now, i.lifetimes.leaf) {
                    Ok(issued) => {
                        due(renewal_time(&issued.info), &mut out);
                        out.secrets
                            .push(leaf_secret(route, *kind, &secret_name, &issued, state.ca.cert_pem()));
                        out.reissued.push(Reissue {
                            namespace: namespace.clone(),
                            name: secret_name.clone(),
                            why,
                        });
                        current.insert(key, (issued.info, Some(info.sha256_fingerprint.clone())));
                    }
                    Err(e) => {
                        out.failures.push((format!("{namespace}/{name}"), e.to_string()));
                        if let Some(leaf) = have.and_then(|h| h.leaf.clone()) {
                            current.insert(key, (leaf, have.and_then(|h| h.issuer.clone())));
                        }
                    }
                },
            }
        }
    }
    out.delete_secrets = i
        .issued
        .iter()
        .filter(|s| s.kind.is_some() && !keep.contains(&(s.namespace.clone(), s.name.clone())))
        .map(|s| (s.namespace.clone(), s.name.clone()))
        .collect();

    // The previous CA stays trusted while a certificate it signed is in use, and for a
    // leaf lifetime after the rotation (webhook serving certificates live in memory and are
    // renewed within that), never past its own expiry.
    if let Some(prev) = state.previous_info() {
        let signed_by_prev = current
            .values()
            .any(|(_, issuer)| issuer.as_deref() == Some(prev.sha256_fingerprint.as_str()));
        let grace_end = state.rotated_at.unwrap_or(i.now) + i.lifetimes.leaf;
        let keep_prev = prev.not_after > i.now && (signed_by_prev || i.now < grace_end);
        if keep_prev {
            due(grace_end.min(prev.not_after), &mut out);
        } else {
            state.previous_pem = None;
            out.ca_why.get_or_insert("previous CA no longer in use");
        }
    }
    if out.ca_why.is_some() {
        out.ca_secret = Some(state.to_secret(i.namespace));
    }

    // The bundle, in the operator's namespace and every namespace with routes.
    let bundle = state.bundle();
    let mut namespaces: BTreeSet<String> = i.routes.iter().filter_map(|r| r.metadata.namespace.clone()).collect();
    namespaces.insert(i.namespace.to_owned());
    for ns in &namespaces {
        if i.bundles.get(ns) != Some(&bundle) {
            out.configmaps.push(bundle_configmap(ns, &bundle));
        }
    }
    out.delete_configmaps = i
        .bundles
        .keys()
        .filter(|ns| !namespaces.contains(*ns))
        .cloned()
        .collect();

    out.statuses = statuses(i.routes, &current);
    out.bundle = Some(bundle);
    out.ca = Some(state);
    out
}

/// Route statuses whose `certificates` differ from what `current` holds.
fn statuses(
    routes: &[ApiRoute],
    current: &BTreeMap<(String, String), (CertInfo, Option<String>)>,
) -> Vec<RouteCertificates> {
    let mut out = Vec::new();
    for route in routes {
        let namespace = route.metadata.namespace.clone().unwrap_or_default();
        let name = route.metadata.name.clone().unwrap_or_default();
        let mut certificates: Vec<CertificateStatus> = wanted(route)
            .into_iter()
            .filter_map(|(kind, _)| {
                let secret_name = kind.secret_name(&name);
                let (info, _) = current.get(&(namespace.clone(), secret_name.clone()))?;
                Some(CertificateStatus {
                    secret_name,
                    not_after: info.not_after_rfc3339(),
                    sha256_fingerprint: info.sha256_fingerprint.clone(),
                })
            })
            .collect();
        certificates.sort_by(|a, b| a.secret_name.cmp(&b.secret_name));
        let have = route
            .status
            .as_ref()
            .map(|s| s.certificates.as_slice())
            .unwrap_or_default();
        if have != certificates.as_slice() {
            out.push(RouteCertificates {
                namespace,
                route: name,
                certificates,
            });
        }
    }
    out
}

fn bytes(s: &str) -> ByteString {
    ByteString(s.as_bytes().to_vec())
}

fn meta(name: &str, namespace: &str, what: &str, owner: Option<OwnerReference>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(BTreeMap::from([(CERT_LABEL.to_owned(), what.to_owned())])),
        owner_references: owner.map(|o| vec![o]),
        ..Default::default()
    }
}

fn leaf_secret(route: &ApiRoute, kind: Kind, name: &str, issued: &ca::Issued, ca_pem: &str) -> Secret {
    let owner = route.metadata.uid.clone().map(|uid| OwnerReference {
        api_version: ApiRoute::api_version(&()).into_owned(),
        kind: ApiRoute::kind(&()).into_owned(),
        name: route.metadata.name.clone().unwrap_or_default(),
        uid,
        controller: Some(true),
        block_owner_deletion: None,
    });
    let namespace = route.metadata.namespace.as_deref().unwrap_or_default();
    Secret {
        metadata: meta(name, namespace, kind.label(), owner),
        type_: Some(TLS_TYPE.to_owned()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_owned(), bytes(&issued.cert_chain_pem)),
            ("tls.key".to_owned(), bytes(&issued.key_pem)),
            (BUNDLE_KEY.to_owned(), bytes(ca_pem)),
        ])),
        ..Default::default()
    }
}

/// The bundle ConfigMap of one namespace.
pub fn bundle_configmap(namespace: &str, bundle: &str) -> ConfigMap {
    ConfigMap {
        metadata: meta(BUNDLE_CONFIGMAP, namespace, "bundle", None),
        data: Some(BTreeMap::from([(BUNDLE_KEY.to_owned(), bundle.to_owned())])),
        ..Default::default()
    }
}

/// Parses a lifetime: seconds, or a number with `s`, `m`, `h` or `d` (`30d`, `6s`).
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: expected a number of seconds, or a number with s, m, h or d"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => DAY,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    match n.checked_mul(unit) {
        Some(v) if v > 0 => Ok(v),
        _ => Err(format!("{s:?}: must be positive")),
    }
}

#[cfg(test)]
mod tests;
