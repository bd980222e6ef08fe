//! `portcullis-operator render`: the compiler over YAML files, with exactly the code the
//! controllers use. Reads SecurityProfiles, ApiRoutes and Secrets (multi-document files,
//! `kind: List`, or directories of `*.yaml`/`*.yml`), compiles them, and writes the files a
//! sidecar would have mounted. On any invalid input it names the object and the field, exits
//! non-zero and leaves the output directory as it was.
//!
//! The generation is keyed ([`crate::compile::generation`]) with the key in
//! `--generation-key-file`, else with a new random key per run: renders of the same input then
//! differ only in their generation, which makes a sidecar reload the same content.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use portcullis_api::{ApiRoute, SecurityProfile};
use serde::de::DeserializeOwned;

use crate::compile::generation::KeyError;
use crate::compile::{self, GenerationKey, Inputs};

/// Objects read from files, by namespace.
#[derive(Default, Debug)]
pub struct Objects {
    pub profiles: Vec<SecurityProfile>,
    pub routes: Vec<ApiRoute>,
    pub secrets: Vec<Secret>,
}

/// Why `render` failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: document {doc}: {message}")]
    Yaml { path: String, doc: usize, message: String },
    #[error("{path}: {kind} {name}: {message}")]
    Object {
        path: String,
        kind: String,
        name: String,
        message: String,
    },
    #[error("no SecurityProfile, ApiRoute or Secret found in the input")]
    Empty,
    #[error("no random bytes from the operating system for a session key")]
    Random,
    #[error("the input spans namespaces {0}; a sidecar serves one namespace, pick one with --namespace")]
    Namespaces(String),
    #[error("invalid --workload-labels {0:?}: expected k=v,k2=v2")]
    Labels(String),
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
    #[error("generation key file {path}: {source}")]
    GenerationKey {
        path: String,
        #[source]
        source: KeyError,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What `render` was asked to do.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub inputs: Vec<PathBuf>,
    pub out: PathBuf,
    pub workload_labels: Option<BTreeMap<String, String>>,
    pub org_allowance: Option<u32>,
    pub namespace: Option<String>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The sidecars will count limits in a shared limits store (`--limits-store`): allows
    /// quotas, which are refused without one.
    pub limits_store_configured: bool,
    /// A file whose bytes (at least 32) key the generation, such as the operator's
    /// `portcullis-generation-key` Secret's `key`. `None`: a new random key.
    pub generation_key_file: Option<PathBuf>,
}

/// What `render` wrote.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub namespace: String,
    pub generation: String,
    pub routes: Vec<String>,
    pub profiles: Vec<String>,
    /// What admission would warn of (a sign-in profile on a route without HTTPS, when no
    /// trusted proxy terminates TLS in front).
    pub warnings: Vec<String>,
}

/// Parses `k=v,k2=v2`.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, RenderError> {
    s.split(',')
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
            _ => Err(RenderError::Labels(s.to_owned())),
        })
        .collect()
}

