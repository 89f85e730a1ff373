//! The `cargo avto` command line (hand-rolled parsing; see [`HELP`]).

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{collect, find_manifest, render_svg, Error, Found};

/// The text of `cargo avto --help`.
pub const HELP: &str = "\
cargo-avto: the state graphs of the avto blueprints of a crate

USAGE:
    cargo avto graph [OPTIONS]

Reads the sources of the crate (lib, bins and examples, following `mod foo;`) without
building it, finds every `#[avto::blueprint]` module and prints its Graphviz DOT: byte for
byte the `<module>::DOT` constant the macro generates. SVG is rendered in-process (layout-rs),
no Graphviz install needed.

OPTIONS:
        --manifest-path PATH  Cargo.toml of the crate [default: the nearest Cargo.toml in the
                              current directory or above]. A virtual workspace manifest means
                              every member crate.
        --format dot|svg      Output format [default: dot]
        --blueprint NAME      Only the blueprint with this name (its `name = \"...\"`)
    -o, --output PATH         Write to PATH instead of standard output (see below)
    -h, --help                Print this help
    -V, --version             Print the version

OUTPUT:
    Blueprints are sorted by name. With --format dot, each DOT is written verbatim (a final
    newline is added only if the DOT lacks one) and several DOTs are separated by one empty
    line; -o FILE writes that same text to FILE.
    With --format svg, one blueprint is written to standard output or to -o FILE. Several
    blueprints need either --blueprint NAME or -o DIR, which writes DIR/NAME.svg for each
    (DIR is created if missing).
    In either format, an -o PATH that is an existing directory or ends in `/` writes
    PATH/NAME.dot or PATH/NAME.svg for each blueprint.

EXIT STATUS:
    0  success (also when the crate has no blueprints: a warning is printed)
    1  a source file, manifest or blueprint has errors (all are printed), or SVG rendering failed
    2  usage error: bad arguments, no Cargo.toml, unknown --blueprint NAME

EXAMPLES:
    cargo avto graph
    cargo avto graph --blueprint order_flow --format svg -o order_flow.svg
    cargo avto graph --manifest-path examples/Cargo.toml --format svg -o graphs/
";

/// Output format of `cargo avto graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Dot,
    Svg,
}

/// Parsed arguments of `cargo avto graph`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphArgs {
    pub manifest_path: Option<PathBuf>,
    pub format: Format,
    pub blueprint: Option<String>,
    pub output: Option<PathBuf>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Version,
    Graph(GraphArgs),
}

fn usage(message: impl Into<String>) -> Error {
    Error::Usage(format!("{}\n\nRun `cargo avto --help` for usage.", message.into()))
}

/// Parses the full argument list (program name first). Accepts both `cargo-avto graph ...`
/// and `cargo-avto avto graph ...` (what `cargo avto graph` runs).
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, Error> {
    let mut args: Vec<String> = args
        .into_iter()
        .skip(1)
        .map(|a| a.into_string().map_err(|a| usage(format!("argument is not valid UTF-8: {a:?}"))))
        .collect::<Result<_, _>>()?;
    if args.first().map(String::as_str) == Some("avto") {
        args.remove(0);
    }
    if args.iter().any(|a| a == "-h" || a == "--help") || args.first().map(String::as_str) == Some("help") {
        return Ok(Command::Help);
    }
    if args.iter().any(|a| a == "-V" || a == "--version") {
        return Ok(Command::Version);
    }
    let mut rest = args.into_iter();
    match rest.next().as_deref() {
        Some("graph") => {}
        Some(other) => return Err(usage(format!("unknown command `{other}`; the command is `cargo avto graph`"))),
        None => return Err(usage("missing command; the command is `cargo avto graph`")),
    }

    let mut graph = GraphArgs { manifest_path: None, format: Format::Dot, blueprint: None, output: None };
    let mut seen: Vec<&'static str> = Vec::new();
    while let Some(arg) = rest.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let key: &'static str = match flag.as_str() {
            "--manifest-path" => "--manifest-path",
            "--format" => "--format",
            "--blueprint" => "--blueprint",
            "-o" | "--output" => "--output",
            _ if flag.starts_with('-') => {
                return Err(usage(format!(
                    "unknown option `{flag}`; the options are --manifest-path, --format, --blueprint, -o/--output"
                )))
            }
            _ => return Err(usage(format!("unexpected argument `{arg}`"))),
        };
        if seen.contains(&key) {
            return Err(usage(format!("`{key}` given twice")));
        }
        seen.push(key);
        let value = match inline {
            Some(v) => v,
            None => rest.next().ok_or_else(|| usage(format!("`{flag}` needs a value")))?,
        };
        if value.is_empty() {
            return Err(usage(format!("`{flag}` needs a non-empty value")));
        }
        match key {
            "--manifest-path" => graph.manifest_path = Some(PathBuf::from(value)),
            "--format" => {
                graph.format = match value.as_str() {
                    "dot" => Format::Dot,
                    "svg" => Format::Svg,
                    other => return Err(usage(format!("unknown format `{other}`; use `dot` or `svg`"))),
                }
            }
            "--blueprint" => graph.blueprint = Some(value),
            _ => graph.output = Some(PathBuf::from(value)),
        }
    }
    Ok(Command::Graph(graph))
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

