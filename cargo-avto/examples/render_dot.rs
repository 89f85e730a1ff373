//! Renders a DOT graph from standard input to SVG on standard output, with the same renderer
//! as `cargo avto graph --format svg`: `cargo run -p cargo-avto --example render_dot < g.dot > g.svg`.
use std::io::{Read, Write};

fn main() {
    let mut dot = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut dot) {
        eprintln!("error: cannot read standard input: {e}");
        std::process::exit(2);
    }
    match cargo_avto::render_svg(&dot) {
        Ok(svg) => {
            let _ = std::io::stdout().write_all(svg.as_bytes());
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