/// Reads, compiles and writes. The output directory is only touched when everything is valid.
pub fn render(req: &Request) -> Result<Rendered, RenderError> {
    let mut by_ns: BTreeMap<String, Objects> = BTreeMap::new();
    for path in &req.inputs {
        for file in yaml_files(path)? {
            read_file(&file, &mut by_ns)?;
        }
    }
    if let Some(ns) = &req.namespace {
        by_ns.retain(|k, _| k == ns);
    }
    let (namespace, objects) = match by_ns.len() {
        0 => return Err(RenderError::Empty),
        1 => by_ns.into_iter().next().expect("one namespace"),
        _ => {
            return Err(RenderError::Namespaces(
                by_ns.keys().cloned().collect::<Vec<_>>().join(", "),
            ));
        }
    };
    let generation_key = generation_key(req.generation_key_file.as_deref())?;
    let mut objects = objects;
    add_session_keys(&namespace, &mut objects)?;
    let output = compile::compile_with_key(
        &Inputs {
            namespace: &namespace,
            profiles: &objects.profiles,
            routes: &objects.routes,
            secrets: &objects.secrets,
            org_allowance: req.org_allowance,
            trusted_proxies: &req.trusted_proxies,
            limits_store_configured: req.limits_store_configured,
            workload_labels: req.workload_labels.as_ref(),
        },
        &generation_key,
    );
    let errors = output.errors(&namespace);
    if !errors.is_empty() {
        return Err(RenderError::Invalid(errors));
    }
    output.loaded.write_dir(&req.out).map_err(|source| RenderError::Write {
        path: req.out.display().to_string(),
        source,
    })?;
    let mut warnings: Vec<String> = if req.trusted_proxies.is_empty() {
        let rendered: Vec<&str> = output.loaded.config.routes.iter().map(|r| r.name.as_str()).collect();
        objects
            .routes
            .iter()
            .filter(|r| r.metadata.name.as_deref().is_some_and(|n| rendered.contains(&n)))
            .flat_map(|r| crate::webhook::sign_in_warnings(r, &objects.profiles))
            .collect()
    } else {
        Vec::new()
    };
    warnings.extend(
        objects
            .profiles
            .iter()
            .flat_map(|p| crate::webhook::delegation_warnings(p, req.limits_store_configured)),
    );
    Ok(Rendered {
        namespace,
        warnings,
        generation: output.loaded.config.generation.clone(),
        routes: output.loaded.config.routes.iter().map(|r| r.name.clone()).collect(),
        profiles: output.loaded.config.profiles.iter().map(|p| p.name.clone()).collect(),
    })
}

/// For each profile with sign-in whose session-key Secret the input lacks, and each Builtin
/// provider whose token-key Secret it lacks, one made here with a new random key (what the
/// operator makes in a cluster): sessions and tokens then last until the next render. Supply
/// the Secrets (`<profile>-portcullis-session`, data `key-<unix seconds>`: base64 of 32
/// random bytes; `<profile>-portcullis-token-keys`, data `key-<unix seconds>`: an EC P-256
/// private key, PKCS#8 PEM) to keep them across renders.
fn add_session_keys(namespace: &str, objects: &mut Objects) -> Result<(), RenderError> {
    use base64::Engine as _;
    use ring::rand::SecureRandom as _;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut made = Vec::new();
    for p in &objects.profiles {
        let Some(oauth2) = p.spec.oauth2.as_ref() else { continue };
        let profile = p.metadata.name.clone().unwrap_or_default();
        if oauth2.login.is_some() {
            let mut key = [0u8; 32];
            ring::rand::SystemRandom::new()
                .fill(&mut key)
                .map_err(|_| RenderError::Random)?;
            let value = base64::engine::general_purpose::STANDARD.encode(key);
            made.push((compile::login::session_secret_name(&profile), value));
        }
        if oauth2.provider == portcullis_api::OAuth2Provider::Builtin {
            let pem = compile::token_keys::new_key_pem().ok_or(RenderError::Random)?;
            made.push((compile::token_keys::token_keys_secret_name(&profile), pem));
        }
    }
    for (name, value) in made {
        if objects
            .secrets
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some(&*name))
        {
            continue;
        }
        let mut data = BTreeMap::new();
        data.insert(
            format!("{}{now}", compile::login::SESSION_KEY_PREFIX),
            k8s_openapi::ByteString(value.into_bytes()),
        );
        objects.secrets.push(Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name),
                namespace: Some(namespace.to_owned()),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        });
    }
    Ok(())
}

/// The key in `file` (its bytes as they are), or a new random one.
fn generation_key(file: Option<&Path>) -> Result<GenerationKey, RenderError> {
    let key_err = |path: &Path, source| RenderError::GenerationKey {
        path: path.display().to_string(),
        source,
    };
    match file {
        None => GenerationKey::generate().map_err(|source| key_err(Path::new("(random)"), source)),
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|source| RenderError::Read {
                path: path.display().to_string(),
                source,
            })?;
            GenerationKey::from_bytes(&bytes).map_err(|source| key_err(path, source))
        }
    }
}

