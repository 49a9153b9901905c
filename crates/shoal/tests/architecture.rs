//! ARCHITECTURE.md stays the map of the code as it is: every crate has a section, and every
//! file, folder and Rust path it names still exists. No root needed.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn doc() -> String {
    fs::read_to_string(root().join("ARCHITECTURE.md")).expect("read ARCHITECTURE.md")
}

/// `(section crate or None, backticked text)` for every code span, in order.
fn spans(doc: &str) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    let mut section = None;
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("### ") {
            section = Some(h.trim().to_string());
        } else if line.starts_with("## ") {
            section = None;
        }
        let mut rest = line;
        while let Some(start) = rest.find('`') {
            let Some(len) = rest[start + 1..].find('`') else {
                break;
            };
            out.push((
                section.clone(),
                rest[start + 1..start + 1 + len].to_string(),
            ));
            rest = &rest[start + 2 + len..];
        }
    }
    out
}

#[test]
fn every_crate_has_a_section() {
    let doc = doc();
    let headings: BTreeSet<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(str::trim)
        .collect();
    let missing: Vec<String> = fs::read_dir(root().join("crates"))
        .expect("list crates/")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !headings.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md has no `### <crate>` section for {missing:?}"
    );
}

#[test]
fn every_path_it_names_exists() {
    let root = root();
    let mut gone = Vec::new();
    for (section, span) in spans(&doc()) {
        let crate_dir = section.as_ref().map(|c| root.join("crates").join(c));
        if looks_like_file(&span) {
            let here = root.join(&span);
            let in_crate = crate_dir.as_ref().map(|d| d.join(&span));
            if !here.exists() && !in_crate.is_some_and(|p| p.exists()) {
                gone.push(span);
            }
        } else if let Some(missing) = rust_path_missing(&root, section.as_deref(), &span) {
            gone.push(format!("{span} ({missing})"));
        }
    }
    assert!(
        gone.is_empty(),
        "ARCHITECTURE.md names what is gone: {gone:#?}"
    );
}

/// `crates/x/src/y.rs`, `bench/scale`, `proto/shoal.proto` (relative to its crate).
fn looks_like_file(span: &str) -> bool {
    let top = ["crates/", "bench/", "scripts/", "fuzz/", "proto/", "bpf/"];
    top.iter().any(|t| span.starts_with(t)) && !span.contains(' ')
}

/// For `shoal_agent::network::NetworkAgent` (or `dispatcher::Heartbeats::expired` inside
/// the shoal-manager section): the crate, then each lowercase segment must be a module file
/// or folder, or an item named in the module before it. Returns what is missing.
fn rust_path_missing(root: &Path, section: Option<&str>, span: &str) -> Option<String> {
    let segs: Vec<&str> = span.split("::").collect();
    if segs.len() < 2
        || segs
            .iter()
            .any(|s| s.is_empty() || !s.chars().all(|c| c.is_alphanumeric() || c == '_'))
    {
        return None;
    }
    let (krate, rest) = match segs[0] {
        s if s.starts_with("shoal") => (s.replace('_', "-"), &segs[1..]),
        _ => (section?.to_string(), &segs[..]),
    };
    let src = root.join("crates").join(&krate).join("src");
    if !src.exists() {
        return Some(format!("no crate {krate}"));
    }
    // The module whose text names the next segment, and the folder its children live in.
    let mut module = if src.join("lib.rs").exists() {
        src.join("lib.rs")
    } else {
        src.join("main.rs")
    };
    let mut dir = src.clone();
    for seg in rest {
        let text = fs::read_to_string(&module).unwrap_or_default();
        let as_file = dir.join(format!("{seg}.rs"));
        let as_dir = dir.join(seg).join("mod.rs");
        if as_file.exists() {
            module = as_file;
            dir = dir.join(seg);
        } else if as_dir.exists() {
            module = as_dir;
            dir = dir.join(seg);
        } else if contains_ident(&text, seg)
            || (module == src.join("lib.rs") && in_crate(&src, seg))
        {
            // An item of the module (a type, function, method or re-export; a path that
            // starts with a type may name one from any module of the crate): the check
            // ends here, items of items are not followed.
            return None;
        } else {
            return Some(format!("{seg} not in {}", module.display()));
        }
    }
    None
}

/// Whether any source file of the crate names `ident`.
fn in_crate(dir: &Path, ident: &str) -> bool {
    fs::read_dir(dir).into_iter().flatten().flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            in_crate(&p, ident)
        } else {
            p.extension().is_some_and(|x| x == "rs")
                && contains_ident(&fs::read_to_string(&p).unwrap_or_default(), ident)
        }
    })
}

fn contains_ident(text: &str, ident: &str) -> bool {
    text.match_indices(ident).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + ident.len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !word(before) && !word(after)
    })
}
