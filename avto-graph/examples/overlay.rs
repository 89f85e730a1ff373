//! Renders DOT from standard input with the overlay of a path given as arguments (the last one
//! is the current state): `cargo run -p avto-graph --features png --example overlay -- out.png start a b < g.dot`
//! writes `out.png` and `out.svg`.
use std::io::Read;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((out, path)) = args.split_first() else {
        eprintln!("usage: overlay OUT.png [STATE...] < graph.dot");
        std::process::exit(2);
    };
    let mut dot = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut dot) {
        eprintln!("error: cannot read standard input: {e}");
        std::process::exit(2);
    }
    let overlay = avto_graph::Overlay::from_path(path, path.last().map(String::as_str));
    let result = avto_graph::render_svg_with(&dot, &overlay)
        .and_then(|svg| avto_graph::render_png(&svg, 2.0).map(|png| (svg, png)));
    match result {
        Ok((svg, png)) => {
            let svg_path = std::path::Path::new(out).with_extension("svg");
            if let Err(e) = std::fs::write(out, png).and_then(|()| std::fs::write(&svg_path, svg)) {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
