//! The source keeps the layers `docs/architecture.md` states: every `crate::` path in `src/`
//! (outside test modules) names a module on the same layer or below, no two top-level modules
//! use each other, and no two files use each other (a module's own submodules aside: a folder's
//! `mod.rs` declares and re-exports them). The layer order is read from the document itself, so
//! the document cannot drift from the code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The layers, bottom up, from the document's "Layers, bottom up" line: groups of backticked
/// module names separated by `→`.
fn layers() -> BTreeMap<String, usize> {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).expect("reading the repository");
    let line = doc.lines().find(|l| l.starts_with("Layers, bottom up")).expect("the layers line");
    let (_, order) = line.split_once("):").expect("`Layers, bottom up (…): a → b` form");
    let mut layer = BTreeMap::new();
    for (level, group) in order.split('→').enumerate() {
        for name in group.split('`').skip(1).step_by(2) {
            layer.insert(name.to_string(), level);
        }
    }
    layer
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading the repository").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` → `a::b`; `src/a/mod.rs` → `a`; the binary's files are `cli`.
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(root().join("src")).expect("reading the repository").with_extension("");
    let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    match parts.as_slice() {
        [main] if main == "main" => "cli".into(),
        [lib] if lib == "lib" => "lib".into(),
        [dirs @ .., last] if last == "mod" => dirs.join("::"),
        all => all.join("::"),
    }
}

/// The code of a file without comments, string contents and its test module (by convention the
/// file's last item, after `#[cfg(test)]`).
fn code(file: &Path) -> String {
    let text = std::fs::read_to_string(file).expect("reading the repository");
    let text = match text.find("#[cfg(test)]\nmod ") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                out.push('"');
                let mut escaped = false;
                for c in chars.by_ref() {
                    if c == '"' && !escaped {
                        break;
                    }
                    escaped = c == '\\' && !escaped;
                }
                out.push('"');
            }
            _ => out.push(c),
        }
    }
    out
}

/// Every path a file names through `crate::` (`use` groups expanded) or `super::`, as module
/// paths (`pipeline::kafka::decode::KnownTexts`), relative ones resolved from `module`.
fn paths(code: &str, module: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        for (i, _) in code.match_indices(start) {
            if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b':') {
                continue;
            }
            let mut base: Vec<String> = if start == "crate::" {
                Vec::new()
            } else {
                let mut m: Vec<String> = module.split("::").map(String::from).collect();
                m.pop();
                m
            };
            let mut rest = &code[i + start.len()..];
            while let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
            }
            expand(rest, &base, &mut out);
        }
    }
    out
}

/// `a::{b::c, d}` after `base` → `base::a::b::c`, `base::a::d`.
fn expand(rest: &str, base: &[String], out: &mut Vec<String>) {
    let mut prefix: Vec<String> = base.to_vec();
    let mut s = rest;
    loop {
        if let Some(group) = s.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(group.len(), |(i, _)| i);
            let mut item_depth = 0;
            let mut item_start = 0;
            for (i, c) in group[..end].char_indices() {
                match c {
                    '{' => item_depth += 1,
                    '}' => item_depth -= 1,
                    ',' if item_depth == 0 => {
                        expand(group[item_start..i].trim(), &prefix, out);
                        item_start = i + 1;
                    }
                    _ => {}
                }
            }
            expand(group[item_start..end].trim(), &prefix, out);
            return;
        }
        let ident: String = s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if ident.is_empty() {
            break;
        }
        prefix.push(ident.clone());
        s = &s[ident.len()..];
        match s.strip_prefix("::") {
            Some(r) => s = r,
            None => break,
        }
    }
    if !prefix.is_empty() && prefix.first().is_some_and(|p| p != "self") {
        out.push(prefix.join("::"));
    }
}

/// The module a path lands in: the longest prefix that is a file's module.
fn target<'a>(path: &str, modules: &'a BTreeSet<String>) -> Option<&'a String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len()).rev().find_map(|n| modules.get(&parts[..n].join("::")))
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

#[test]
fn every_import_runs_down_the_documented_layers_and_nothing_imports_in_a_circle() {
    let layer = layers();
    let mut files = Vec::new();
    sources(&root().join("src"), &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    // `Error` and `Result` are re-exported at the crate root from `error`.
    let aliases = [("Error", "error"), ("Result", "error")];
    let mut edges: BTreeSet<(String, String)> = BTreeSet::new();
    let mut problems = Vec::new();
    for file in &files {
        let from = module_of(file);
        if from == "lib" {
            continue;
        }
        for path in paths(&code(file), &from) {
            let head = path.split("::").next().unwrap_or_default();
            let path = match aliases.iter().find(|(a, _)| *a == head) {
                Some((_, m)) => m.to_string(),
                None => path,
            };
            let Some(to) = target(&path, &modules) else { continue };
            if to == &from {
                continue;
            }
            edges.insert((from.clone(), to.clone()));
            let (a, b) = (top(&from), top(to));
            if a == b {
                continue;
            }
            match (layer.get(a), layer.get(b)) {
                (Some(la), Some(lb)) if la < lb => problems.push(format!("{from} → {to}: `{a}` is below `{b}`")),
                (None, _) => problems.push(format!("`{a}` ({}) is not in the layers line", file.display())),
                (_, None) => problems.push(format!("`{b}` (used by {from}) is not in the layers line")),
                _ => {}
            }
        }
    }
    // Cycles: between top-level modules, and between files — a module using its own submodules
    // (declared and re-exported by it) aside.
    let tops: BTreeSet<(String, String)> =
        edges.iter().map(|(a, b)| (top(a).to_string(), top(b).to_string())).filter(|(a, b)| a != b).collect();
    for (a, b) in &tops {
        if a < b && tops.contains(&(b.clone(), a.clone())) {
            problems.push(format!("`{a}` and `{b}` use each other"));
        }
    }
    let descendant = |a: &str, b: &str| b.starts_with(&format!("{a}::"));
    for (a, b) in &edges {
        if a < b && !descendant(a, b) && !descendant(b, a) && edges.contains(&(b.clone(), a.clone())) {
            problems.push(format!("{a} and {b} use each other"));
        }
    }
    let listed: Vec<&String> = layer.keys().filter(|m| !modules.iter().any(|x| top(x) == m.as_str())).collect();
    assert!(listed.is_empty(), "the layers line names modules that do not exist: {listed:?}");
    assert!(edges.len() > 100, "only {} imports found: is the parser broken?", edges.len());
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn the_parser_sees_groups_relative_paths_and_skips_comments() {
    let code = code_of("use crate::{a::{b, c::D}, e};\n// crate::hidden\nlet x = super::super::f::g();\n\"crate::s\";");
    let mut found = paths(&code, "m::n::o");
    found.sort();
    assert_eq!(found, ["a::b", "a::c::D", "e", "m::f::g"]);
}

fn code_of(text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("prodcat-layers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("reading the repository");
    let file = dir.join("x.rs");
    std::fs::write(&file, text).expect("reading the repository");
    let out = code(&file);
    let _ = std::fs::remove_dir_all(&dir);
    out
}
