//! The controller's modules form layers (the list in `src/controller/mod.rs`'s module doc,
//! bottom to top): a module may use only modules of the layers below its own. This test reads
//! the controller's sources, finds every path that names a sibling module — `use super::x`,
//! `use super::{x, y::z}`, `crate::controller::x::…` anywhere in the code (comments and
//! string literals aside; `super` counted from where it is written, so a test module's
//! `use super::*` is its own parent) — and fails on one that names a module of the same or a
//! higher layer, so the old import circle (`rollout` → `reconcile` → `rollout`, `objects` →
//! `plan` → `objects`, …) cannot come back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    Sep,
    Punct(char),
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: usize,
}

/// Where the quote of a raw string literal (`r"…"`, `r#"…"#`, `br"…"`) starting at `c[i]` is,
/// and its number of `#`s.
fn raw_string_at(c: &[char], i: usize) -> Option<(usize, usize)> {
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let after_prefix = match (at(i), at(i + 1)) {
        ('r', _) => i + 1,
        ('b', 'r') => i + 2,
        _ => return None,
    };
    if i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_') {
        return None;
    }
    let mut j = after_prefix;
    while at(j) == '#' {
        j += 1;
    }
    (at(j) == '"').then_some((j, j - after_prefix))
}

/// Identifiers, `::` and punctuation of Rust source, without comments, string literals and
/// character literals (enough to find paths; numbers come out as identifiers, harmlessly).
fn tokens(src: &str) -> Vec<Token> {
    let c: Vec<char> = src.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let (mut i, mut line, mut out) = (0, 1, Vec::new());
    // Skips a quoted literal starting at `c[i] == '"'`; `raw`: no escapes, ends with `hashes`.
    let skip_string = |mut i: usize, raw: bool, hashes: usize, line: &mut usize| {
        i += 1;
        while i < c.len() {
            match c[i] {
                '\\' if !raw => i += 2,
                '"' if (0..hashes).all(|h| at(i + 1 + h) == '#') => return i + 1 + hashes,
                ch => {
                    if ch == '\n' {
                        *line += 1;
                    }
                    i += 1;
                }
            }
        }
        i
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_string(i, false, 0, &mut line);
        } else if let Some((quote, hashes)) = raw_string_at(&c, i) {
            i = skip_string(quote, true, hashes, &mut line);
        } else if ch == '\'' {
            if at(i + 1) == '\\' {
                // An escaped character literal: up to the closing quote.
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                // A lifetime or a label.
                i += 1;
            }
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Ident(c[start..i].iter().collect()),
                line,
            });
        } else if ch == ':' && at(i + 1) == ':' {
            out.push(Token { tok: Tok::Sep, line });
            i += 2;
        } else {
            out.push(Token {
                tok: Tok::Punct(ch),
                line,
            });
            i += 1;
        }
    }
    out
}

fn is_ident(t: Option<&Token>, name: &str) -> bool {
    matches!(t, Some(Token { tok: Tok::Ident(s), .. }) if s == name)
}

fn is(t: Option<&Token>, want: &Tok) -> bool {
    t.is_some_and(|t| &t.tok == want)
}

/// What a path names right below `crate::controller`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Named {
    Item(String),
    /// `*`: everything, which hides what is used.
    Glob,
}

