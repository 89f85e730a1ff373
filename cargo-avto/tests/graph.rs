//! Discovery (`collect`), SVG rendering (`render_svg`) and the `cargo-avto` binary, on the
//! fixture crates in `tests/fixtures/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cargo_avto::{collect, render_svg, Error, TargetKind};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn demo_manifest() -> PathBuf {
    fixture("demo/Cargo.toml")
}

/// The blueprints of the demo fixture: (name, module path, file, target kind, states).
const DEMO: &[(&str, &str, &str, TargetKind, &[&str])] = &[
    ("audit_flow", "audit::audit_flow", "src/shared/audit.rs", TargetKind::Bin, &["start", "record", "recorded"]),
    ("custom_flow", "custom_flow", "extra/custom_example.rs", TargetKind::Example, &["start", "custom_end"]),
    ("demo_flow", "demo_flow", "src/main.rs", TargetKind::Bin, &["start", "work", "finished", "failed"]),
    ("order_flow", "flows::order_flow", "src/flows.rs", TargetKind::Bin, &["start", "ship", "shipped", "cancelled"]),
    ("report_flow", "report_flow", "examples/report.rs", TargetKind::Example, &["start", "published", "failed"]),
    ("review_flow", "flows::review::review_flow", "src/flows/review.rs", TargetKind::Bin, &["start", "reviewed"]),
    ("routing_flow", "routing_flow", "src/main.rs", TargetKind::Bin, &["start", "route", "done", "rejected"]),
];

#[test]
fn collects_every_blueprint_of_bins_and_examples_sorted_by_name() {
    let found = collect(&demo_manifest()).unwrap();
    let got: Vec<(&str, &str, PathBuf, TargetKind)> =
        found.iter().map(|f| (f.name.as_str(), f.module.as_str(), f.file.clone(), f.target.kind)).collect();
    let want: Vec<(&str, &str, PathBuf, TargetKind)> =
        DEMO.iter().map(|(n, m, file, k, _)| (*n, *m, fixture("demo").join(file), *k)).collect();
    assert_eq!(got, want);
    for f in &found {
        assert_eq!(f.package, "avto-demo-fixture");
        assert!(f.dot.contains("digraph"), "{}: {}", f.name, f.dot);
    }
    let report = found.iter().find(|f| f.name == "report_flow").unwrap();
    assert_eq!(report.target.name, "report");
    let custom = found.iter().find(|f| f.name == "custom_flow").unwrap();
    assert_eq!(custom.target.name, "custom");
}

#[test]
fn collect_is_deterministic() {
    assert_eq!(collect(&demo_manifest()).unwrap(), collect(&demo_manifest()).unwrap());
}

#[test]
fn virtual_workspace_means_every_member() {
    let found = collect(&fixture("ws/Cargo.toml")).unwrap();
    let got: Vec<(&str, &str, &str, TargetKind, &str)> = found
        .iter()
        .map(|f| (f.name.as_str(), f.package.as_str(), f.module.as_str(), f.target.kind, f.target.name.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("alpha_flow", "alpha", "alpha_flow", TargetKind::Lib, "alpha"),
            ("beta_flow", "beta", "inner::beta_flow", TargetKind::Bin, "tool"),
        ]
    );
}

#[test]
fn duplicate_names_are_an_error_naming_both_files() {
    let err = collect(&fixture("dup/Cargo.toml")).unwrap_err();
    assert_eq!(err.exit_code(), 1);
    let Error::DuplicateBlueprint { name, first, second } = &err else { panic!("{err:?}") };
    assert_eq!(name, "same_name");
    assert_eq!(first, &fixture("dup/src/main.rs"));
    assert_eq!(second, &fixture("dup/src/other.rs"));
    let message = err.to_string();
    assert!(message.contains("dup/src/main.rs") && message.contains("dup/src/other.rs"), "{message}");
}

