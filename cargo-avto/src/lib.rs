//! The library behind `cargo avto graph`.
//!
//! [`collect`] finds every `#[avto::blueprint]` module in the sources of a crate (its library,
//! binaries and examples, following `mod foo;` declarations to their files) **without building
//! it**, and returns each blueprint's Graphviz DOT: byte-for-byte the `DOT` constant the
//! `#[avto::blueprint]` macro generates for that module, since both come from the same code in
//! `avto-dsl`. [`render_svg`] lays a DOT graph out and renders it to SVG with the pure-Rust
//! `layout-rs` crate, so no system Graphviz is needed, and [`render_png`] rasterises that SVG
//! (both from the `avto-graph` crate). [`collect_packages`] picks packages of a workspace, as
//! `-p` does.
//!
//! The command line itself lives in [`cli`]; `src/main.rs` only calls [`cli::main`].
//!
//! ```no_run
//! let found = cargo_avto::collect(std::path::Path::new("Cargo.toml"))?;
//! for blueprint in &found {
//!     println!("{} ({}):", blueprint.name, blueprint.file.display());
//!     print!("{}", blueprint.dot);
//!     let _svg = cargo_avto::render_svg(&blueprint.dot)?;
//! }
//! # Ok::<(), cargo_avto::Error>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

pub mod cli;
mod discover;
mod modules;

pub use discover::{find_manifest, Target, TargetKind};

/// One blueprint found in the sources of a crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The blueprint's `name = "..."`.
    pub name: String,
    /// Path of the blueprint module from its crate root, e.g. `flows::order_flow`.
    pub module: String,
    /// The Graphviz DOT of the blueprint, byte-for-byte the macro's `<module>::DOT`.
    pub dot: String,
    /// The source file that holds the blueprint module.
    pub file: PathBuf,
    /// The package the file belongs to.
    pub package: String,
    /// The first target (lib, bin or example) through which the file was reached.
    pub target: Target,
}

/// Everything that can go wrong in `cargo avto`.
#[derive(Debug)]
pub enum Error {
    /// Bad command line (exit code 2).
    Usage(String),
    /// No `Cargo.toml` where one was expected (exit code 2).
    ManifestNotFound(PathBuf),
    /// A file could not be read or written.
    Io { path: PathBuf, source: std::io::Error },
    /// A `Cargo.toml` that could not be understood.
    Manifest { path: PathBuf, message: String },
    /// A Rust source file that does not parse, a `mod foo;` without a file, or a blueprint the
    /// DSL rejects.
    Source { path: PathBuf, message: String },
    /// `-p NAME` that names no package of the manifest (exit code 2).
    UnknownPackage { name: String, available: Vec<String> },
    /// Two blueprints with the same name in one package.
    DuplicateBlueprint { name: String, first: PathBuf, second: PathBuf },
    /// `--blueprint NAME` that matches nothing (exit code 2).
    UnknownBlueprint { name: String, available: Vec<String> },
    /// The DOT could not be laid out or rendered to SVG.
    Render { message: String },
    /// Several of the above, reported together.
    Many(Vec<Error>),
}