/// The first segments of the path(s) starting at `toks[j]`: `x`, `*`, or each item of a
/// `{…}` group.
fn heads(toks: &[Token], j: usize) -> Vec<Named> {
    match toks.get(j).map(|t| &t.tok) {
        Some(Tok::Ident(name)) => vec![Named::Item(name.clone())],
        Some(Tok::Punct('*')) => vec![Named::Glob],
        Some(Tok::Punct('{')) => {
            let (mut out, mut depth, mut expect) = (Vec::new(), 0, true);
            for t in &toks[j..] {
                match &t.tok {
                    Tok::Punct('{') => {
                        depth += 1;
                        expect = depth == 1;
                    }
                    Tok::Punct('}') => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Tok::Punct(',') if depth == 1 => expect = true,
                    Tok::Ident(name) if depth == 1 && expect => {
                        out.push(Named::Item(name.clone()));
                        expect = false;
                    }
                    Tok::Punct('*') if depth == 1 && expect => {
                        out.push(Named::Glob);
                        expect = false;
                    }
                    _ => expect = false,
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// Every `(line, name)` that the file at `rel` (relative to `src/controller/`) names right
/// below `crate::controller`.
fn references(rel: &Path, src: &str) -> Vec<(usize, Named)> {
    let toks = tokens(src);
    // How many `super`s lead from the file's top level to `controller`.
    let components = rel.components().count();
    let base = if rel.file_name().is_some_and(|f| f == "mod.rs") {
        components - 1
    } else {
        components
    };
    let (mut out, mut depth, mut inline_mods) = (Vec::new(), 0usize, Vec::<usize>::new());
    let mut opening_mod = false;
    for (k, t) in toks.iter().enumerate() {
        match &t.tok {
            Tok::Punct('{') => {
                depth += 1;
                if opening_mod {
                    inline_mods.push(depth);
                    opening_mod = false;
                }
            }
            Tok::Punct('}') => {
                if inline_mods.last() == Some(&depth) {
                    inline_mods.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Ident(word) if word == "mod" => {
                opening_mod = matches!(toks.get(k + 1), Some(Token { tok: Tok::Ident(_), .. }))
                    && is(toks.get(k + 2), &Tok::Punct('{'));
            }
            Tok::Ident(word)
                if word == "crate" && is(toks.get(k + 1), &Tok::Sep) && is_ident(toks.get(k + 2), "controller") =>
            {
                if is(toks.get(k + 3), &Tok::Sep) {
                    out.extend(heads(&toks, k + 4).into_iter().map(|n| (t.line, n)));
                } else {
                    // `use crate::controller;` (or `as …`): everything, by another name.
                    out.push((t.line, Named::Glob));
                }
            }
            Tok::Ident(word) if word == "super" && !(k > 0 && is(toks.get(k - 1), &Tok::Sep)) => {
                let (mut j, mut supers) = (k, 0);
                while is_ident(toks.get(j), "super") && is(toks.get(j + 1), &Tok::Sep) {
                    supers += 1;
                    j += 2;
                }
                if supers > 0 && supers == base + inline_mods.len() {
                    out.extend(heads(&toks, j).into_iter().map(|n| (t.line, n)));
                }
            }
            _ => {}
        }
    }
    out
}

/// The layers of `mod.rs`'s doc: lines `//! N. **`a`, `b`**: …`, numbered 0, 1, … in order.
fn layers(mod_rs: &str) -> Result<BTreeMap<String, usize>, String> {
    let mut out = BTreeMap::new();
    let mut next = 0;
    for line in mod_rs.lines() {
        let Some(doc) = line.strip_prefix("//!") else { continue };
        let doc = doc.trim();
        let Some((number, rest)) = doc.split_once(". **") else {
            continue;
        };
        let Ok(number) = number.parse::<usize>() else { continue };
        if number != next {
            return Err(format!("layer {number} listed where layer {next} was expected"));
        }
        let (names, _) = rest
            .split_once("**")
            .ok_or_else(|| format!("layer {number}: no closing `**`"))?;
        for name in names.split(',') {
            let name = name.trim().trim_matches('`');
            if out.insert(name.to_owned(), number).is_some() {
                return Err(format!("module `{name}` is listed twice"));
            }
        }
        next += 1;
    }
    if out.is_empty() {
        return Err("no layer list (`//! 0. **`module`, …**: …`) in the module doc".into());
    }
    Ok(out)
}

/// `mod x;` declarations and `pub use x::{…}` re-exports (name → module) of `mod.rs`.
fn declarations(mod_rs: &str) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let toks = tokens(mod_rs);
    let (mut mods, mut exports) = (BTreeSet::new(), BTreeMap::new());
    for (k, t) in toks.iter().enumerate() {
        if is_ident(Some(t), "mod")
            && is(toks.get(k + 2), &Tok::Punct(';'))
            && let Some(Token {
                tok: Tok::Ident(name), ..
            }) = toks.get(k + 1)
        {
            mods.insert(name.clone());
        }
        if is_ident(Some(t), "use") {
            let Some(Token {
                tok: Tok::Ident(module),
                ..
            }) = toks.get(k + 1)
            else {
                continue;
            };
            for u in toks[k + 2..].iter().take_while(|u| u.tok != Tok::Punct(';')) {
                if let Tok::Ident(name) = &u.tok {
                    exports.insert(name.clone(), module.clone());
                }
            }
        }
    }
    (mods, exports)
}

/// Every layering problem of `files` (path relative to `src/controller/`, source), given
/// `mod.rs`.
fn problems(mod_rs: &str, files: &[(PathBuf, String)]) -> Vec<String> {
    let layer_of = match layers(mod_rs) {
        Ok(l) => l,
        Err(e) => return vec![format!("mod.rs: {e}")],
    };
    let (_, exports) = declarations(mod_rs);
    let mut out = Vec::new();
    for (rel, src) in files {
        let module = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|c| c.trim_end_matches(".rs").to_owned())
            .unwrap_or_default();
        let Some(&own) = layer_of.get(&module) else {
            out.push(format!(
                "{}: module `{module}` is not in mod.rs's layer list",
                rel.display()
            ));
            continue;
        };
        for (line, named) in references(rel, src) {
            let target = match &named {
                Named::Glob => {
                    out.push(format!(
                        "{}:{line}: `{module}` imports all of `controller` (name the modules it uses)",
                        rel.display()
                    ));
                    continue;
                }
                Named::Item(name) if name == "self" => continue,
                Named::Item(name) if layer_of.contains_key(name) => name.clone(),
                Named::Item(name) => match exports.get(name) {
                    Some(m) => m.clone(),
                    None => {
                        out.push(format!(
                            "{}:{line}: `{module}` names `controller::{name}`, which is neither a listed module \
                             nor a re-export of mod.rs",
                            rel.display()
                        ));
                        continue;
                    }
                },
            };
            let theirs = layer_of[&target];
            if target != module && theirs >= own {
                out.push(format!(
                    "{}:{line}: `{module}` (layer {own}) uses `{target}` (layer {theirs}); a module may use only \
                     modules of lower layers",
                    rel.display()
                ));
            }
        }
    }
    out
}

fn controller_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/controller")
}

/// Every `.rs` file under `dir`, relative to `root`.
fn rust_files(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let src = std::fs::read_to_string(&path).unwrap();
            out.push((path.strip_prefix(root).unwrap().to_owned(), src));
        }
    }
}

#[test]
fn controller_modules_use_only_lower_layers() {
    let dir = controller_dir();
    let mod_rs = std::fs::read_to_string(dir.join("mod.rs")).unwrap();
    let mut files = Vec::new();
    rust_files(&dir, &dir, &mut files);
    files.retain(|(rel, _)| rel != Path::new("mod.rs"));

    let mut found = problems(&mod_rs, &files);
    // The list and the declarations agree, so no module escapes the check.
    let listed: BTreeSet<String> = layers(&mod_rs).unwrap_or_default().into_keys().collect();
    let (declared, _) = declarations(&mod_rs);
    for m in listed.symmetric_difference(&declared) {
        found.push(format!(
            "mod.rs: module `{m}` is declared or listed in the layers, not both"
        ));
    }
    for m in &declared {
        if !files.iter().any(|(rel, _)| {
            rel.components()
                .next()
                .is_some_and(|c| c.as_os_str() == format!("{m}.rs").as_str() || c.as_os_str() == m.as_str())
        }) {
            found.push(format!("mod.rs: module `{m}` has no source file"));
        }
    }
    assert!(found.is_empty(), "controller layering:\n{}", found.join("\n"));
}

/// The check itself: on the imports of the controller before its modules were layered (the
/// circle), and on what it must not count.
#[test]
fn the_check_catches_the_old_circle_and_nothing_else() {
    let mod_rs = std::fs::read_to_string(controller_dir().join("mod.rs")).unwrap();
    let file = |rel: &str, src: &str| (PathBuf::from(rel), src.to_owned());
    let old = [
        file(
            "objects.rs",
            "use super::group::MANAGED_BY;\nuse super::plan::data_digest;\n",
        ),
        file(
            "plan.rs",
            "use super::objects::OwnedSecret;\nuse super::status::{self, DesiredStatus};\n",
        ),
        file("status.rs", "use super::rollout::Rollout;\n"),
        file(
            "rollout.rs",
            "use super::plan::{GroupPlan, Plan};\nuse super::reconcile::{Context, known_namespaces};\n",
        ),
        file(
            "reconcile.rs",
            "use super::rollout::{self, Sidecars};\nuse super::status::{self, DesiredStatus};\n",
        ),
    ];
    let found = problems(&mod_rs, &old);
    for (module, uses) in [("objects", "plan"), ("status", "rollout"), ("rollout", "reconcile")] {
        assert!(
            found
                .iter()
                .any(|p| p.contains(&format!("`{module}` (layer")) && p.contains(&format!("uses `{uses}`"))),
            "{module} -> {uses} not caught: {found:#?}"
        );
    }
    assert_eq!(found.len(), 3, "{found:#?}");

    // Groups, inline paths, `crate::controller` paths and re-exports count; a module of the
    // same layer is refused too.
    let sneaky = [
        file("status.rs", "use super::{group::X, objects::{Y, Z}};\n"),
        file("plan.rs", "fn f() { crate::controller::rollout::fill(); }\n"),
        file("context.rs", "use crate::controller::{Metrics, run};\n"),
        file("write.rs", "use super::*;\n"),
        file("rollout/tests.rs", "use super::super::context::Context;\n"),
        file("extra.rs", "\n"),
    ];
    let found = problems(&mod_rs, &sneaky);
    let expect = [
        "status.rs:1: `status` (layer 1) uses `objects`",
        "plan.rs:1: `plan` (layer 2) uses `rollout`",
        "context.rs:1: `context` (layer 4) uses `runtime`",
        "write.rs:1: `write` imports all",
        "rollout/tests.rs:1: `rollout` (layer 3) uses `context`",
        "extra.rs: module `extra` is not in",
    ];
    for e in expect {
        assert!(found.iter().any(|p| p.starts_with(e)), "{e:?} not in {found:#?}");
    }
    assert_eq!(found.len(), expect.len(), "{found:#?}");

    // Not counted: a test module's own parent, comments, strings, `pub(super)`, paths that
    // stay inside the module.
    let innocent = [
        file(
            "status.rs",
            "//! see [`super::rollout`]\npub(super) fn f() {}\n/* super::reconcile::x */\n\
             const S: &str = \"super::reconcile\";\nconst R: &str = r#\"crate::controller::runtime\"#;\n\
             const C: char = '\"'; fn g<'a>(_: &'a str) {}\n\
             #[cfg(test)]\nmod tests {\n    use super::*;\n    use super::wanted::X;\n}\n",
        ),
        file(
            "plan/tests.rs",
            "use super::*;\nuse crate::controller::group::INJECT_LABEL;\n",
        ),
    ];
    let found = problems(&mod_rs, &innocent);
    assert!(found.is_empty(), "{found:#?}");
}