#[test]
fn every_source_problem_is_reported() {
    let err = collect(&fixture("broken/Cargo.toml")).unwrap_err();
    assert_eq!(err.exit_code(), 1);
    let messages: Vec<String> = err.flatten().iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 4, "{messages:#?}");
    assert!(
        messages.iter().any(|m| m.contains("invalid.rs: invalid_flow: ") && m.contains("no end state")),
        "{messages:#?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("invalid.rs: invalid_flow: ") && m.contains("nowhere")),
        "{messages:#?}"
    );
    assert!(messages.iter().any(|m| m.contains("file not found for module `missing`")), "{messages:#?}");
    assert!(messages.iter().any(|m| m.contains("unparsable.rs: 1:")), "{messages:#?}");
}

#[test]
fn missing_manifest_is_a_usage_error() {
    let err = collect(&fixture("nope/Cargo.toml")).unwrap_err();
    assert!(matches!(err, Error::ManifestNotFound(_)), "{err:?}");
    assert_eq!(err.exit_code(), 2);
}

// ---------------------------------------------------------------------------------------------
// SVG

/// A small XML well-formedness check: one root element, every tag closed in order, quoted
/// attributes, no bare `<` or `&` in text.
fn assert_well_formed_xml(xml: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut roots = 0;
    let mut rest = xml.trim_start();
    if let Some(after) = rest.strip_prefix("<?xml") {
        rest = &after[after.find("?>").expect("unterminated XML declaration") + 2..];
    }
    while !rest.is_empty() {
        let lt = rest.find('<').unwrap_or(rest.len());
        let text = &rest[..lt];
        if stack.is_empty() {
            assert!(text.trim().is_empty(), "text outside the root element: {text:?}");
        }
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..text[i..].find(';').map_or(text.len(), |e| i + e + 1)];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&entity) || entity.starts_with("&#"),
                "bad entity {entity:?}"
            );
        }
        rest = &rest[lt..];
        if rest.is_empty() {
            break;
        }
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = &after[after.find("-->").expect("unterminated comment") + 3..];
            continue;
        }
        // Find the end of the tag, skipping `>` inside quoted attribute values.
        let mut quote = None;
        let end = rest
            .char_indices()
            .find(|&(_, c)| match (quote, c) {
                (None, '"' | '\'') => {
                    quote = Some(c);
                    false
                }
                (Some(q), c) if c == q => {
                    quote = None;
                    false
                }
                (None, '>') => true,
                _ => false,
            })
            .map(|(i, _)| i)
            .expect("unterminated tag");
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().unwrap_or_else(|| panic!("closing </{name}> without an open tag"));
            assert_eq!(open, name.trim(), "mismatched closing tag");
            continue;
        }
        let self_closing = tag.ends_with('/');
        let body = tag.trim_end_matches('/');
        let name: String = body.chars().take_while(|c| !c.is_whitespace()).collect();
        assert!(!name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || ":-_".contains(c)), "bad tag <{tag}>");
        // Attributes: name="value" pairs.
        let mut attrs = body[name.len()..].trim();
        while !attrs.is_empty() {
            let eq = attrs.find('=').unwrap_or_else(|| panic!("attribute without value in <{tag}>"));
            let after = attrs[eq + 1..].trim_start();
            let q = after.chars().next().filter(|c| *c == '"' || *c == '\'');
            let q = q.unwrap_or_else(|| panic!("unquoted attribute in <{tag}>"));
            let close = after[1..].find(q).expect("unterminated attribute value") + 1;
            assert!(!after[1..close].contains('<'), "`<` in attribute value of <{tag}>");
            attrs = after[close + 1..].trim_start();
        }
        if stack.is_empty() {
            roots += 1;
        }
        if !self_closing {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed tags: {stack:?}");
    assert_eq!(roots, 1, "expected exactly one root element");
}

