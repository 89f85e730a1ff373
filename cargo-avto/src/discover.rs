//! Manifests and targets: which packages a manifest means, and which root source files
//! (lib, bins, examples) each package has, following Cargo's target auto-discovery rules.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::Error;

/// A package read from its `Cargo.toml`.
#[derive(Debug, Clone)]
pub(crate) struct Package {
    pub name: String,
    /// The `Cargo.toml`.
    pub manifest: PathBuf,
    /// The directory of the `Cargo.toml`.
    pub root: PathBuf,
    table: toml::Table,
}

/// The kind of a compilation target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TargetKind {
    Lib,
    Bin,
    Example,
}

/// A compilation target of a package: its kind, name and crate root file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: TargetKind,
    pub name: String,
    pub path: PathBuf,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            TargetKind::Lib => "lib",
            TargetKind::Bin => "bin",
            TargetKind::Example => "example",
        };
        write!(f, "{kind} `{}`", self.name)
    }
}

/// The nearest `Cargo.toml` in `dir` or one of its ancestors (what `cargo` itself uses when no
/// `--manifest-path` is given).
pub fn find_manifest(dir: &Path) -> Result<PathBuf, Error> {
    let mut current = Some(dir);
    while let Some(d) = current {
        let candidate = d.join("Cargo.toml");
        if candidate.is_file() {
            return Ok(candidate);
        }
        current = d.parent();
    }
    Err(Error::ManifestNotFound(dir.to_path_buf()))
}

fn read_manifest(manifest: &Path) -> Result<toml::Table, Error> {
    if !manifest.is_file() {
        return Err(Error::ManifestNotFound(manifest.to_path_buf()));
    }
    let text = std::fs::read_to_string(manifest).map_err(|e| Error::io(manifest, e))?;
    text.parse::<toml::Table>()
        .map_err(|e| Error::Manifest { path: manifest.to_path_buf(), message: format!("invalid TOML: {e}") })
}

fn manifest_error(manifest: &Path, message: impl Into<String>) -> Error {
    Error::Manifest { path: manifest.to_path_buf(), message: message.into() }
}

