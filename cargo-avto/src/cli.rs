//! The `cargo avto` command line (clap; see `cargo avto --help`).

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

use crate::{collect_packages, find_manifest, render_png, render_svg, Error, Found};

/// What `cargo avto --help` and `cargo avto graph --help` print after the options.
const AFTER_HELP: &str = "\
Packages:
  In a package, its blueprints. At a virtual workspace root, every member package's; at the
  root of a workspace that is also a package, that package's. -p/--package NAME (repeatable)
  picks packages of the workspace instead. Blueprint names need only be unique within a
  package. When several packages are read, the DOT of each package starts with a
  `// package: NAME` line and -o DIR writes DIR/PACKAGE/NAME.EXT.

Output:
  Blueprints are sorted by package, then name. With --format dot, each DOT is written verbatim
  (a final newline is added only if the DOT lacks one) and several DOTs are separated by one
  empty line; -o FILE writes that same text to FILE.
  With --format svg or png, one blueprint is written to standard output or to -o FILE. Several
  blueprints need either --blueprint NAME or -o DIR, which writes DIR/NAME.svg (or .png) for
  each (DIR is created if missing). PNG is the SVG rasterised (same layout) at --scale pixels
  per SVG pixel, with a bundled font: no system fonts needed.
  In any format, an -o PATH that is an existing directory or ends in `/` writes one file per
  blueprint.

Exit status:
  0  success (also when the crate has no blueprints: a warning is printed)
  1  a source file, manifest or blueprint has errors (all are printed), or rendering failed
  2  usage error: bad arguments, no Cargo.toml, unknown --blueprint NAME or -p PACKAGE

Examples:
  cargo avto graph
  cargo avto graph --blueprint order_flow --format svg -o order_flow.svg
  cargo avto graph --blueprint order_flow --format png -o order_flow.png
  cargo avto graph -p my-flows --format png -o graphs/
  cargo avto graph --manifest-path examples/Cargo.toml --format svg -o graphs/";

/// cargo-avto: the state graphs of the avto blueprints of a crate
#[derive(Debug, Parser)]
#[command(name = "cargo-avto", bin_name = "cargo avto", version, propagate_version = true, after_help = AFTER_HELP)]
// No arguments is a usage error ("requires a subcommand", exit 2), not the help on stderr.
#[command(arg_required_else_help = false)]
struct Cli {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Print or render the state graphs of the blueprints of a crate
    ///
    /// Reads the sources of the crate (lib, bins and examples, following `mod foo;`) without
    /// building it, finds every `#[avto::blueprint]` module and prints its Graphviz DOT: byte for
    /// byte the `<module>::DOT` constant the macro generates. SVG is rendered in-process
    /// (layout-rs), no Graphviz install needed; PNG with resvg and a bundled font.
    #[command(after_help = AFTER_HELP)]
    Graph(GraphArgs),
}

/// Output format of `cargo avto graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Dot,
    Svg,
    Png,
}

impl Format {
    fn ext(self) -> &'static str {
        match self {
            Format::Dot => "dot",
            Format::Svg => "svg",
            Format::Png => "png",
        }
    }
}

fn parse_scale(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if (0.1..=8.0).contains(&v) => Ok(v),
        _ => Err("must be a number from 0.1 to 8".to_string()),
    }
}

/// Parsed arguments of `cargo avto graph`.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct GraphArgs {
    /// Cargo.toml of the crate [default: the nearest Cargo.toml in the current directory or
    /// above]. A virtual workspace manifest means every member crate.
    #[arg(long, value_name = "PATH")]
    pub manifest_path: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Dot)]
    pub format: Format,
    /// Only these packages of the workspace (repeatable)
    #[arg(short, long = "package", value_name = "NAME", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub package: Vec<String>,
    /// Only the blueprint with this name (its `name = "..."`)
    #[arg(long, value_name = "NAME", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub blueprint: Option<String>,
    /// PNG pixels per SVG pixel (--format png)
    #[arg(long, value_name = "N", default_value_t = 2.0, value_parser = parse_scale)]
    pub scale: f32,
    /// Write to PATH instead of standard output (see below)
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
}

fn usage(message: impl Into<String>) -> Error {
    Error::Usage(format!("{}\n\nRun `cargo avto --help` for usage.", message.into()))
}

/// Parses the full argument list (program name first). Accepts both `cargo-avto graph ...`
/// and `cargo-avto avto graph ...` (what `cargo avto graph` runs). `--help` and `--version`
/// come back as a [`clap::Error`] of kind `DisplayHelp` / `DisplayVersion`; `.exit()` prints it.
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<GraphArgs, clap::Error> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    if args.get(1).is_some_and(|a| a == "avto") {
        args.remove(1);
    }
    let Sub::Graph(graph) = Cli::try_parse_from(args)?.command;
    Ok(graph)
}