fn assert_svg_with(svg: &str, states: &[&str]) {
    let start = svg.trim_start();
    assert!(
        start.starts_with("<svg") || (start.starts_with("<?xml") && start.contains("<svg")),
        "not an SVG: {}",
        &svg[..svg.len().min(200)]
    );
    assert_well_formed_xml(svg);
    for state in states {
        assert!(svg.contains(&format!(">{state}<")), "state `{state}` is not in the SVG");
    }
}

#[test]
fn the_xml_check_catches_broken_xml() {
    for bad in ["<svg><g></svg>", "<svg></svg><svg></svg>", "<svg a=1></svg>", "<svg>a & b</svg>", "<svg>"] {
        assert!(std::panic::catch_unwind(|| assert_well_formed_xml(bad)).is_err(), "{bad}");
    }
    assert_well_formed_xml("<?xml version=\"1.0\"?><svg a=\"x>y\"><g/><!-- c --><text>&amp;</text></svg>");
}

#[test]
fn renders_every_demo_blueprint_to_svg() {
    for f in collect(&demo_manifest()).unwrap() {
        let states = DEMO.iter().find(|d| d.0 == f.name).unwrap().4;
        let svg = render_svg(&f.dot).unwrap_or_else(|e| panic!("{}: {e}\n{}", f.name, f.dot));
        assert_svg_with(&svg, states);
    }
}

#[test]
fn renders_hand_written_dot() {
    let cases: &[(&str, &[&str])] = &[
        (
            "digraph \"flow\" {\n  rankdir=LR;\n  node [shape=box];\n  start [shape=doublecircle];\n  \
             start -> step_A [label=\"go\"];\n  step_A -> finished [label=\"success\"];\n  \
             step_A -> failed [label=\"failure\", style=dashed];\n  finished [shape=doublecircle];\n}\n",
            &["start", "step_A", "finished", "failed"],
        ),
        ("digraph g { a -> b; b -> c; c -> a; a -> a [label=\"retry & <wait>\"]; }", &["a", "b", "c"]),
        ("digraph { lonely; }", &["lonely"]),
    ];
    for (dot, states) in cases {
        let svg = render_svg(dot).unwrap_or_else(|e| panic!("{e}\n{dot}"));
        assert_svg_with(&svg, states);
        assert!(svg.contains("&lt;wait&gt;") || !dot.contains("<wait>"));
        assert_eq!(render_svg(dot).unwrap(), svg, "SVG output must be deterministic");
    }
}

#[test]
fn unparsable_dot_is_a_clear_error() {
    let err = render_svg("digraph {\n  a -> b;\n  a ~ b;\n}").unwrap_err();
    let message = err.to_string();
    assert!(message.contains("invalid DOT at line 3, column 5: unexpected character `~`"), "{message}");
    let err = render_svg("digraph { a -> [label=x] }").unwrap_err();
    assert!(err.to_string().contains("cannot parse the DOT"), "{err}");
    assert!(render_svg("not dot at all").is_err());
}

// ---------------------------------------------------------------------------------------------
// The binary

fn cargo_avto(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cargo-avto")).args(args).current_dir(cwd).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn tmp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cargo-avto-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn cli_prints_the_dot_of_every_blueprint() {
    let manifest = demo_manifest();
    let manifest = manifest.to_str().unwrap();
    let found = collect(&demo_manifest()).unwrap();
    let want = cargo_avto::cli::join_dots(found.iter().map(|f| f.dot.as_str()));
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    for args in [&["graph", "--manifest-path", manifest][..], &["avto", "graph", "--manifest-path", manifest]] {
        let out = cargo_avto(args, here);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), want);
    }
    // Without --manifest-path: the nearest Cargo.toml above the current directory.
    let out = cargo_avto(&["avto", "graph"], &fixture("demo/src/flows"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), want);
}

