//! The CRDs under `crds/` are generated from the Rust types; this test fails when they drift.
//! Regenerate them with `PORTCULLIS_BLESS=1 cargo test -p portcullis-operator --test crds`.

use std::path::PathBuf;

fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds")
}

#[test]
fn committed_crds_match_the_rust_types() {
    let bless = std::env::var_os("PORTCULLIS_BLESS").is_some();
    let mut drifted = Vec::new();
    for (name, yaml) in portcullis_operator::crd_files() {
        let path = crds_dir().join(name);
        if bless {
            std::fs::write(&path, &yaml).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != yaml {
            drifted.push(name);
        }
    }
    assert!(
        drifted.is_empty(),
        "crds/{drifted:?} differ from the Rust types; regenerate with `PORTCULLIS_BLESS=1 cargo test -p portcullis-operator --test crds`"
    );
}

#[test]
fn crds_command_prints_the_committed_files() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis-operator"))
        .arg("crds")
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let files: String = ["securityprofile.yaml", "apiroute.yaml"]
        .iter()
        .map(|f| std::fs::read_to_string(crds_dir().join(f)).unwrap())
        .collect();
    assert_eq!(printed, files);
}

#[test]
fn crds_carry_short_names_printer_columns_and_cel_rules() {
    let sp = std::fs::read_to_string(crds_dir().join("securityprofile.yaml")).unwrap();
    let ar = std::fs::read_to_string(crds_dir().join("apiroute.yaml")).unwrap();
    for needle in [
        "- sp",
        "name: Type",
        "name: Ready",
        "name: Age",
        "x-kubernetes-validations",
        "subresources:",
    ] {
        assert!(sp.contains(needle), "SecurityProfile CRD lacks {needle}");
    }
    for needle in [
        "- ar",
        "name: Hosts",
        "name: Path",
        "name: Profiles",
        "exists_one",
        "has(self.port) != has(self.origin)",
    ] {
        assert!(ar.contains(needle), "ApiRoute CRD lacks {needle}");
    }
}
