//! The sidecar's source is layered (see `sidecar/README.md`): a module may use the layers
//! below it, never one above. This test reads every file under `src/` and checks each
//! `crate::<layer>` reference outside comments against the list below, so an import circle
//! cannot come back unnoticed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each top-level module of the sidecar and the ones it may use. Keep in step with
/// `sidecar/README.md` and the crate docs in `src/lib.rs`.
const LAYERS: &[(&str, &[&str])] = &[
    ("base", &[]),
    ("telemetry", &["base"]),
    ("identity", &["base"]),
    ("listen", &["base"]),
    ("upstream", &["base", "telemetry", "identity"]),
    ("ops", &["base", "telemetry", "identity", "listen", "upstream"]),
    (
        "request",
        &["base", "telemetry", "identity", "listen", "upstream", "ops"],
    ),
    (
        "server",
        &[
            "base",
            "telemetry",
            "identity",
            "listen",
            "upstream",
            "ops",
            "request",
            "cli",
        ],
    ),
    ("cli", &[]),
    ("demo", &["base"]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/upstream/pool.rs` → `upstream`); `None` for
/// the crate roots, which may name every module.
fn layer_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    let name = first.trim_end_matches(".rs").to_owned();
    (name != "lib" && name != "main").then_some(name)
}

/// The modules named right after `crate::` in `line` (`crate::a::b`, `crate::{a, b::c}`).
fn crate_refs(line: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

/// The code of a line, without a trailing `//` comment (doc links may point anywhere).
fn code(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with("//") {
        return "";
    }
    match line.find("//") {
        // `https://` inside a string is not a comment.
        Some(i) if !line[..i].ends_with(':') => &line[..i],
        _ => line,
    }
}

#[test]
fn no_module_uses_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(
        files.len() > 10,
        "found only {} files under {}",
        files.len(),
        src.display()
    );
    let known: BTreeSet<&str> = LAYERS.iter().map(|(name, _)| *name).collect();
    let mut problems = Vec::new();
    for file in &files {
        let Some(layer) = layer_of(&src, file) else {
            continue;
        };
        let Some((_, allowed)) = LAYERS.iter().find(|(name, _)| *name == layer) else {
            problems.push(format!("{}: module {layer:?} is in no layer", file.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for used in crate_refs(code(line)) {
                if used == layer || allowed.contains(&used.as_str()) {
                    continue;
                }
                let why = if known.contains(used.as_str()) {
                    "a layer it may not use"
                } else {
                    "a module in no layer"
                };
                problems.push(format!(
                    "{}:{}: {layer} uses crate::{used}, {why}",
                    file.display(),
                    n + 1
                ));
            }
        }
    }
    assert!(problems.is_empty(), "layering broken:\n{}", problems.join("\n"));
}

#[test]
fn references_are_found_in_every_form() {
    assert_eq!(crate_refs("use crate::base::body::ProxyBody;"), ["base"]);
    assert_eq!(
        crate_refs("use crate::{ops::admin, telemetry::metrics};"),
        ["ops", "telemetry"]
    );
    assert_eq!(
        crate_refs("let x = crate::request::handle(a, crate::ops::x);"),
        ["request", "ops"]
    );
    assert_eq!(code("/// [`crate::request`]"), "");
    assert_eq!(code("use crate::base; // crate::request"), "use crate::base; ");
}