#[test]
fn cli_prints_one_blueprint_byte_for_byte() {
    let found = collect(&demo_manifest()).unwrap();
    let demo = found.iter().find(|f| f.name == "demo_flow").unwrap();
    let out = cargo_avto(&["graph", "--blueprint", "demo_flow"], &fixture("demo"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), cargo_avto::cli::join_dots([demo.dot.as_str()]));
    if demo.dot.ends_with('\n') {
        assert_eq!(text(&out.stdout), demo.dot);
    }
}

#[test]
fn cli_unknown_blueprint_is_a_usage_error_listing_the_names() {
    let out = cargo_avto(&["graph", "--blueprint", "nope"], &fixture("demo"));
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(err.contains("no blueprint named `nope`"), "{err}");
    for (name, ..) in DEMO {
        assert!(err.contains(name), "{err}");
    }
}

#[test]
fn cli_usage_errors_exit_2() {
    let demo = fixture("demo");
    for args in [
        &["graph", "--format", "gif"][..],
        &["graph", "--frobnicate"],
        &["frobnicate"],
        &[],
        &["graph", "--manifest-path", "/definitely/not/here/Cargo.toml"],
        // Several blueprints but one SVG output.
        &["graph", "--format", "svg"],
        &["graph", "--format", "svg", "-o", "all.svg"],
        &["graph", "--format", "png"],
        &["graph", "--format", "png", "-o", "all.png"],
        &["graph", "-p", "nope"],
    ] {
        let out = cargo_avto(args, &demo);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).starts_with("error: "), "{args:?}: {}", text(&out.stderr));
    }
    assert!(!demo.join("all.svg").exists() && !demo.join("all.png").exists());
}

#[test]
fn cli_source_errors_exit_1_and_are_all_printed() {
    let out = cargo_avto(&["graph"], &fixture("broken"));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.matches("error: ").count(), 4, "{err}");
    let out = cargo_avto(&["graph"], &fixture("dup"));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("main.rs") && err.contains("other.rs") && err.contains("same_name"), "{err}");
}

#[test]
fn cli_help() {
    for args in [&["--help"][..], &["avto", "--help"], &["avto", "graph", "-h"], &["help"]] {
        let out = cargo_avto(args, Path::new(env!("CARGO_MANIFEST_DIR")));
        assert!(out.status.success());
        let help = text(&out.stdout);
        assert!(help.contains("cargo avto graph") && help.contains("--blueprint") && help.contains("-o DIR"), "{help}");
    }
}

