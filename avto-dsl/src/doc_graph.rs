//! The state graph drawn into a blueprint module's rustdoc.
//!
//! Laying a graph out is slow (layout-rs: ~50 ms for 10 states, seconds for 50 in a debug
//! build of the macro), so the macro only does it when the compiler running it is **rustdoc
//! building documentation**: `cargo build`, `cargo check`, `cargo test`, rust-analyzer and
//! doctests pay nothing. A proc macro runs inside the compiler process, so it tells rustdoc
//! from rustc by the process's executable name. `AVTO_DOC_GRAPH=0` turns the graph off,
//! `AVTO_DOC_GRAPH=1` draws it under rustc too (to measure it, or for tools that render docs
//! from expanded code).

use avto_graph::{Layout, Quality};

/// More states than this: the graph is laid out with [`Quality::Fast`].
const BEST_UP_TO: usize = 20;
/// More states than this: no graph, a pointer to `cargo avto graph` instead.
const MAX_STATES: usize = 200;

/// Whether to draw the graph into the docs in this compiler process.
pub fn wanted() -> bool {
    decide(std::env::var("AVTO_DOC_GRAPH").ok().as_deref(), running_rustdoc)
}

fn decide(setting: Option<&str>, rustdoc: impl FnOnce() -> bool) -> bool {
    match setting.map(str::trim) {
        Some("0" | "false" | "never" | "off") => false,
        Some("1" | "true" | "always" | "on") => true,
        _ => rustdoc(),
    }
}

/// rustdoc writing documentation, not running doctests (`rustdoc --test`).
fn running_rustdoc() -> bool {
    let exe = std::env::current_exe().ok();
    let stem = exe.as_deref().and_then(|p| p.file_stem()).and_then(|s| s.to_str()).unwrap_or_default();
    stem.starts_with("rustdoc") && !std::env::args().any(|a| a == "--test")
}

/// The Markdown appended to the module's docs: a heading and the graph as inline SVG (an HTML
/// block, so without blank lines), or a sentence when the graph cannot be drawn.
pub fn markdown(name: &str, dot: &str, states: usize) -> String {
    let mut out = String::from("\n\n# State graph\n\n");
    if states > MAX_STATES {
        out.push_str(&format!(
            "{states} states are too many to draw here; `cargo avto graph --blueprint {name} --format svg` draws them.\n"
        ));
        return out;
    }
    let quality = if states > BEST_UP_TO { Quality::Fast } else { Quality::Best };
    match Layout::with_quality(dot, quality) {
        Ok(layout) => {
            let svg = layout.svg();
            let svg = svg.split_once("?>").map_or(svg.as_str(), |(_, rest)| rest).trim();
            out.push_str("<div class=\"avto-graph\" style=\"overflow-x:auto\">\n");
            for line in svg.lines().filter(|l| !l.trim().is_empty()) {
                out.push_str(line);
                out.push('\n');
            }
            out.push_str("</div>\n");
        }
        Err(e) => out.push_str(&format!("The graph could not be drawn ({e}); `cargo avto graph` prints its DOT.\n")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_overrides_the_detection() {
        assert!(!decide(Some("0"), || true));
        assert!(!decide(Some(" off "), || true));
        assert!(decide(Some("1"), || false));
        assert!(decide(None, || true));
        assert!(!decide(None, || false));
        assert!(decide(Some("other"), || true));
        // The tests run under rustc's test harness, not rustdoc.
        assert!(!running_rustdoc());
    }

    #[test]
    fn markdown_is_a_heading_and_one_html_block() {
        let dot = "digraph \"f\" {\n  node [shape=box, style=rounded];\n  \"start\";\n  \"done\" [peripheries=2, label=\"done\\n(finished)\"];\n  \"start\" -> \"done\" [label=\"a < b & c\"];\n}\n";
        let md = markdown("f", dot, 2);
        assert!(md.starts_with("\n\n# State graph\n\n<div class=\"avto-graph\""), "{md}");
        assert!(md.ends_with("</svg>\n</div>\n"), "{md}");
        assert!(!md.contains("<?xml"), "{md}");
        // A blank line would end the HTML block and turn the rest into Markdown text.
        let html = &md["\n\n# State graph\n\n".len()..];
        assert!(!html.contains("\n\n"), "{html}");
        assert!(html.contains("role=\"img\"") && html.contains(">start</tspan>") && html.contains("a &lt; b &amp; c"));
    }

    #[test]
    fn too_large_or_broken_graphs_get_a_sentence() {
        let md = markdown("huge", "digraph { a -> b }", MAX_STATES + 1);
        assert!(md.contains("too many to draw") && md.contains("--blueprint huge") && !md.contains("<svg"), "{md}");
        let md = markdown("bad", "digraph { a ~ b }", 2);
        assert!(md.contains("could not be drawn") && !md.contains("<svg"), "{md}");
    }
}