/// The DOT text of several blueprints as `cargo avto graph` prints it: each DOT verbatim
/// (plus a final newline if it has none), separated by one empty line.
pub fn join_dots<'a>(dots: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, dot) in dots.into_iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(dot);
        if !dot.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// `name` with anything but ASCII letters, digits, `_`, `-` and `.` replaced by `_`.
fn safe(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') { c } else { '_' }).collect()
}

fn file_name(name: &str, ext: &str) -> String {
    format!("{}.{ext}", safe(name))
}

fn write_file(path: &Path, contents: &[u8], log: &mut dyn Write) -> Result<(), Error> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    std::fs::write(path, contents).map_err(|e| Error::io(path, e))?;
    let _ = writeln!(log, "wrote {}", path.display());
    Ok(())
}

/// Runs `cargo avto graph`: `cwd` is where to look for `Cargo.toml` without --manifest-path,
/// the result goes to `stdout`, warnings and "wrote FILE" notes to `stderr`.
pub fn run_graph(args: &GraphArgs, cwd: &Path, stdout: &mut dyn Write, stderr: &mut dyn Write) -> Result<(), Error> {
    let manifest = match &args.manifest_path {
        Some(p) => {
            let p = if p.is_dir() { p.join("Cargo.toml") } else { p.clone() };
            if !p.is_file() {
                return Err(Error::ManifestNotFound(p));
            }
            p
        }
        None => find_manifest(cwd)?,
    };
    let (found, packages) = collect_packages(&manifest, &args.package)?;
    let by_package = packages.len() > 1;
    let selected: Vec<&Found> = match &args.blueprint {
        Some(name) => {
            let matching: Vec<&Found> = found.iter().filter(|f| &f.name == name).collect();
            match matching.len() {
                0 => {
                    return Err(Error::UnknownBlueprint {
                        name: name.clone(),
                        available: found
                            .iter()
                            .map(|f| if by_package { format!("{} ({})", f.name, f.package) } else { f.name.clone() })
                            .collect(),
                    })
                }
                1 => matching,
                _ => {
                    let in_packages: Vec<&str> = matching.iter().map(|f| f.package.as_str()).collect();
                    return Err(usage(format!(
                        "blueprint `{name}` is in several packages ({}); pick one with -p PACKAGE",
                        in_packages.join(", ")
                    )));
                }
            }
        }
        None => found.iter().collect(),
    };
    if selected.is_empty() {
        let _ = writeln!(stderr, "warning: no `#[avto::blueprint]` modules found in {}", manifest.display());
        return Ok(());
    }

    let ext = args.format.ext();
    let output = args.output.as_deref();
    let output_is_dir = output
        .is_some_and(|o| o.is_dir() || o.as_os_str().to_string_lossy().ends_with(['/', std::path::MAIN_SEPARATOR]));
    let one_file_format = args.format != Format::Dot;
    if one_file_format && selected.len() > 1 && !output_is_dir {
        let names: Vec<&str> = selected.iter().map(|f| f.name.as_str()).collect();
        let what = ext.to_ascii_uppercase();
        match output {
            Some(o) if o.exists() || o.extension().is_some_and(|e| e == ext) => {
                return Err(usage(format!(
                    "{} blueprints found ({}), but one {what} file `{}` can hold only one; give --blueprint NAME, or -o DIR to write DIR/NAME.{ext} for each",
                    names.len(),
                    names.join(", "),
                    o.display()
                )))
            }
            Some(_) => {}
            None => {
                return Err(usage(format!(
                    "{} blueprints found ({}); with --format {ext} give --blueprint NAME, or -o DIR to write DIR/NAME.{ext} for each",
                    names.len(),
                    names.join(", ")
                )))
            }
        }
    }
    let per_blueprint_files = output_is_dir || (one_file_format && selected.len() > 1);

    // Render everything first, so nothing is written when one blueprint fails.
    let mut rendered: Vec<(&Found, Vec<u8>)> = Vec::new();
    let mut errors = Vec::new();
    for f in &selected {
        let result = match args.format {
            Format::Dot => Ok(f.dot.clone().into_bytes()),
            Format::Svg => render_svg(&f.dot).map(String::into_bytes),
            Format::Png => render_svg(&f.dot).and_then(|svg| render_png(&svg, args.scale)),
        };
        match result {
            Ok(bytes) => rendered.push((*f, bytes)),
            Err(e) => {
                errors.push(Error::Render { message: format!("blueprint `{}` ({}): {e}", f.name, f.file.display()) })
            }
        }
    }
    if let Some(e) = Error::from_list(errors) {
        return Err(e);
    }

    match output {
        Some(dir) if per_blueprint_files => {
            for (f, bytes) in &rendered {
                let dir = if by_package { dir.join(safe(&f.package)) } else { dir.to_path_buf() };
                write_file(&dir.join(file_name(&f.name, ext)), bytes, stderr)?;
            }
        }
        _ => {
            let bytes = match args.format {
                Format::Dot => {
                    let mut out = String::new();
                    let mut package = None;
                    for (i, (f, dot)) in rendered.iter().enumerate() {
                        if i > 0 {
                            out.push('\n');
                        }
                        if by_package && package != Some(&f.package) {
                            out.push_str(&format!("// package: {}\n", f.package));
                            package = Some(&f.package);
                        }
                        out.push_str(&join_dots([String::from_utf8_lossy(dot).as_ref()]));
                    }
                    out.into_bytes()
                }
                Format::Svg => {
                    let mut svg = rendered[0].1.clone();
                    if !svg.ends_with(b"\n") {
                        svg.push(b'\n');
                    }
                    svg
                }
                Format::Png => rendered[0].1.clone(),
            };
            match output {
                Some(file) => write_file(file, &bytes, stderr)?,
                None => stdout.write_all(&bytes).map_err(|e| Error::io(Path::new("<stdout>"), e))?,
            }
        }
    }
    Ok(())
}