#[test]
fn cli_bad_arguments_are_clap_errors_with_usage() {
    let demo = fixture("demo");
    for args in [&["graph", "--frobnicate"][..], &["avto", "graph", "--format", "gif"], &["graph", "--blueprint"]] {
        let out = cargo_avto(args, &demo);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.starts_with("error: ") && err.contains("try '--help'"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let err = text(&cargo_avto(&["graph", "--frobnicate"], &demo).stderr);
    assert!(err.contains("unexpected argument '--frobnicate'") && err.contains("Usage: cargo avto graph"), "{err}");
    let out = cargo_avto(&["avto", "graph", "--help"], &demo);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for flag in
        ["--manifest-path <PATH>", "--format <FORMAT>", "--blueprint <NAME>", "-o, --output <PATH>", "[default: dot]"]
    {
        assert!(help.contains(flag), "{flag}: {help}");
    }
    let out = cargo_avto(&["--version"], &demo);
    assert_eq!(text(&out.stdout), format!("cargo-avto {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn cli_prints_one_svg() {
    let out = cargo_avto(&["graph", "--format", "svg", "--blueprint", "routing_flow"], &fixture("demo"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert_svg_with(&text(&out.stdout), &["start", "route", "done", "rejected"]);
}

#[test]
fn cli_writes_svg_files() {
    let dir = tmp_dir("svg");
    let file = dir.join("x.svg");
    let out = cargo_avto(
        &["graph", "--format", "svg", "--blueprint", "order_flow", "-o", file.to_str().unwrap()],
        &fixture("demo"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    assert_svg_with(&std::fs::read_to_string(&file).unwrap(), &["start", "ship", "shipped", "cancelled"]);

    // Several blueprints: one NAME.svg each in the -o directory (created if missing).
    let all = dir.join("all");
    let out = cargo_avto(&["avto", "graph", "--format=svg", "-o", all.to_str().unwrap()], &fixture("demo"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut names: Vec<String> =
        std::fs::read_dir(&all).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    let want: Vec<String> = DEMO.iter().map(|d| format!("{}.svg", d.0)).collect();
    assert_eq!(names, want);
    for (name, .., states) in DEMO {
        assert_svg_with(&std::fs::read_to_string(all.join(format!("{name}.svg"))).unwrap(), states);
    }
}

#[test]
fn cli_writes_dot_files() {
    let dir = tmp_dir("dot");
    let file = dir.join("graphs.dot");
    let out = cargo_avto(&["graph", "-o", file.to_str().unwrap()], &fixture("demo"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let found = collect(&demo_manifest()).unwrap();
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        cargo_avto::cli::join_dots(found.iter().map(|f| f.dot.as_str()))
    );
    // An existing directory: one NAME.dot each, byte for byte.
    let out = cargo_avto(&["graph", "-o", dir.to_str().unwrap()], &fixture("demo"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    for f in &found {
        assert_eq!(std::fs::read_to_string(dir.join(format!("{}.dot", f.name))).unwrap(), f.dot);
    }
}

/// Mutated DOT (a small deterministic fuzz): `render_svg` returns `Ok` or `Err`, never panics.
#[test]
fn render_svg_never_panics_on_mutated_dot() {
    let cases: usize = std::env::var("CARGO_AVTO_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(300);
    let mut seeds: Vec<String> = collect(&demo_manifest()).unwrap().into_iter().map(|f| f.dot).collect();
    seeds.push("digraph { a:n -> b:s; b -> a; a -> a; c -- d; subgraph x { e; } { f g } }".into());
    seeds.push("digraph { node [shape=record]; r [label=\"<p> a | { b | c }\"]; r:p -> s; }".into());
    let pieces = [
        "->",
        "--",
        "[",
        "]",
        "{",
        "}",
        ";",
        ",",
        "=",
        ":",
        "\"",
        "\\",
        "<b>",
        "a",
        "_x",
        ".5",
        "-1",
        "subgraph",
        "node",
        "edge",
        "graph",
        "shape=record",
        "label=\"|\"",
        "label=\"\"",
        "label=\"{\"",
        "a:n",
        "\n",
        "#",
        "/*",
        "//",
    ];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let (mut ok, mut err) = (0, 0);
    for i in 0..cases {
        let mut chars: Vec<char> = seeds[i % seeds.len()].chars().collect();
        for _ in 0..1 + next(4) {
            let at = next(chars.len() + 1);
            match next(3) {
                0 if at < chars.len() => {
                    let end = (at + 1 + next(8)).min(chars.len());
                    chars.drain(at..end);
                }
                1 => {
                    let piece = pieces[next(pieces.len())];
                    chars.splice(at..at, piece.chars());
                }
                _ => {
                    let end = (at + next(16)).min(chars.len());
                    let copy: Vec<char> = chars[at..end].to_vec();
                    let to = next(chars.len() + 1);
                    chars.splice(to..to, copy);
                }
            }
        }
        let dot: String = chars.into_iter().collect();
        match render_svg(&dot) {
            Ok(svg) => {
                assert!(svg.starts_with("<?xml"), "{dot}");
                ok += 1;
            }
            Err(Error::Render { .. }) => err += 1,
            Err(e) => panic!("unexpected error kind for {dot:?}: {e:?}"),
        }
    }
    assert!(ok > 0 && err > 0, "ok {ok}, err {err}");
}
