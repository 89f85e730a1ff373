//! Graphviz DOT to SVG (and PNG) in pure Rust, for avto's blueprint graphs.
//!
//! - [`render_svg`] lays a DOT graph out with the `layout-rs` crate (no system Graphviz) and
//!   writes an SVG document.
//! - [`render_svg_with`] draws the same graph with an [`Overlay`]: the path a job actually
//!   took. Visited states and taken edges are drawn in blue and bold, an edge taken more than
//!   once is labelled `×n`, states never visited are greyed, and the current state is marked by
//!   its *shape* (a second, outer border) as well as its colour (orange).
//! - [`render_png`] (feature `png`) rasterises such an SVG with `resvg`. Text is drawn with a
//!   bundled copy of DejaVu Sans Mono (its license is in `fonts/LICENSE-DejaVu.txt`), so it
//!   renders on a machine without any system font.
//!
//! The SVG uses presentation attributes only (no `<style>` element, no script), so it displays
//! under a strict Content-Security-Policy whether it is inlined into a page or loaded as an
//! image. It has `role="img"` and a `<title>` (the graph's name, plus the current state and
//! path with an overlay); each state is a `<g class="node ...">` with its own `<title>` and a
//! `data-state` attribute, each edge a `<g class="edge ...">` with `data-from` / `data-to`.
//! Text is set in a monospace font, whose width is what layout-rs assumes when it sizes boxes.
//!
//! Nothing here panics on any input: invalid DOT is an [`Error`], and a panic inside layout-rs
//! is caught and reported as [`Error::Layout`].
//!
//! ```
//! use avto_graph::{render_svg, render_svg_with, Overlay};
//!
//! let dot = "digraph flow { start -> work; work -> work [label=\"retry\"]; work -> done; }";
//! let plain = render_svg(dot)?;
//! assert!(plain.contains("role=\"img\""));
//!
//! let path: Vec<String> = ["start", "work", "work", "work"].map(String::from).to_vec();
//! let overlay = Overlay::from_path(&path, Some("work"));
//! let svg = render_svg_with(dot, &overlay)?;
//! assert!(svg.contains("retry ×2"));
//! # Ok::<(), avto_graph::Error>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

mod dot;
mod layout;
mod mark;
#[cfg(feature = "png")]
mod png;
mod svg;

pub use layout::{Layout, Quality};
#[cfg(feature = "png")]
pub use png::{render_png, MAX_PNG_SIDE};
pub use svg::{render_svg, render_svg_with};

/// Why a graph could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The DOT does not lex (1-based line and column of the input).
    Syntax { line: usize, column: usize, message: String },
    /// layout-rs cannot parse the (normalized) DOT.
    Parse(String),
    /// layout-rs failed (it panicked) while laying the graph out.
    Layout(String),
    /// The SVG could not be rasterised (feature `png`).
    Png(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Syntax { line, column, message } => {
                write!(f, "invalid DOT at line {line}, column {column}: {message}")
            }
            Error::Parse(m) => write!(f, "layout-rs cannot parse the DOT: {m}"),
            Error::Layout(m) => write!(f, "layout-rs failed to lay out the graph: {m}"),
            Error::Png(m) => write!(f, "cannot render the SVG to PNG: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// The path a job took through its graph, drawn over it by [`render_svg_with`].
///
/// Names are node names of the DOT (for a blueprint, its state names). Names and edges that are
/// not in the graph are ignored, except a taken edge between two states of the graph that the
/// graph lacks: it is drawn dashed. The start marker of a blueprint's DOT (the point node
/// `__start`) and its edge count as visited and taken once the start state is visited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlay {
    /// States visited at least once.
    pub visited: BTreeSet<String>,
    /// How many times each edge `(from, to)` was taken.
    pub edges: BTreeMap<(String, String), u32>,
    /// The state the job is in now (for a finished job, its end state), if any.
    pub current: Option<String>,
}

impl Overlay {
    /// The overlay of a job whose states, in the order visited, are `path` (avto's
    /// `Job::path`): every state is visited, each consecutive pair is one taking of that edge.
    pub fn from_path(path: &[String], current: Option<&str>) -> Self {
        let mut overlay = Overlay { current: current.map(str::to_string), ..Overlay::default() };
        overlay.visited.extend(path.iter().cloned());
        overlay.visited.extend(overlay.current.clone());
        for pair in path.windows(2) {
            let count = overlay.edges.entry((pair[0].clone(), pair[1].clone())).or_insert(0);
            *count = count.saturating_add(1);
        }
        overlay
    }
}
