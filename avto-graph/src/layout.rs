//! Laying a graph out once ([`Layout::new`]: layout-rs, panics caught) and keeping what it
//! draws, so that it can be painted to SVG any number of times, with or without an overlay.

use std::cell::Cell;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use layout::core::format::{ClipHandle, RenderBackend};
use layout::core::geometry::Point;
use layout::core::style::StyleAttr;
use layout::gv::{DotParser, GraphBuilder};

use crate::mark::Marks;
use crate::{Error, Overlay};

thread_local! {
    /// Set while layout-rs runs on this thread: its panics are reported as errors, so the
    /// default "thread panicked at ..." message would only be noise.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// How much work layout-rs does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Quality {
    /// Edge-crossing and rank optimizations on (the default): the best-looking layout.
    #[default]
    Best,
    /// Those optimizations off: about 15 times faster on a 50-state blueprint, more crossings.
    Fast,
}

/// One thing layout-rs drew.
#[derive(Clone)]
pub(crate) enum Prim {
    Rect { xy: Point, size: Point, look: StyleAttr, clip: Option<ClipHandle> },
    Line { start: Point, stop: Point, look: StyleAttr },
    Circle { xy: Point, size: Point, look: StyleAttr },
    Text { xy: Point, text: String, look: StyleAttr },
    Arrow { path: Vec<(Point, Point)>, dashed: bool, head: (bool, bool), look: StyleAttr, text: String },
    Clip { xy: Point, size: Point, rounded: usize },
}

/// A graph laid out: lay out once with [`Layout::new`] (the expensive part: a 50-state
/// blueprint takes about 1.7 s with [`Quality::Best`] in an optimized build), then paint it with
/// [`Layout::svg`] or [`Layout::svg_with`] as often as needed (a few milliseconds). An overlay
/// does not change the layout, so the graph of a job stays put while the job moves on.
#[derive(Clone)]
pub struct Layout {
    pub(crate) name: String,
    pub(crate) prims: Vec<Prim>,
    pub(crate) marks: Marks,
    /// A hash of the DOT, for the ids of the SVG.
    pub(crate) hash: u64,
}

impl fmt::Debug for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layout")
            .field("name", &self.name)
            .field("nodes", &self.marks.nodes.len())
            .field("edges", &self.marks.edges.len())
            .finish_non_exhaustive()
    }
}

pub(crate) fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    let mut hash = hash;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

pub(crate) const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

impl Layout {
    /// Lays out a Graphviz DOT graph with [`Quality::Best`].
    ///
    /// layout-rs understands a subset of DOT; the input is first normalized (quoting, HTML
    /// labels reduced to text, unsupported shapes and styles mapped to the nearest supported
    /// ones). Invalid DOT is an [`Error::Syntax`] or [`Error::Parse`], a panic inside layout-rs
    /// an [`Error::Layout`].
    pub fn new(dot: &str) -> Result<Layout, Error> {
        Layout::with_quality(dot, Quality::Best)
    }

    /// [`Layout::new`] with the given [`Quality`].
    pub fn with_quality(dot: &str, quality: Quality) -> Result<Layout, Error> {
        install_quiet_hook();
        let was_quiet = QUIET.with(|q| q.replace(true));
        let result = panic::catch_unwind(AssertUnwindSafe(|| unguarded(dot, quality)));
        QUIET.with(|q| q.set(was_quiet));
        match result {
            Ok(r) => r,
            Err(payload) => {
                let reason = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_string());
                Err(Error::Layout(reason))
            }
        }
    }

    /// The graph's name (`digraph NAME { ... }`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The SVG document of the graph, as [`render_svg`](crate::render_svg) gives it.
    pub fn svg(&self) -> String {
        crate::svg::paint(self, None)
    }

    /// The SVG document with `overlay` drawn over the graph, as
    /// [`render_svg_with`](crate::render_svg_with) gives it.
    pub fn svg_with(&self, overlay: &Overlay) -> String {
        crate::svg::paint(self, Some(overlay))
    }
}

fn unguarded(dot: &str, quality: Quality) -> Result<Layout, Error> {
    let normalized =
        crate::dot::normalize(dot).map_err(|e| Error::Syntax { line: e.line, column: e.column, message: e.message })?;
    let mut parser = DotParser::new(&normalized);
    let mut graph = parser.process().map_err(Error::Parse)?;
    crate::dot::adapt(&mut graph);
    let marks = crate::mark::mark(&mut graph);
    let mut builder = GraphBuilder::new();
    builder.visit_graph(&graph);
    let mut visual = builder.get();
    let mut recorder = Recorder::default();
    visual.do_it(false, quality == Quality::Fast, false, &mut recorder);
    Ok(Layout { name: graph.name.clone(), prims: recorder.prims, marks, hash: fnv(FNV_START, dot.as_bytes()) })
}

#[derive(Default)]
struct Recorder {
    prims: Vec<Prim>,
    clips: usize,
}

impl RenderBackend for Recorder {
    fn draw_rect(&mut self, xy: Point, size: Point, look: &StyleAttr, _: Option<String>, clip: Option<ClipHandle>) {
        self.prims.push(Prim::Rect { xy, size, look: look.clone(), clip });
    }

    fn draw_line(&mut self, start: Point, stop: Point, look: &StyleAttr, _: Option<String>) {
        self.prims.push(Prim::Line { start, stop, look: look.clone() });
    }

    fn draw_circle(&mut self, xy: Point, size: Point, look: &StyleAttr, _: Option<String>) {
        self.prims.push(Prim::Circle { xy, size, look: look.clone() });
    }

    fn draw_text(&mut self, xy: Point, text: &str, look: &StyleAttr) {
        self.prims.push(Prim::Text { xy, text: text.to_string(), look: look.clone() });
    }

    fn draw_arrow(
        &mut self,
        path: &[(Point, Point)],
        dashed: bool,
        head: (bool, bool),
        look: &StyleAttr,
        _: Option<String>,
        text: &str,
    ) {
        self.prims.push(Prim::Arrow { path: path.to_vec(), dashed, head, look: look.clone(), text: text.to_string() });
    }

    fn create_clip(&mut self, xy: Point, size: Point, rounded: usize) -> ClipHandle {
        self.prims.push(Prim::Clip { xy, size, rounded });
        self.clips += 1;
        self.clips - 1
    }
}

/// Replays what layout-rs drew into `backend` (clips get the same handles as at layout time).
pub(crate) fn replay(layout: &Layout, backend: &mut dyn RenderBackend) {
    for p in &layout.prims {
        match p {
            Prim::Rect { xy, size, look, clip } => backend.draw_rect(*xy, *size, look, None, *clip),
            Prim::Line { start, stop, look } => backend.draw_line(*start, *stop, look, None),
            Prim::Circle { xy, size, look } => backend.draw_circle(*xy, *size, look, None),
            Prim::Text { xy, text, look } => backend.draw_text(*xy, text, look),
            Prim::Arrow { path, dashed, head, look, text } => {
                backend.draw_arrow(path, *dashed, *head, look, None, text)
            }
            Prim::Clip { xy, size, rounded } => {
                let _ = backend.create_clip(*xy, *size, *rounded);
            }
        }
    }
}