fn root_of(manifest: &Path) -> PathBuf {
    match manifest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The packages a manifest can name: for a package manifest the package itself (and, when it is
/// also a workspace root, every member after it); for a virtual workspace manifest every member
/// (`members` globs expanded, `exclude` honoured), in a stable order. The second value is how
/// many of them are meant when no `-p` is given: the root package alone, or every member of a
/// virtual workspace.
pub(crate) fn packages(manifest: &Path) -> Result<(Vec<Package>, usize), Error> {
    let table = read_manifest(manifest)?;
    let root = root_of(manifest);
    let mut out = Vec::new();
    if let Some(package) = table.get("package") {
        let name = package
            .get("name")
            .and_then(|n| n.as_str())
            .ok_or_else(|| manifest_error(manifest, "`[package]` has no `name`"))?
            .to_string();
        out.push(Package { name, manifest: manifest.to_path_buf(), root: root.clone(), table: table.clone() });
    }
    let Some(workspace) = table.get("workspace").and_then(|w| w.as_table()) else {
        if out.is_empty() {
            return Err(manifest_error(manifest, "neither `[package]` nor `[workspace]`: not a crate manifest"));
        }
        return Ok((out, 1));
    };
    let default = if out.is_empty() { usize::MAX } else { 1 };
    out.extend(members(manifest, &root, workspace)?);
    let default = default.min(out.len());
    Ok((out, default))
}

fn members(manifest: &Path, root: &Path, workspace: &toml::Table) -> Result<Vec<Package>, Error> {
    let strings = |key: &str| -> Result<Vec<String>, Error> {
        match workspace.get(key) {
            None => Ok(Vec::new()),
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| manifest_error(manifest, format!("`workspace.{key}` must be strings")))
                })
                .collect(),
            Some(_) => Err(manifest_error(manifest, format!("`workspace.{key}` must be an array of strings"))),
        }
    };
    let members = strings("members")?;
    let exclude: BTreeSet<PathBuf> = strings("exclude")?.iter().map(|e| normalize(&root.join(e))).collect();

    let mut dirs: Vec<PathBuf> = Vec::new();
    for member in &members {
        if member.contains(['*', '?', '[']) {
            let mut matched = glob_dirs(root, member);
            matched.retain(|d| d.join("Cargo.toml").is_file());
            dirs.extend(matched);
        } else {
            dirs.push(root.join(member));
        }
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for dir in dirs {
        let dir = normalize(&dir);
        // `members = ["."]`: the root package, already read by the caller.
        if dir == normalize(root) || exclude.contains(&dir) || !seen.insert(dir.clone()) {
            continue;
        }
        let member_manifest = dir.join("Cargo.toml");
        match read_manifest(&member_manifest) {
            // A member is a package (its own `[workspace]`, if any, is not followed).
            Ok(_) => match packages(&member_manifest) {
                Ok((p, _)) => out.extend(p.into_iter().take(1)),
                Err(e) => errors.push(e),
            },
            Err(Error::ManifestNotFound(_)) => {
                errors.push(manifest_error(manifest, format!("workspace member `{}` has no Cargo.toml", dir.display())))
            }
            Err(e) => errors.push(e),
        }
    }
    match Error::from_list(errors) {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Lexically removes `.` and `a/..` components.
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                } else {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Directories under `root` matching a workspace-member glob such as `crates/*`, sorted.
fn glob_dirs(root: &Path, pattern: &str) -> Vec<PathBuf> {
    let mut current = vec![root.to_path_buf()];
    for segment in pattern.split('/').filter(|s| !s.is_empty() && *s != ".") {
        let mut next = Vec::new();
        for dir in &current {
            if segment == ".." || !segment.contains(['*', '?', '[']) {
                let d = dir.join(segment);
                if d.is_dir() {
                    next.push(d);
                }
                continue;
            }
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| wildcard(segment.as_bytes(), n.as_bytes()))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| dir.join(n)));
        }
        current = next;
    }
    current
}

/// `*`, `?` and `[abc]` / `[a-z]` / `[!a]` matching of one path segment.
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.first() {
        None => name.is_empty(),
        Some(b'*') => (0..=name.len()).any(|i| wildcard(&pattern[1..], &name[i..])),
        Some(b'?') => !name.is_empty() && wildcard(&pattern[1..], &name[1..]),
        Some(b'[') => {
            let Some(close) = pattern.iter().skip(2).position(|&b| b == b']').map(|p| p + 2) else {
                return name.first() == Some(&b'[') && wildcard(&pattern[1..], &name[1..]);
            };
            let Some(&c) = name.first() else { return false };
            let mut set = &pattern[1..close];
            let negate = matches!(set.first(), Some(b'!' | b'^'));
            if negate {
                set = &set[1..];
            }
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    hit |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != negate && wildcard(&pattern[close + 1..], &name[1..])
        }
        Some(&b) => name.first() == Some(&b) && wildcard(&pattern[1..], &name[1..]),
    }
}

fn flag(package: &Package, key: &str) -> bool {
    package.table.get("package").and_then(|p| p.get(key)).and_then(|v| v.as_bool()).unwrap_or(true)
}

/// `*.rs` files and `*/main.rs` directories of `dir` as (target name, path), sorted by name.
fn auto_dir(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
        if path.is_file() {
            if let Some(stem) = name.strip_suffix(".rs") {
                out.push((stem.to_string(), path));
            }
        } else if path.is_dir() && path.join("main.rs").is_file() {
            out.push((name, path.join("main.rs")));
        }
    }
    out.sort();
    out
}

