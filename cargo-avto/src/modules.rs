//! Following `mod foo;` declarations from a crate root to every module file, the way rustc
//! resolves them (`foo.rs` / `foo/mod.rs`, nested inline modules, `#[path = "..."]`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use syn::ext::IdentExt;

use crate::discover::{Package, Target};
use crate::Error;

/// A parsed source file of a target.
#[derive(Debug)]
pub(crate) struct SourceFile {
    pub path: PathBuf,
    /// Module path of the file from its crate root (`""` for the crate root itself).
    pub module: String,
    pub source: String,
    pub package: String,
    pub target: Target,
}

struct Walker<'a> {
    package: &'a Package,
    target: &'a Target,
    seen: &'a mut BTreeSet<PathBuf>,
    out: &'a mut Vec<SourceFile>,
    errors: &'a mut Vec<Error>,
}

/// Reads the crate root of `target` and every module file reachable from it, skipping files
/// already in `seen` (shared between targets, so a file reached twice is scanned once).
pub(crate) fn walk(
    package: &Package,
    target: &Target,
    seen: &mut BTreeSet<PathBuf>,
    out: &mut Vec<SourceFile>,
    errors: &mut Vec<Error>,
) {
    if !target.path.is_file() {
        errors.push(Error::Manifest {
            path: package.manifest.clone(),
            message: format!("the source file of {target}, {}, does not exist", target.path.display()),
        });
        return;
    }
    let mut walker = Walker { package, target, seen, out, errors };
    walker.file(&target.path, Vec::new(), true);
}

impl Walker<'_> {
    /// `mod_rs`: the file owns its directory (crate roots, `mod.rs`, `#[path]` files), so its
    /// `mod foo;` are looked up next to it rather than in a directory named after it.
    fn file(&mut self, path: &Path, module: Vec<String>, mod_rs: bool) {
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if !self.seen.insert(key) {
            return;
        }
        let source = match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) => {
                self.errors.push(Error::io(path, e));
                return;
            }
        };
        let ast = match syn::parse_file(&source) {
            Ok(ast) => ast,
            Err(e) => {
                let at = e.span().start();
                self.errors.push(Error::Source {
                    path: path.to_path_buf(),
                    message: format!("{}:{}: cannot parse Rust: {e}", at.line, at.column + 1),
                });
                return;
            }
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let child_dir = if mod_rs { dir.clone() } else { dir.join(path.file_stem().unwrap_or_default()) };
        self.out.push(SourceFile {
            path: path.to_path_buf(),
            module: module.join("::"),
            source,
            package: self.package.name.clone(),
            target: self.target.clone(),
        });
        self.items(path, &ast.items, &module, &child_dir, &dir);
    }

    /// `child_dir`: where `mod foo;` finds `foo.rs`; `path_base`: what `#[path]` is relative to.
    fn items(&mut self, file: &Path, items: &[syn::Item], module: &[String], child_dir: &Path, path_base: &Path) {
        for item in items {
            let syn::Item::Mod(m) = item else { continue };
            let name = m.ident.unraw().to_string();
            let mut sub_module = module.to_vec();
            sub_module.push(name.clone());
            let path_attr = path_attribute(&m.attrs);
            match &m.content {
                Some((_, inner)) => {
                    let dir = match &path_attr {
                        Some(p) => path_base.join(p),
                        None => child_dir.join(&name),
                    };
                    self.items(file, inner, &sub_module, &dir, &dir);
                }
                None => {
                    let cfg_gated = m.attrs.iter().any(|a| a.path().is_ident("cfg"));
                    // (candidate file, whether it owns its directory)
                    let candidates: Vec<(PathBuf, bool)> = match &path_attr {
                        Some(p) => vec![(path_base.join(p), true)],
                        None => vec![
                            (child_dir.join(format!("{name}.rs")), false),
                            (child_dir.join(&name).join("mod.rs"), true),
                        ],
                    };
                    match candidates.iter().find(|(c, _)| c.is_file()) {
                        Some((found, mod_rs)) => self.file(found, sub_module, *mod_rs),
                        // A `#[cfg(...)]` module may legitimately have no file on this platform.
                        None if cfg_gated => {}
                        None => {
                            let line = m.ident.span().start().line;
                            let tried: Vec<String> = candidates.iter().map(|(c, _)| c.display().to_string()).collect();
                            self.errors.push(Error::Source {
                                path: file.to_path_buf(),
                                message: format!(
                                    "{line}: file not found for module `{name}` (looked for {})",
                                    tried.join(" and ")
                                ),
                            });
                        }
                    }
                }
            }
        }
    }
}

fn path_attribute(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match &a.meta {
        syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}