fn file_name(name: &str, ext: &str) -> String {
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') { c } else { '_' }).collect();
    format!("{safe}.{ext}")
}

fn write_file(path: &Path, contents: &str, log: &mut dyn Write) -> Result<(), Error> {
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
    let found = collect(&manifest)?;
    let selected: Vec<&Found> = match &args.blueprint {
        Some(name) => match found.iter().find(|f| &f.name == name) {
            Some(f) => vec![f],
            None => {
                return Err(Error::UnknownBlueprint {
                    name: name.clone(),
                    available: found.iter().map(|f| f.name.clone()).collect(),
                })
            }
        },
        None => found.iter().collect(),
    };
    if selected.is_empty() {
        let _ = writeln!(stderr, "warning: no `#[avto::blueprint]` modules found in {}", manifest.display());
        return Ok(());
    }

    let ext = match args.format {
        Format::Dot => "dot",
        Format::Svg => "svg",
    };
    let output = args.output.as_deref();
    let output_is_dir = output
        .is_some_and(|o| o.is_dir() || o.as_os_str().to_string_lossy().ends_with(['/', std::path::MAIN_SEPARATOR]));
    if args.format == Format::Svg && selected.len() > 1 && !output_is_dir {
        let names: Vec<&str> = selected.iter().map(|f| f.name.as_str()).collect();
        match output {
            Some(o) if o.exists() || o.extension().is_some_and(|e| e == "svg") => {
                return Err(usage(format!(
                    "{} blueprints found ({}), but one SVG file `{}` can hold only one; give --blueprint NAME, or -o DIR to write DIR/NAME.svg for each",
                    names.len(),
                    names.join(", "),
                    o.display()
                )))
            }
            Some(_) => {}
            None => {
                return Err(usage(format!(
                    "{} blueprints found ({}); with --format svg give --blueprint NAME, or -o DIR to write DIR/NAME.svg for each",
                    names.len(),
                    names.join(", ")
                )))
            }
        }
    }
    let per_blueprint_files = output_is_dir || (args.format == Format::Svg && selected.len() > 1);

    // Render everything first, so nothing is written when one blueprint fails.
    let rendered: Vec<(&Found, String)> = match args.format {
        Format::Dot => selected.iter().map(|f| (*f, f.dot.clone())).collect(),
        Format::Svg => {
            let mut out = Vec::new();
            let mut errors = Vec::new();
            for f in &selected {
                match render_svg(&f.dot) {
                    Ok(svg) => out.push((*f, svg)),
                    Err(e) => errors
                        .push(Error::Render { message: format!("blueprint `{}` ({}): {e}", f.name, f.file.display()) }),
                }
            }
            if let Some(e) = Error::from_list(errors) {
                return Err(e);
            }
            out
        }
    };

    match output {
        Some(dir) if per_blueprint_files => {
            for (f, text) in &rendered {
                write_file(&dir.join(file_name(&f.name, ext)), text, stderr)?;
            }
        }
        _ => {
            let text = match args.format {
                Format::Dot => join_dots(rendered.iter().map(|(_, t)| t.as_str())),
                Format::Svg => {
                    let mut svg = rendered[0].1.clone();
                    if !svg.ends_with('\n') {
                        svg.push('\n');
                    }
                    svg
                }
            };
            match output {
                Some(file) => write_file(file, &text, stderr)?,
                None => stdout.write_all(text.as_bytes()).map_err(|e| Error::io(Path::new("<stdout>"), e))?,
            }
        }
    }
    Ok(())
}

/// Entry point of the binary: parses `std::env::args_os()`, runs, prints errors, and returns
/// the exit code (0 ok, 1 errors in sources/blueprints/rendering, 2 usage).
pub fn main() -> i32 {
    let command = match parse_args(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return e.exit_code();
        }
    };
    match command {
        Command::Help => {
            print!("{HELP}");
            0
        }
        Command::Version => {
            println!("cargo-avto {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Command::Graph(args) => {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, Error> {
        parse_args(std::iter::once("cargo-avto").chain(args.iter().copied()).map(OsString::from))
    }

    #[test]
    fn both_invocations() {
        let plain = parse(&["graph", "--format", "svg", "-o", "x.svg", "--blueprint=a"]).unwrap();
        let via_cargo = parse(&["avto", "graph", "--format=svg", "--output", "x.svg", "--blueprint", "a"]).unwrap();
        assert_eq!(plain, via_cargo);
        assert_eq!(
            plain,
            Command::Graph(GraphArgs {
                manifest_path: None,
                format: Format::Svg,
                blueprint: Some("a".into()),
                output: Some("x.svg".into()),
            })
        );
    }

    #[test]
    fn help_and_usage_errors() {
        assert_eq!(parse(&["avto", "graph", "--help"]).unwrap(), Command::Help);
        assert_eq!(parse(&["-h"]).unwrap(), Command::Help);
        assert_eq!(parse(&["avto", "-V"]).unwrap(), Command::Version);
        for bad in [
            &[][..],
            &["avto"],
            &["grap"],
            &["graph", "--format", "png"],
            &["graph", "--blueprint"],
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