/// The lib, bin and example targets of a package, as Cargo would find them.
pub(crate) fn targets(package: &Package) -> Result<Vec<Target>, Error> {
    let manifest = &package.manifest;
    let root = &package.root;
    let mut targets = Vec::new();

    // [lib]
    let lib = package.table.get("lib");
    let lib_name = lib
        .and_then(|l| l.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| package.name.replace('-', "_"));
    match lib.and_then(|l| l.get("path")) {
        Some(toml::Value::String(p)) => {
            targets.push(Target { kind: TargetKind::Lib, name: lib_name, path: root.join(p) })
        }
        Some(_) => return Err(manifest_error(manifest, "`lib.path` must be a string")),
        None => {
            let default = root.join("src/lib.rs");
            if (lib.is_some() || flag(package, "autolib")) && default.is_file() {
                targets.push(Target { kind: TargetKind::Lib, name: lib_name, path: default });
            }
        }
    }

    // [[bin]] and [[example]]
    for (kind, key, auto_key, dir) in
        [(TargetKind::Bin, "bin", "autobins", "src/bin"), (TargetKind::Example, "example", "autoexamples", "examples")]
    {
        let mut explicit: Vec<Target> = Vec::new();
        let entries = match package.table.get(key) {
            None => Vec::new(),
            Some(toml::Value::Array(a)) => a.clone(),
            Some(_) => return Err(manifest_error(manifest, format!("`[[{key}]]` must be an array of tables"))),
        };
        for entry in entries {
            let name = entry.get("name").and_then(|n| n.as_str()).map(str::to_string);
            let path = match entry.get("path") {
                Some(toml::Value::String(p)) => Some(root.join(p)),
                Some(_) => return Err(manifest_error(manifest, format!("`{key}.path` must be a string"))),
                None => None,
            };
            let (name, path) = match (name, path) {
                (Some(name), Some(path)) => (name, path),
                (None, Some(path)) => {
                    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
                    (stem, path)
                }
                (Some(name), None) => {
                    let mut candidates =
                        vec![root.join(dir).join(format!("{name}.rs")), root.join(dir).join(&name).join("main.rs")];
                    if kind == TargetKind::Bin && name == package.name {
                        candidates.insert(0, root.join("src/main.rs"));
                    }
                    match candidates.iter().find(|c| c.is_file()) {
                        Some(p) => (name, p.clone()),
                        None => {
                            return Err(manifest_error(
                                manifest,
                                format!(
                                    "cannot find the source of {key} `{name}`: tried {}; set its `path`",
                                    candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
                                ),
                            ))
                        }
                    }
                }
                (None, None) => {
                    return Err(manifest_error(manifest, format!("a `[[{key}]]` has neither `name` nor `path`")))
                }
            };
            explicit.push(Target { kind, name, path });
        }

        let mut auto = Vec::new();
        if flag(package, auto_key) {
            if kind == TargetKind::Bin {
                let main = root.join("src/main.rs");
                if main.is_file() {
                    auto.push(Target { kind, name: package.name.clone(), path: main });
                }
            }
            for (name, path) in auto_dir(&root.join(dir)) {
                auto.push(Target { kind, name, path });
            }
        }
        // An explicit target shadows an auto-discovered one of the same name or file.
        auto.retain(|a| !explicit.iter().any(|e| e.name == a.name || e.path == a.path));
        targets.extend(explicit);
        targets.extend(auto);
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard(b"*", b"abc"));
        assert!(wildcard(b"a*c", b"abbbc"));
        assert!(!wildcard(b"a*c", b"abbb"));
        assert!(wildcard(b"a?c", b"abc"));
        assert!(wildcard(b"[ab]x", b"bx"));
        assert!(!wildcard(b"[!ab]x", b"bx"));
        assert!(wildcard(b"[a-c]x", b"cx"));
    }

    #[test]
    fn normalizes() {
        assert_eq!(normalize(Path::new("a/./b/../c")), PathBuf::from("a/c"));
        assert_eq!(normalize(Path::new("../x")), PathBuf::from("../x"));
    }
}
