//! `cargo avto graph` at workspace roots (per-package names, `-p`, grouped output) and
//! `--format png`: on fixture workspaces written to a temporary directory, and on this very
//! workspace.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cargo_avto::{collect, collect_packages, Error};

fn cargo_avto(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cargo-avto")).args(args).current_dir(cwd).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn tmp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cargo-avto-ws-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

fn blueprint(name: &str, states: &[&str]) -> String {
    let mut src = format!(
        "#[avto::blueprint(name = \"{name}\", api_version = \"v1\", api_endpoint = \"jobs/{name}\")]\npub mod {name} {{\n    use avto::prelude::*;\n"
    );
    for (i, state) in states.iter().enumerate() {
        let marker = if i == 0 {
            ", start"
        } else if i + 1 == states.len() {
            ", end"
        } else {
            ""
        };
        let body = match states.get(i + 1) {
            Some(next) if i + 1 < states.len() => format!("actions.transition_to(\"{next}\");"),
            _ => String::new(),
        };
        let args = if body.is_empty() { "" } else { "actions: &mut Actions" };
        src.push_str(&format!(
            "    #[handler(state = \"{state}\"{marker})]\n    async fn h_{state}({args}) {{ {body} }}\n"
        ));
    }
    src.push_str("}\n");
    src
}

/// A virtual workspace of three packages: `one` and `two` both have a blueprint `shared_flow`,
/// `three` has none. Optionally a root package too.
fn fixture(name: &str, root_package: bool) -> PathBuf {
    let dir = tmp_dir(name);
    let root = if root_package {
        "[package]\nname = \"root-pkg\"\nversion = \"0.1.0\"\n\n[workspace]\nmembers = [\".\", \"crates/*\"]\n"
    } else {
        "[workspace]\nmembers = [\"crates/*\"]\n"
    };
    write(&dir.join("Cargo.toml"), root);
    if root_package {
        write(&dir.join("src/lib.rs"), &blueprint("root_flow", &["start", "done"]));
    }
    for (pkg, src) in [
        ("one", blueprint("shared_flow", &["start", "work", "done"]) + &blueprint("one_flow", &["start", "done"])),
        ("two", blueprint("shared_flow", &["start", "other", "finished"])),
        ("three", "pub fn nothing() {}\n".to_string()),
    ] {
        write(
            &dir.join(format!("crates/{pkg}/Cargo.toml")),
            &format!("[package]\nname = \"{pkg}\"\nversion = \"0.1.0\"\n"),
        );
        write(&dir.join(format!("crates/{pkg}/src/lib.rs")), &src);
    }
    dir
}

#[test]
fn names_need_only_be_unique_within_a_package() {
    let dir = fixture("unique", false);
    let (found, packages) = collect_packages(&dir.join("Cargo.toml"), &[]).unwrap();
    assert_eq!(packages, ["one", "three", "two"]);
    let got: Vec<(&str, &str)> = found.iter().map(|f| (f.package.as_str(), f.name.as_str())).collect();
    assert_eq!(got, [("one", "one_flow"), ("one", "shared_flow"), ("two", "shared_flow")]);
    // Within one package a duplicate is still an error.
    write(
        &dir.join("crates/two/src/lib.rs"),
        &(blueprint("shared_flow", &["a", "b"]) + "pub mod again {\n" + &blueprint("shared_flow", &["c", "d"]) + "}\n"),
    );
    let err = collect(&dir.join("Cargo.toml")).unwrap_err();
    assert!(matches!(err, Error::DuplicateBlueprint { .. }), "{err:?}");
    assert!(err.to_string().contains("unique within a package"), "{err}");
}

#[test]
fn package_selection() {
    let dir = fixture("select", false);
    let manifest = dir.join("Cargo.toml");
    let names = |p: &[&str]| -> Vec<(String, String)> {
        let p: Vec<String> = p.iter().map(|s| s.to_string()).collect();
        collect_packages(&manifest, &p).unwrap().0.into_iter().map(|f| (f.package, f.name)).collect()
    };
    assert_eq!(names(&["two"]), [("two".to_string(), "shared_flow".to_string())]);
    // Workspace order whatever the order of the -p flags; repeated names count once.
    assert_eq!(
        names(&["two", "one", "two"]).iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        ["one", "one", "two"]
    );
    let err = collect_packages(&manifest, &["nope".to_string()]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("one, three, two"), "{err}");

    // A root package that is also the workspace root: itself by default, members with -p.
    let dir = fixture("rooted", true);
    let manifest = dir.join("Cargo.toml");
    let (found, packages) = collect_packages(&manifest, &[]).unwrap();
    assert_eq!((packages.as_slice(), found.len()), (&["root-pkg".to_string()][..], 1));
    let (found, _) = collect_packages(&manifest, &["root-pkg".into(), "two".into()]).unwrap();
    let got: Vec<(&str, &str)> = found.iter().map(|f| (f.package.as_str(), f.name.as_str())).collect();
    assert_eq!(got, [("root-pkg", "root_flow"), ("two", "shared_flow")]);
}

#[test]
fn cli_groups_output_by_package() {
    let dir = fixture("cli", false);
    let out = cargo_avto(&["avto", "graph"], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let packages: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("// package: ")).collect();
    assert_eq!(packages, ["one", "two"], "{stdout}");
    assert_eq!(stdout.matches("digraph \"shared_flow\"").count(), 2, "{stdout}");

    // One package: no grouping lines, as in a package directory.
    let out = cargo_avto(&["graph", "-p", "two"], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("// package"));
    assert!(text(&out.stdout).starts_with("digraph \"shared_flow\""));

    // -o DIR: DIR/PACKAGE/NAME.svg.
    let svgs = dir.join("svgs");
    let out = cargo_avto(&["graph", "--format", "svg", "-o", svgs.to_str().unwrap()], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for file in ["one/one_flow.svg", "one/shared_flow.svg", "two/shared_flow.svg"] {
        let svg = std::fs::read_to_string(svgs.join(file)).unwrap();
        assert!(svg.contains("role=\"img\""), "{file}");
    }
    assert!(std::fs::read_to_string(svgs.join("two/shared_flow.svg")).unwrap().contains(">other</tspan>"));

    // A blueprint name found in two packages needs -p.
    let out = cargo_avto(&["graph", "--blueprint", "shared_flow", "--format", "svg"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("several packages (one, two)"), "{}", text(&out.stderr));
    let out = cargo_avto(&["graph", "--blueprint", "shared_flow", "-p", "two", "--format", "svg"], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(">finished"));
}

fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

fn svg_size(svg: &str) -> (f32, f32) {
    let attr = |name: &str| -> f32 {
        let at = svg.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        svg[at..].split('"').next().unwrap().parse().unwrap()
    };
    (attr("width"), attr("height"))
}

#[test]
fn cli_png_has_the_svg_layout() {
    let dir = fixture("png", false);
    let svg = cargo_avto(&["graph", "-p", "two", "--format", "svg"], &dir);
    assert!(svg.status.success(), "{}", text(&svg.stderr));
    let (w, h) = svg_size(&text(&svg.stdout));

    // One blueprint to standard output, at the default scale 2.
    let out = cargo_avto(&["graph", "-p", "two", "--format", "png"], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(png_size(&out.stdout), ((w * 2.0).ceil() as u32, (h * 2.0).ceil() as u32));

    // -o FILE, --scale 1.
    let file = dir.join("out/one.png");
    let out =
        cargo_avto(&["graph", "-p", "two", "--format", "png", "--scale", "1", "-o", file.to_str().unwrap()], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    assert_eq!(png_size(&std::fs::read(&file).unwrap()), (w.ceil() as u32, h.ceil() as u32));

    // Several: -o DIR/ gives DIR/PACKAGE/NAME.png.
    let pngs = dir.join("pngs/");
    let out = cargo_avto(&["graph", "--format", "png", "-o", pngs.to_str().unwrap()], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for file in ["one/one_flow.png", "one/shared_flow.png", "two/shared_flow.png"] {
        let (pw, ph) = png_size(&std::fs::read(pngs.join(file)).unwrap());
        assert!(pw > 50 && ph > 50, "{file}");
    }
}

/// This repository: `cargo avto graph` at its root graphs every member package, although
/// `echo_flow` is a blueprint of both `avto-examples` and `avto-tests`.
#[test]
fn this_workspace() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = cargo_avto(&["graph"], root);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let packages: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("// package: ")).collect();
    assert!(packages.contains(&"avto-examples") && packages.contains(&"avto-tests"), "{packages:?}");
    assert!(stdout.matches("digraph \"echo_flow\"").count() >= 2, "{stdout}");

    let out = cargo_avto(&["graph", "-p", "avto-tests", "--blueprint", "echo_flow"], root);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("digraph \"echo_flow\""));
    let out = cargo_avto(&["graph", "--blueprint", "echo_flow"], root);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}
