//! The source tree keeps the shape issue #13 gave it: no import loop between the modules of
//! `avto/src/server` (or of the worker SDK), no file in `avto/src` above 800 lines, and the
//! README's module map ("Inside `avto/src`") names every module it should. Read from the source
//! text, so a change that breaks the shape fails here with the loop, file or module named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 800;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../avto/src")
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The code of a file without comments and without its `#[cfg(test)] mod tests`.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The identifiers that follow `prefix` in `code` (`prefix::name` and `prefix::{a, b::c}`).
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            for item in inner.split(',') {
                let word: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                out.insert(word);
            }
        } else {
            out.insert(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
        }
    }
    out
}

/// Edges between the direct children of `root` (files or folders), from `super::` paths and
/// `crate_path::` paths in their code.
fn module_graph(root: &Path, crate_path: &str) -> BTreeMap<String, BTreeSet<String>> {
    let children: BTreeSet<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().trim_end_matches(".rs").to_owned())
        .filter(|n| n != "mod")
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(root) {
        let rel: Vec<String> =
            file.strip_prefix(root).unwrap().iter().map(|p| p.to_string_lossy().into_owned()).collect();
        if rel == ["mod.rs"] {
            continue;
        }
        let me = rel[0].trim_end_matches(".rs").to_owned();
        // How many `super::` lead from this file to `root`.
        let depth = rel.len() - usize::from(rel.last().is_some_and(|f| f == "mod.rs"));
        let code = code(&file);
        let mut names = names_after(&code, &"super::".repeat(depth));
        names.extend(names_after(&code, crate_path));
        for name in names {
            if children.contains(&name) && name != me {
                edges.entry(me.clone()).or_default().insert(name);
            }
        }
    }
    edges
}

/// A cycle through `start` in `edges`, if there is one.
fn cycle_from(edges: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        edges: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in edges.get(at).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(edges, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    walk(edges, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

fn assert_no_loops(root: &str, crate_path: &str) {
    let edges = module_graph(&src().join(root), crate_path);
    assert!(!edges.is_empty(), "{root}: the scan found no imports at all");
    for module in edges.keys() {
        if let Some(cycle) = cycle_from(&edges, module) {
            panic!("import loop in avto/src/{root}: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn server_modules_import_each_other_one_way() {
    assert_no_loops("server", "crate::server::");
    assert_no_loops("server/api", "crate::server::api::");
    assert_no_loops("server/core", "crate::server::core::");
}

#[test]
fn worker_modules_import_each_other_one_way() {
    assert_no_loops("worker", "crate::worker::");
}

#[test]
fn storage_modules_import_each_other_one_way() {
    assert_no_loops("storage", "crate::storage::");
}

/// The scan itself: a loop planted in text is found.
#[test]
fn a_planted_loop_is_found() {
    let mut edges = BTreeMap::new();
    edges.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    edges.insert("b".to_owned(), BTreeSet::from(["c".to_owned()]));
    edges.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(cycle_from(&edges, "a").unwrap(), ["a", "b", "c", "a"]);
    edges.get_mut("c").unwrap().clear();
    assert!(cycle_from(&edges, "a").is_none());
    let names = names_after("use super::{config::X, core};\nlet y = super::api::f();", "super::");
    assert_eq!(names, BTreeSet::from(["api".into(), "config".into(), "core".into()]));
}

#[test]
fn no_source_file_is_above_800_lines() {
    let long: Vec<String> = rust_files(&src())
        .into_iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(&f).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.strip_prefix(src()).unwrap().display()))
        })
        .collect();
    assert!(long.is_empty(), "split by role (issue #13): {long:?}");
}

/// Every module of avto/src, and every module of its main folders, is named in the README's map.
#[test]
fn the_readme_module_map_names_every_module() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let start = readme.find("### Inside `avto/src`").expect("README has the module map");
    let map = &readme[start..];
    let map = &map[..map[4..].find("\n## ").map_or(map.len(), |i| i + 4)];
    let mut missing = Vec::new();
    for dir in ["", "server", "server/core", "server/api", "storage", "worker"] {
        for entry in std::fs::read_dir(src().join(dir)).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "mod.rs" {
                continue;
            }
            let (file, folder) = (format!("`{name}`"), format!("{name}/`"));
            let named = match entry.path().is_dir() {
                true => map.contains(&folder),
                false => map.contains(&file) || map.contains(&format!("{dir}/{name}`")),
            };
            if !named {
                missing.push(format!("{dir}/{name}"));
            }
        }
    }
    assert!(missing.is_empty(), "README \"Inside `avto/src`\" does not name: {missing:?}");
}