impl Error {
    /// The process exit code for this error: 2 for usage errors, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_)
            | Error::ManifestNotFound(_)
            | Error::UnknownBlueprint { .. }
            | Error::UnknownPackage { .. } => 2,
            Error::Many(errors) => errors.iter().map(Error::exit_code).max().unwrap_or(1),
            _ => 1,
        }
    }

    /// Flattens nested [`Error::Many`] into a list of single errors.
    pub fn flatten(self) -> Vec<Error> {
        match self {
            Error::Many(errors) => errors.into_iter().flat_map(Error::flatten).collect(),
            e => vec![e],
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }

    pub(crate) fn from_list(mut errors: Vec<Error>) -> Option<Self> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(Error::Many(errors)),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(message) => write!(f, "{message}"),
            Error::ManifestNotFound(path) => write!(
                f,
                "could not find `Cargo.toml` in `{}` or any parent directory (use --manifest-path PATH)",
                path.display()
            ),
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Manifest { path, message } => write!(f, "{}: {message}", path.display()),
            Error::Source { path, message } => write!(f, "{}: {message}", path.display()),
            Error::DuplicateBlueprint { name, first, second } if first == second => {
                write!(
                    f,
                    "blueprint name `{name}` is used twice in {}; blueprint names must be unique within a package",
                    first.display()
                )
            }
            Error::DuplicateBlueprint { name, first, second } => write!(
                f,
                "blueprint name `{name}` is used in both {} and {}; blueprint names must be unique within a package",
                first.display(),
                second.display()
            ),
            Error::UnknownBlueprint { name, available } if available.is_empty() => {
                write!(f, "no blueprint named `{name}`: no blueprints were found")
            }
            Error::UnknownBlueprint { name, available } => {
                write!(f, "no blueprint named `{name}`; the blueprints are: {}", available.join(", "))
            }
            Error::UnknownPackage { name, available } => write!(
                f,
                "package `{name}` is not in this workspace; its packages are: {}",
                if available.is_empty() { "(none)".to_string() } else { available.join(", ") }
            ),
            Error::Render { message } => write!(f, "{message}"),
            Error::Many(errors) => {
                for (i, e) in errors.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Lays out a DOT graph and renders it to SVG with [`avto_graph::render_svg`] (pure Rust,
/// no system Graphviz); its errors become [`Error::Render`].
pub fn render_svg(dot: &str) -> Result<String, Error> {
    avto_graph::render_svg(dot).map_err(|e| Error::Render { message: e.to_string() })
}

/// Rasterises an SVG from [`render_svg`] to PNG with [`avto_graph::render_png`] (resvg, the
/// bundled DejaVu Sans Mono font), `scale` pixels per SVG pixel.
pub fn render_png(svg: &str, scale: f32) -> Result<Vec<u8>, Error> {
    avto_graph::render_png(svg, scale).map_err(|e| Error::Render { message: e.to_string() })
}

/// Finds the blueprints of the crate whose manifest is `manifest`.
///
/// A package manifest means that package; a virtual workspace manifest (a `[workspace]` without
/// `[package]`) means every member package. Of each package, the library, the binaries and the
/// examples are read, as Cargo would find them (`src/lib.rs`, `src/main.rs`, `src/bin/*.rs`,
/// `src/bin/*/main.rs`, `examples/*.rs`, `examples/*/main.rs`, the `path` of `[lib]`, `[[bin]]`
/// and `[[example]]`, with `autobins`/`autoexamples`/`autolib = false` honoured), following
/// `mod foo;` (and `#[path = "..."]`) to module files.
///
/// The result is sorted by package (in workspace order), then blueprint name. Blueprint names
/// need only be unique within a package. All problems found (unparsable files, missing module
/// files, blueprints the DSL rejects, duplicate names) are returned together.
pub fn collect(manifest: &Path) -> Result<Vec<Found>, Error> {
    collect_packages(manifest, &[]).map(|(found, _)| found)
}

/// Like [`collect`], for the packages named in `packages` (what `-p` selects: the manifest's
/// package or any member of its workspace; empty means what [`collect`] reads). Also returns
/// the names of the packages read, in order. A name that is no package is an
/// [`Error::UnknownPackage`].
pub fn collect_packages(manifest: &Path, packages: &[String]) -> Result<(Vec<Found>, Vec<String>), Error> {
    let (all, default) = discover::packages(manifest)?;
    let packages: Vec<discover::Package> = if packages.is_empty() {
        all.into_iter().take(default).collect()
    } else {
        let mut chosen = Vec::new();
        for name in packages {
            match all.iter().find(|p| &p.name == name) {
                Some(p) if !chosen.iter().any(|c: &discover::Package| &c.name == name) => chosen.push(p.clone()),
                Some(_) => {}
                None => {
                    return Err(Error::UnknownPackage {
                        name: name.clone(),
                        available: all.iter().map(|p| p.name.clone()).collect(),
                    })
                }
            }
        }
        // Workspace order, whatever the order of the `-p`s.
        all.into_iter().filter(|p| chosen.iter().any(|c| c.name == p.name)).collect()
    };
    let names: Vec<String> = packages.iter().map(|p| p.name.clone()).collect();
    let mut errors = Vec::new();
    let mut files = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for package in &packages {
        let targets = match discover::targets(package) {
            Ok(t) => t,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for target in targets {
            modules::walk(package, &target, &mut seen, &mut files, &mut errors);
        }
    }

    let mut found: Vec<Found> = Vec::new();
    for file in files {
        match avto_dsl::scan::graphs_in_source(&file.source) {
            Ok(graphs) => {
                for graph in graphs {
                    let module = if file.module.is_empty() || graph.module.is_empty() {
                        format!("{}{}", file.module, graph.module)
                    } else {
                        format!("{}::{}", file.module, graph.module)
                    };
                    found.push(Found {
                        name: graph.name,
                        module,
                        dot: graph.dot,
                        file: file.path.clone(),
                        package: file.package.clone(),
                        target: file.target.clone(),
                    });
                }
            }
            // One error per line: `module: line:column: message`.
            Err(message) => errors.extend(
                message
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| Error::Source { path: file.path.clone(), message: l.to_string() }),
            ),
        }
    }

    // Stable sort: blueprints of one name keep discovery order, so `first` is the first file seen.
    let rank = |package: &str| names.iter().position(|n| n == package).unwrap_or(usize::MAX);
    found.sort_by(|a, b| (rank(&a.package), &a.name).cmp(&(rank(&b.package), &b.name)));
    for pair in found.windows(2) {
        if pair[0].package == pair[1].package && pair[0].name == pair[1].name {
            errors.push(Error::DuplicateBlueprint {
                name: pair[0].name.clone(),
                first: pair[0].file.clone(),
                second: pair[1].file.clone(),
            });
        }
    }

    match Error::from_list(errors) {
        Some(e) => Err(e),
        None => Ok((found, names)),
    }
}
