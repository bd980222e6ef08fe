//! `portcullis-operator render`, run as a real binary: the examples compile, and every bad
//! input exits non-zero with a message naming the object and the field, leaving the output
//! directory as it was.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn render(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis-operator"))
        .arg("render")
        .args(args)
        .output()
        .expect("run portcullis-operator")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn examples_render_into_config_and_secrets() {
    let out_dir = tempfile::tempdir().unwrap();
    let ex = examples();
    let out = render(&[
        "-f",
        ex.to_str().unwrap(),
        "--out",
        out_dir.path().to_str().unwrap(),
        "--org-allowance",
        "10",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The sign-in example's route has neither sslOnly nor tls: said, as admission says it.
    assert!(
        stderr(&out).contains(
            "warning: ApiRoute \"staff-reports\": SecurityProfile \"staff\" signs people in, but the route has neither"
        ),
        "{}",
        stderr(&out)
    );
    // The grants example keeps its grants per sidecar: said too.
    assert!(
        stderr(&out).contains(
            "warning: SecurityProfile \"grants\": spec.oauth2.builtin.delegation without a shared limits store"
        ),
        "{}",
        stderr(&out)
    );
    let loaded = portcullis_config::load_dir(out_dir.path()).expect("a valid sidecar configuration");
    assert_eq!(loaded.config.namespace, "demo");
    assert_eq!(loaded.config.org_allowance, Some(10));
    let routes: Vec<_> = loaded.config.routes.iter().map(|r| r.name.as_str()).collect();
    for want in [
        "public",
        "finance",
        "partner-api",
        "reports",
        "ledger",
        "settlements",
        "inventory",
        "grants-api",
    ] {
        assert!(routes.contains(&want), "route {want} missing from {routes:?}");
    }
    // Passwords and keys are in secrets.json only.
    let config = std::fs::read_to_string(out_dir.path().join("config.json")).unwrap();
    let secrets = std::fs::read_to_string(out_dir.path().join("secrets.json")).unwrap();
    for secret in [
        "wonderland",
        "qvxkmw57pec7",
        "this-is-an-example-shared-secret",
        "replace-with-a-long-random-owner-credential",
        "PRIVATE KEY",
    ] {
        assert!(!config.contains(secret), "{secret} leaked into config.json");
        assert!(secrets.contains(secret), "{secret} missing from secrets.json");
    }
}

#[test]
fn each_example_file_renders_alone() {
    let mut checked = 0;
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        // gateway.yaml reuses the Basic profile of basic.yaml.
        if !text.contains("kind: ApiRoute") || path.ends_with("gateway.yaml") {
            continue;
        }
        let out_dir = tempfile::tempdir().unwrap();
        let out = render(&["-f", path.to_str().unwrap(), "--out", out_dir.path().to_str().unwrap()]);
        assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
        checked += 1;
    }
    assert!(checked >= 6, "expected an example per profile type, checked {checked}");
}

#[test]
fn no_sign_in_warning_behind_a_trusted_proxy() {
    let out_dir = tempfile::tempdir().unwrap();
    let ex = examples();
    let out = render(&[
        "-f",
        ex.to_str().unwrap(),
        "--out",
        out_dir.path().to_str().unwrap(),
        "--trusted-proxies",
        "10.0.0.0/8",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("signs people in"), "{}", stderr(&out));
}

#[test]
fn workload_labels_select_routes() {
    let ex = examples();
    let out_dir = tempfile::tempdir().unwrap();
    let out = render(&[
        "-f",
        ex.to_str().unwrap(),
        "--out",
        out_dir.path().to_str().unwrap(),
        "--workload-labels",
        "app=other",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let loaded = portcullis_config::load_dir(out_dir.path()).unwrap();
    assert!(loaded.config.routes.is_empty());
    assert!(
        !std::fs::read_to_string(out_dir.path().join("secrets.json"))
            .unwrap()
            .contains("wonderland")
    );

    let out = render(&[
        "-f",
        ex.to_str().unwrap(),
        "--out",
        "/tmp/x",
        "--workload-labels",
        "novalue",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--workload-labels"));
}

/// Writes the examples plus `extra` (replacing text `from` with `to` in `file` when given)
/// into a temporary input directory, renders into an output directory holding a sentinel,
/// and returns the error. Panics if render succeeds or touches the output directory.
fn render_invalid(file: &str, from: &str, to: &str) -> String {
    let input = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        let mut text = std::fs::read_to_string(&path).unwrap();
        if path.file_name().unwrap() == file {
            assert!(text.contains(from), "{file} lacks {from:?}");
            text = text.replacen(from, to, 1);
        }
        std::fs::write(input.path().join(path.file_name().unwrap()), text).unwrap();
    }
    let out_dir = tempfile::tempdir().unwrap();
    std::fs::write(out_dir.path().join("config.json"), "previous good config").unwrap();
    let out = render(&[
        "-f",
        input.path().to_str().unwrap(),
        "--out",
        out_dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "render accepted {file} with {to:?}");
    assert_unchanged(out_dir.path());
    stderr(&out)
}

fn assert_unchanged(dir: &Path) {
    let names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["config.json"], "render wrote into the output directory");
    assert_eq!(
        std::fs::read_to_string(dir.join("config.json")).unwrap(),
        "previous good config"
    );
}

#[test]
fn unknown_profile() {
    let err = render_invalid(
        "anonymous.yaml",
        "profiles: [{name: public}]",
        "profiles: [{name: publik}]",
    );
    assert!(
        err.contains(
            "ApiRoute demo/public: spec.profiles[0].name: SecurityProfile \"publik\" not found in namespace demo"
        ),
        "{err}"
    );
}

#[test]
fn missing_secret() {
    let err = render_invalid(
        "basic.yaml",
        "secretRef: {name: payroll-user}",
        "secretRef: {name: payroll-usr}",
    );
    assert!(
        err.contains("SecurityProfile demo/payroll: spec.basic.secretRef.name: Secret \"payroll-usr\" not found"),
        "{err}"
    );
    assert!(err.contains("ApiRoute demo/finance: spec.profiles[1].name"), "{err}");
}

#[test]
fn wrong_secret_type() {
    let err = render_invalid(
        "basic.yaml",
        "name: accounting-user\n  namespace: demo\ntype: kubernetes.io/basic-auth",
        "name: accounting-user\n  namespace: demo\ntype: Opaque",
    );
    assert!(
        err.contains("SecurityProfile demo/accounting: spec.basic.secretRef.name: Secret \"accounting-user\" has type Opaque, expected kubernetes.io/basic-auth"),
        "{err}"
    );
}

#[test]
fn bad_cidr() {
    let err = render_invalid("basic.yaml", "cidr: 10.20.0.0/16", "cidr: 10.20.0.0/33");
    assert!(
        err.contains(
            "SecurityProfile demo/accounting: spec.trustedIpRanges[1].cidr: \"10.20.0.0/33\" is not a CIDR block"
        ),
        "{err}"
    );
}

#[test]
fn from_greater_than_to() {
    let err = render_invalid("basic.yaml", "from: 192.168.1.10", "from: 192.168.1.99");
    assert!(
        err.contains(
            "SecurityProfile demo/payroll: spec.trustedIpRanges[0].from: 192.168.1.99 is greater than to (192.168.1.50)"
        ),
        "{err}"
    );
}

#[test]
fn unknown_enum() {
    let err = render_invalid("anonymous.yaml", "type: Anonymous", "type: Anonymus");
    assert!(
        err.contains("SecurityProfile demo/public: spec.type: unknown variant `Anonymus`"),
        "{err}"
    );
    let err = render_invalid("apikey.yaml", "algorithm: MD5", "algorithm: MD4");
    assert!(
        err.contains("SecurityProfile demo/partners: spec.apiKey.signature.algorithm: unknown variant `MD4`"),
        "{err}"
    );
}

#[test]
fn mixed_profile_types() {
    let err = render_invalid(
        "anonymous.yaml",
        "profiles: [{name: public}]",
        "profiles: [{name: public}, {name: accounting}]",
    );
    assert!(
        err.contains("ApiRoute demo/public: spec.profiles[1].name: cannot mix Anonymous and Basic profiles"),
        "{err}"
    );
}

#[test]
fn wrong_api_version_and_missing_input() {
    let err = render_invalid(
        "oauth2.yaml",
        "apiVersion: portcullis.dev/v1alpha1",
        "apiVersion: portcullis.dev/v9",
    );
    assert!(
        err.contains("SecurityProfile demo/reports-readers: apiVersion: \"portcullis.dev/v9\""),
        "{err}"
    );

    let out = render(&["-f", "/nonexistent/portcullis.yaml", "--out", "/tmp/never"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot read /nonexistent/portcullis.yaml"));
}

#[test]
fn the_generation_is_keyed_by_the_generation_key_file_else_random() {
    let dir = tempfile::tempdir().unwrap();
    let (key, other) = (dir.path().join("key"), dir.path().join("other"));
    std::fs::write(&key, [7u8; 32]).unwrap();
    std::fs::write(&other, [8u8; 32]).unwrap();
    let basic = examples().join("basic.yaml");
    let generation = |key: Option<&Path>| {
        let out_dir = tempfile::tempdir().unwrap();
        let mut args = vec!["-f", basic.to_str().unwrap(), "--out", out_dir.path().to_str().unwrap()];
        if let Some(key) = key {
            args.extend(["--generation-key-file", key.to_str().unwrap()]);
        }
        let out = render(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        let loaded = portcullis_config::load_dir(out_dir.path()).unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            stdout.contains(&format!("generation {}", loaded.config.generation)),
            "{stdout}"
        );
        loaded.config.generation
    };
    let keyed = generation(Some(&key));
    assert_eq!(keyed.len(), 16);
    assert_eq!(
        generation(Some(&key)),
        keyed,
        "the same input and key: the same generation"
    );
    assert_ne!(generation(Some(&other)), keyed, "another key: another generation");
    assert_ne!(
        generation(None),
        generation(None),
        "no key file: a new random key per run"
    );

    // A key file too short to be a key is refused, and nothing is written.
    std::fs::write(&key, b"secret").unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = render(&[
        "-f",
        basic.to_str().unwrap(),
        "--out",
        out_dir.path().to_str().unwrap(),
        "--generation-key-file",
        key.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("a generation key needs at least 32 bytes, this one has 6"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 0);
}

/// A quota is counted only in a shared limits store: refused unless `--with-limits-store`
/// says the sidecar will have one.
#[test]
fn a_quota_needs_with_limits_store() {
    let input = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(examples().join("anonymous.yaml"))
        .unwrap()
        .replacen(
            "requestsPerMinute: 5",
            "requestsPerMinute: 5\n    per: Consumer\n    quota: {requests: 1000, period: Day}",
            1,
        );
    assert!(text.contains("quota"));
    std::fs::write(input.path().join("anonymous.yaml"), text).unwrap();

    let out_dir = tempfile::tempdir().unwrap();
    let args = [
        "-f",
        input.path().to_str().unwrap(),
        "--out",
        out_dir.path().to_str().unwrap(),
    ];
    let out = render(&args);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("SecurityProfile demo/public: spec.rateLimit.quota: SecurityProfile demo/public sets a quota"),
        "{err}"
    );
    assert!(err.contains("sidecar.limitsStore.url"), "{err}");
    assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 0);

    let out = render(&[&args[..], &["--with-limits-store"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let loaded = portcullis_config::load_dir(out_dir.path()).unwrap();
    let public = &loaded.config.profiles[0];
    assert_eq!(public.rate_limit_per, portcullis_config::LimitPer::Consumer);
    assert_eq!(
        public.quota,
        Some(portcullis_config::Quota {
            requests: 1000,
            period: portcullis_config::QuotaPeriod::Day
        })
    );
}
