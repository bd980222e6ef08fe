//! Running the real `portcullis-operator run` against the in-process fake API server.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use portcullis_fake_apiserver::FakeApiServer;
use serde_json::{Value, json};

pub const NS: &str = "prod";
pub const ROUTES: &str = "apiroutes.portcullis.dev";
pub const PROFILES: &str = "securityprofiles.portcullis.dev";
pub const INJECT: &str = "portcullis.dev/inject";

/// A running operator process; killed when dropped.
pub struct Operator {
    child: Child,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

impl Operator {
    /// Starts `portcullis-operator run` against the server whose kubeconfig is in `dir`.
    pub fn start(dir: &tempfile::TempDir, identity: &str, extra: &[&str]) -> Self {
        let admin = free_port();
        let log = dir.path().join(format!("{identity}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_portcullis-operator"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(dir.path().join("kubeconfig"))
            .args(["--admin", &admin.to_string()])
            .args(["--lease-namespace", "portcullis-system", "--identity", identity])
            .args(["--lease-duration", "3", "--lease-renew", "1"])
            .args(extra)
            .env("RUST_LOG", "info,portcullis_operator=debug")
            .env_remove("KUBECONFIG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, admin, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status (bounded wait).
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "operator did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "operator did not exit\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no graceful shutdown, the Lease is not released.
    pub fn terminate_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `GET path` on the admin port: (status code, body). `None` when not listening.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect_timeout(&self.admin, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let code = response.split(' ').nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((code, body))
    }

    /// The value of one metric sample (`name{labels}` exactly as exposed).
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
    }
}

/// Polls `check` every 50 ms for up to `limit`; panics with `what` (and the logs) otherwise.
pub async fn wait_until<T>(limit: Duration, what: &str, op: &Operator, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}\n--- operator log ---\n{}",
            op.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn server(dir: &tempfile::TempDir) -> FakeApiServer {
    let server = FakeApiServer::builder()
        .bookmark_interval(Duration::from_millis(500))
        .start()
        .await
        .unwrap();
    server.write_kubeconfig(&dir.path().join("kubeconfig"), NS).unwrap();
    server
}

pub fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

pub fn basic_secret(name: &str, user: &str, password: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "type": "kubernetes.io/basic-auth",
        "data": {"username": b64(user), "password": b64(password)},
    })
}

pub fn basic_profile(name: &str, secret: &str) -> Value {
    json!({
        "apiVersion": "portcullis.dev/v1alpha1", "kind": "SecurityProfile",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"type": "Basic", "basic": {"secretRef": {"name": secret}}},
    })
}

pub fn route(name: &str, app: &str, profiles: &[&str]) -> Value {
    json!({
        "apiVersion": "portcullis.dev/v1alpha1", "kind": "ApiRoute",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "workloadSelector": {"matchLabels": {"app": app}},
            "pathPrefix": format!("/{name}"),
            "profiles": profiles.iter().map(|p| json!({"name": p})).collect::<Vec<_>>(),
            "backend": {"port": 8080},
        },
    })
}

pub fn pod(name: &str, app: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS,
                     "labels": {"app": app, INJECT: "true", "pod-template-hash": name}},
        "spec": {"containers": [{"name": "app", "image": "app"}]},
    })
}

/// The group name of pods labelled `app=<app>` (what the operator names their objects):
/// `portcullis-` and 8 hex digits of SHA-256 over the sorted `k=v\n` group labels.
pub fn group_of(app: &str) -> String {
    use sha2::{Digest, Sha256};
    let labels = BTreeMap::from([("app", app), (INJECT, "true")]);
    let mut hasher = Sha256::new();
    for (k, v) in labels {
        hasher.update(format!("{k}={v}\n"));
    }
    format!("portcullis-{}", hex::encode(&hasher.finalize()[..4]))
}

/// `config.json` of a ConfigMap.
pub fn config_of(cm: &Value) -> Value {
    serde_json::from_str(cm["data"]["config.json"].as_str().unwrap()).unwrap()
}

/// `secrets.json` of a Secret, decoded.
pub fn secrets_of(secret: &Value) -> String {
    let encoded = secret["data"]["secrets.json"].as_str().unwrap();
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded).unwrap()).unwrap()
}

pub fn route_names(config: &Value) -> Vec<String> {
    config["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The condition of `type_` in an object's status.
pub fn condition(obj: &Value, type_: &str) -> Option<Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

pub fn rv(obj: &Value) -> String {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Panics unless `operator/rbac.yaml` allows every request the operator made.
pub fn assert_rbac_allows(requests: &[portcullis_fake_apiserver::RecordedRequest]) {
    use portcullis_fake_apiserver::resources::{Target, parse_path};
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/rbac.yaml")).unwrap();
    let role: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(role["kind"], "ClusterRole");
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    // (apiGroups, resources, resourceNames, verbs)
    type Rule = (Vec<String>, Vec<String>, Vec<String>, Vec<String>);
    let rules: Vec<Rule> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                strings(&r["apiGroups"]),
                strings(&r["resources"]),
                strings(&r["resourceNames"]),
                strings(&r["verbs"]),
            )
        })
        .collect();
    let mut used = std::collections::BTreeSet::new();
    for req in requests {
        let watch = req.query.split('&').any(|kv| kv == "watch=1" || kv == "watch=true");
        let (group, resource, name, verb) = match parse_path(&req.path) {
            Some(Target::Collection { group, plural, .. }) => {
                let verb = match req.method.as_str() {
                    "GET" if watch => "watch",
                    "GET" => "list",
                    "POST" => "create",
                    "DELETE" => "deletecollection",
                    other => panic!("unexpected {other} {}", req.path),
                };
                (group.to_owned(), plural.to_owned(), None, verb)
            }
            Some(Target::Object {
                group,
                plural,
                name,
                subresource,
                ..
            }) => {
                let verb = match req.method.as_str() {
                    "GET" => "get",
                    "PUT" => "update",
                    "PATCH" => "patch",
                    "DELETE" => "delete",
                    other => panic!("unexpected {other} {}", req.path),
                };
                let resource = match subresource {
                    Some(sub) => format!("{plural}/{sub}"),
                    None => plural.to_owned(),
                };
                (group.to_owned(), resource, Some(name.to_owned()), verb)
            }
            _ => continue,
        };
        let allowed = rules.iter().any(|(groups, resources, names, verbs)| {
            groups.contains(&group)
                && resources.contains(&resource)
                && verbs.iter().any(|v| v == verb)
                && (names.is_empty() || name.as_ref().is_some_and(|n| names.contains(n)))
        });
        assert!(
            allowed,
            "rbac.yaml does not allow {verb} {group}/{resource} {name:?} ({req:?})"
        );
        used.insert(format!("{group}/{resource}:{verb}"));
    }
    eprintln!("RBAC used: {used:?}");
}

/// Now, as a Lease's MicroTime.
pub fn lease_now() -> Value {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    serde_json::to_value(MicroTime(k8s_openapi::jiff::Timestamp::now())).unwrap()
}
