//! `cargo avto graph` must print byte-for-byte the `DOT` constant that `#[avto::blueprint]`
//! generates. The demo fixture's sources are compiled into this test (the same files that
//! `collect` reads), so the two can be compared directly.

use std::path::Path;

#[allow(dead_code)]
#[path = "fixtures/demo/src/main.rs"]
mod demo;

#[allow(dead_code)]
#[path = "fixtures/demo/examples/report.rs"]
mod report;

#[allow(dead_code)]
#[path = "fixtures/demo/extra/custom_example.rs"]
mod custom;

#[test]
fn collected_dot_is_the_macro_dot_byte_for_byte() {
    let compiled: &[(&str, &str)] = &[
        ("audit_flow", demo::audit::audit_flow::DOT),
        ("custom_flow", custom::custom_flow::DOT),
        ("demo_flow", demo::demo_flow::DOT),
        ("order_flow", demo::flows::order_flow::DOT),
        ("report_flow", report::report_flow::DOT),
        ("review_flow", demo::flows::review::review_flow::DOT),
        ("routing_flow", demo::routing_flow::DOT),
    ];
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/demo/Cargo.toml");
    let found = cargo_avto::collect(&manifest).unwrap();
    let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, compiled.iter().map(|c| c.0).collect::<Vec<_>>());
    for (f, (name, dot)) in found.iter().zip(compiled) {
        assert_eq!(&f.dot, dot, "DOT of `{name}` differs from the macro's");
    }
}

#[test]
fn the_cli_prints_the_macro_dot() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cargo-avto"))
        .args(["graph", "--blueprint", "routing_flow"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/demo"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), cargo_avto::cli::join_dots([demo::routing_flow::DOT]));
}
