//! How long laying out a blueprint-shaped graph of N states takes (the cost the
//! `#[avto::blueprint]` macro pays when it draws the graph into the module's rustdoc):
//! `cargo run -p avto-graph --example layout_time -- 50`.
use std::time::Instant;

/// N states in a chain `s0 -> s1 -> ...`, each task state also going to `failed`, every fifth
/// looping back two states: the shape of a large blueprint's DOT.
pub fn blueprint_dot(n: usize) -> String {
    let mut dot = String::from("digraph \"big_flow\" {\n  node [shape=box, style=rounded];\n  \"__start\" [shape=point, label=\"\"];\n  \"__start\" -> \"s0\";\n");
    for i in 0..n {
        dot.push_str(&format!("  \"s{i}\";\n"));
    }
    dot.push_str("  \"finished\" [peripheries=2, label=\"finished\\n(finished)\"];\n  \"failed\" [peripheries=2, label=\"failed\\n(failed)\"];\n");
    for i in 0..n {
        let next = if i + 1 == n { "finished".to_string() } else { format!("s{}", i + 1) };
        dot.push_str(&format!("  \"s{i}\" -> \"{next}\" [label=\"success\"];\n"));
        if i % 2 == 1 {
            dot.push_str(&format!("  \"s{i}\" -> \"failed\" [label=\"failure\"];\n"));
        }
        if i % 5 == 4 {
            dot.push_str(&format!("  \"s{i}\" -> \"s{}\" [label=\"retry\"];\n", i - 2));
        }
    }
    dot.push_str("}\n");
    dot
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    let dot = blueprint_dot(n);
    for round in 0..3 {
        let t = Instant::now();
        let svg = avto_graph::render_svg(&dot).expect("renders");
        println!("{n} states, round {round}: {:?} ({} bytes of SVG)", t.elapsed(), svg.len());
    }
}