fn yaml_files(path: &Path) -> Result<Vec<PathBuf>, RenderError> {
    let read_err = |source| RenderError::Read {
        path: path.display().to_string(),
        source,
    };
    if !path.is_dir() {
        std::fs::metadata(path).map_err(read_err)?;
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_err)? {
        let p = entry.map_err(read_err)?.path();
        if p.is_dir() {
            files.extend(yaml_files(&p)?);
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

fn read_file(path: &Path, by_ns: &mut BTreeMap<String, Objects>) -> Result<(), RenderError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| RenderError::Read {
        path: shown.clone(),
        source,
    })?;
    for (doc, de) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value: serde_yaml::Value = serde::Deserialize::deserialize(de).map_err(|e| RenderError::Yaml {
            path: shown.clone(),
            doc: doc + 1,
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        add_object(&shown, doc + 1, value, by_ns)?;
    }
    Ok(())
}

fn add_object(
    path: &str,
    doc: usize,
    value: serde_yaml::Value,
    by_ns: &mut BTreeMap<String, Objects>,
) -> Result<(), RenderError> {
    let str_at = |v: &serde_yaml::Value, keys: &[&str]| -> Option<String> {
        keys.iter()
            .try_fold(v, |v, k| v.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let kind = str_at(&value, &["kind"]).ok_or_else(|| RenderError::Yaml {
        path: path.to_owned(),
        doc,
        message: "not a Kubernetes object (no kind)".into(),
    })?;
    if kind == "List" {
        if let Some(items) = value.get("items").and_then(|i| i.as_sequence()) {
            for item in items.clone() {
                add_object(path, doc, item, by_ns)?;
            }
        }
        return Ok(());
    }
    let api_version = str_at(&value, &["apiVersion"]).unwrap_or_default();
    let name = str_at(&value, &["metadata", "name"]).unwrap_or_default();
    let namespace = str_at(&value, &["metadata", "namespace"]).unwrap_or_else(|| "default".to_owned());
    let object_err = |message: String| RenderError::Object {
        path: path.to_owned(),
        kind: kind.clone(),
        name: format!("{namespace}/{name}"),
        message,
    };
    if name.is_empty() {
        return Err(object_err("metadata.name: is required".into()));
    }
    let expect_portcullis = || {
        if api_version == format!("{}/{}", portcullis_api::GROUP, portcullis_api::VERSION) {
            Ok(())
        } else {
            Err(object_err(format!(
                "apiVersion: {api_version:?} is not {}/{}",
                portcullis_api::GROUP,
                portcullis_api::VERSION
            )))
        }
    };
    if !matches!(kind.as_str(), "SecurityProfile" | "ApiRoute" | "Secret") {
        // Other objects (Namespaces, Deployments, Services...) often share the files: skip them.
        return Ok(());
    }
    let objects = by_ns.entry(namespace.clone()).or_default();
    match kind.as_str() {
        "SecurityProfile" => {
            expect_portcullis()?;
            let mut sp: SecurityProfile = typed(value).map_err(object_err)?;
            sp.metadata.namespace = Some(namespace.clone());
            objects.profiles.push(sp);
        }
        "ApiRoute" => {
            expect_portcullis()?;
            let mut ar: ApiRoute = typed(value).map_err(object_err)?;
            ar.metadata.namespace = Some(namespace.clone());
            objects.routes.push(ar);
        }
        "Secret" => {
            let mut secret: Secret = typed(value).map_err(object_err)?;
            secret.metadata.namespace = Some(namespace.clone());
            objects.secrets.push(secret);
        }
        _ => unreachable!("filtered above"),
    }
    Ok(())
}

/// Deserializes with the path of the offending field in the message (`spec.type: unknown
/// variant ...`). Secret values never appear: serde reports types and positions, not values.
fn typed<T: DeserializeOwned>(value: serde_yaml::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." { inner } else { format!("{path}: {inner}") }
    })
}
