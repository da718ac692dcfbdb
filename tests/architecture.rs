//! The library's layers import only downwards (see `src/lib.rs` and
//! `docs/ARCHITECTURE.md`): this test reads every `crate::` path in `src/`
//! and fails on one that names a layer above the file's own.

use std::path::{Path, PathBuf};

/// Top-level modules from the bottom layer up; a module may use its own
/// layer and the ones before it.
const LAYERS: [&str; 8] = [
    "error",
    "model",
    "io",
    "experiment",
    "engine",
    "network",
    "sweep",
    "cmd",
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|&m| m == module)
}

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

/// Every module named right after `crate::` in `text`, with its line number.
/// `use crate::{a, b}` groups are not used in this crate, and are refused.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '{')
                .collect();
            out.push((i + 1, name));
        }
    }
    out
}

#[test]
fn no_module_imports_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut checked = 0;
    let mut bad = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        let top = top.trim_end_matches(".rs");
        if top == "lib" || top == "main" {
            continue;
        }
        let own = rank(top).unwrap_or_else(|| {
            panic!("src/{top} is not in LAYERS: place it in a layer in tests/architecture.rs, src/lib.rs and docs/ARCHITECTURE.md")
        });
        let text = std::fs::read_to_string(file).unwrap();
        for (line, name) in crate_paths(&text) {
            checked += 1;
            match rank(&name) {
                Some(r) if r <= own => {}
                Some(_) => bad.push(format!("src/{}:{line}: {top} uses {name}", rel.display())),
                None => bad.push(format!(
                    "src/{}:{line}: crate::{name} is not a layer",
                    rel.display()
                )),
            }
        }
    }
    assert!(
        checked > 50,
        "found only {checked} crate:: paths: is src/ there?"
    );
    assert!(
        bad.is_empty(),
        "imports against the layer order:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_check_catches_an_upward_import() {
    let paths =
        crate_paths("use crate::engine::Engine;\nlet x = crate::cmd::run(); // crate::sweep\n");
    let names: Vec<&str> = paths.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["engine", "cmd"]);
    assert!(rank("cmd") > rank("model"));
}