/// Entry point of the binary: parses `std::env::args_os()`, runs, prints errors, and returns
/// the exit code (0 ok, 1 errors in sources/blueprints/rendering, 2 usage).
pub fn main() -> i32 {
    let args = match parse_args(std::env::args_os()) {
        Ok(a) => a,
        Err(e) => {
            // Help and version go to stdout (exit 0), usage errors to stderr (exit 2).
            let _ = e.print();
            return e.exit_code();
        }
    };
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    match run_graph(&args, &cwd, &mut stdout.lock(), &mut stderr.lock()) {
        Ok(()) => 0,
        Err(e) => {
            let code = e.exit_code();
            for e in e.flatten() {
                eprintln!("error: {e}");
            }
            code
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<GraphArgs, clap::Error> {
        parse_args(std::iter::once("cargo-avto").chain(args.iter().copied()).map(OsString::from))
    }

    #[test]
    fn both_invocations() {
        let plain = parse(&["graph", "--format", "svg", "-o", "x.svg", "--blueprint=a"]).unwrap();
        let via_cargo = parse(&["avto", "graph", "--format=svg", "--output", "x.svg", "--blueprint", "a"]).unwrap();
        assert_eq!(plain, via_cargo);
        assert_eq!(
            plain,
            GraphArgs {
                manifest_path: None,
                format: Format::Svg,
                package: vec![],
                blueprint: Some("a".into()),
                scale: 2.0,
                output: Some("x.svg".into())
            }
        );
        assert_eq!(parse(&["graph"]).unwrap().format, Format::Dot);
        let png = parse(&["graph", "--format", "png", "-p", "a", "--package=b", "--scale", "1.5"]).unwrap();
        assert_eq!((png.format, png.package, png.scale), (Format::Png, vec!["a".to_string(), "b".to_string()], 1.5));
    }

    #[test]
    fn help_and_usage_errors() {
        use clap::error::ErrorKind;
        for (args, kind) in [
            (&["avto", "graph", "--help"][..], ErrorKind::DisplayHelp),
            (&["-h"], ErrorKind::DisplayHelp),
            (&["help"], ErrorKind::DisplayHelp),
            (&["avto", "-V"], ErrorKind::DisplayVersion),
            (&["avto", "graph", "-V"], ErrorKind::DisplayVersion),
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!((e.kind(), e.exit_code()), (kind, 0), "{args:?}");
        }
        for bad in [
            &[][..],
            &["avto"],
            &["grap"],
            &["graph", "--format", "gif"],
            &["graph", "--scale", "0"],
            &["graph", "--scale", "x"],
            &["graph", "-p"],
            &["graph", "-p", ""],
            &["graph", "--blueprint"],
            &["graph", "--blueprint", ""],
            &["graph", "-o", ""],
            &["graph", "--nope"],
            &["graph", "stray"],
            &["graph", "-o", "a", "-o", "b"],
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
    }

    #[test]
    fn joins_dots() {
        assert_eq!(join_dots(["digraph a {}\n", "digraph b {}"]), "digraph a {}\n\ndigraph b {}\n");
        assert_eq!(join_dots(["x\n"]), "x\n");
    }
}
