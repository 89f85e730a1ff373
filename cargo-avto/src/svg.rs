//! DOT -> SVG with the pure-Rust `layout-rs` crate (no system Graphviz).

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use layout::backends::svg::SVGWriter;
use layout::core::format::{ClipHandle, RenderBackend};
use layout::core::geometry::Point;
use layout::core::style::StyleAttr;
use layout::gv::{DotParser, GraphBuilder};

use crate::Error;

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

/// Lays out a Graphviz DOT graph and renders it to an SVG document (a string starting with
/// `<?xml`), without a system Graphviz.
///
/// layout-rs understands a subset of DOT; the input is first normalized (quoting, HTML labels
/// reduced to text, unsupported shapes and styles mapped to the nearest supported ones).
/// Invalid DOT, and any panic inside layout-rs, becomes an [`Error::Render`].
pub fn render_svg(dot: &str) -> Result<String, Error> {
    install_quiet_hook();
    QUIET.with(|q| q.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(|| render_unguarded(dot)));
    QUIET.with(|q| q.set(false));
    match result {
        Ok(r) => r,
        Err(payload) => {
            let reason = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(Error::Render { message: format!("layout-rs failed to lay out the graph: {reason}") })
        }
    }
}

fn render_unguarded(dot: &str) -> Result<String, Error> {
    let normalized = crate::dot::normalize(dot).map_err(|e| Error::Render {
        message: format!("invalid DOT at line {}, column {}: {}", e.line, e.column, e.message),
    })?;
    let mut parser = DotParser::new(&normalized);
    let mut graph =
        parser.process().map_err(|e| Error::Render { message: format!("layout-rs cannot parse the DOT: {e}") })?;
    crate::dot::adapt(&mut graph);
    let mut builder = GraphBuilder::new();
    builder.visit_graph(&graph);
    let mut visual = builder.get();
    let mut writer = Bounded::default();
    visual.do_it(false, false, false, &mut writer);
    Ok(writer.finish())
}

/// An [`SVGWriter`] that also tracks the bounding box of what is drawn: layout-rs sizes the
/// canvas from a rough guess (a label of n characters counts as n*10 pixels *high*), which
/// leaves large empty margins; [`Bounded::finish`] sets a tight `viewBox` instead.
#[derive(Default)]
struct Bounded {
    svg: SVGWriter,
    min: Option<Point>,
    max: Option<Point>,
}

/// Empty space around the drawing, in pixels.
const MARGIN: f64 = 8.0;

impl Bounded {
    fn include(&mut self, x: f64, y: f64) {
        if !x.is_finite() || !y.is_finite() {
            return;
        }
        let min = self.min.get_or_insert(Point::new(x, y));
        min.x = min.x.min(x);
        min.y = min.y.min(y);
        let max = self.max.get_or_insert(Point::new(x, y));
        max.x = max.x.max(x);
        max.y = max.y.max(y);
    }

    fn finish(self) -> String {
        let svg = deterministic(self.svg.finalize());
        let (Some(min), Some(max)) = (self.min, self.max) else { return svg };
        let (x, y) = ((min.x - MARGIN).floor(), (min.y - MARGIN).floor());
        let (w, h) = ((max.x + MARGIN).ceil() - x, (max.y + MARGIN).ceil() - y);
        // The header is `<svg width="W" height="H" viewBox="0 0 W H" xmlns=...>`.
        let Some(start) = svg.find("<svg width=") else { return svg };
        let Some(end) = svg[start..].find(" xmlns=").map(|e| start + e) else { return svg };
        format!("{}<svg width=\"{w}\" height=\"{h}\" viewBox=\"{x} {y} {w} {h}\"{}", &svg[..start], &svg[end..])
    }
}

impl RenderBackend for Bounded {
    fn draw_rect(
        &mut self,
        xy: Point,
        size: Point,
        look: &StyleAttr,
        properties: Option<String>,
        clip: Option<ClipHandle>,
    ) {
        let pad = look.line_width as f64 / 2.0;
        self.include(xy.x - pad, xy.y - pad);
        self.include(xy.x + size.x + pad, xy.y + size.y + pad);
        self.svg.draw_rect(xy, size, look, properties, clip);
    }

    fn draw_line(&mut self, start: Point, stop: Point, look: &StyleAttr, properties: Option<String>) {
        self.include(start.x, start.y);
        self.include(stop.x, stop.y);
        self.svg.draw_line(start, stop, look, properties);
    }

    fn draw_circle(&mut self, xy: Point, size: Point, look: &StyleAttr, properties: Option<String>) {
        let pad = look.line_width as f64 / 2.0;
        self.include(xy.x - size.x / 2.0 - pad, xy.y - size.y / 2.0 - pad);
        self.include(xy.x + size.x / 2.0 + pad, xy.y + size.y / 2.0 + pad);
        self.svg.draw_circle(xy, size, look, properties);
    }

    fn draw_text(&mut self, xy: Point, text: &str, look: &StyleAttr) {
        let mut look = look.clone();
        if look.font_size == crate::dot::EDGE_LAYOUT_FONT {
            look.font_size = crate::dot::EDGE_RENDER_FONT;
        }
        // The SVG writer centres the lines on x and starts them half the block above y; a serif
        // glyph is about 0.6 em wide at most on average.
        let font = look.font_size as f64;
        let lines = text.lines().count().max(1) as f64;
        let longest = text.lines().map(|l| l.chars().count()).max().unwrap_or(0) as f64;
        let half_width = longest * font * 0.6 / 2.0;
        let top = xy.y - (lines + 1.0) * font / 2.0;
        self.include(xy.x - half_width, top);
        self.include(xy.x + half_width, top + (lines + 0.5) * font);
        self.svg.draw_text(xy, text, &look);
    }

    fn draw_arrow(
        &mut self,
        path: &[(Point, Point)],
        dashed: bool,
        head: (bool, bool),
        look: &StyleAttr,
        properties: Option<String>,
        text: &str,
    ) {
        // A cubic Bézier lies inside the hull of its control points.
        for (a, b) in path {
            self.include(a.x, a.y);
            self.include(b.x, b.y);
        }
        self.svg.draw_arrow(path, dashed, head, look, properties, text);
    }

    fn create_clip(&mut self, xy: Point, size: Point, rounded_px: usize) -> ClipHandle {
        self.svg.create_clip(xy, size, rounded_px)
    }
}

/// layout-rs writes its `<style>` rules in hash-map order; sort them so the same DOT always
/// gives the same bytes.
fn deterministic(svg: String) -> String {
    let (Some(start), Some(end)) = (svg.find("<style>\n"), svg.find("</style>")) else { return svg };
    let body_start = start + "<style>\n".len();
    if end < body_start {
        return svg;
    }
    let mut rules: Vec<&str> = svg[body_start..end].lines().collect();
    rules.sort_unstable();
    let mut sorted = rules.join("\n");
    if !sorted.is_empty() {
        sorted.push('\n');
    }
    format!("{}{}{}", &svg[..body_start], sorted, &svg[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for dot in ["", "digraph", "digraph {", "digraph { a -> }", "graph { a ~ b }", "{}", "digraph { a [label=] }"] {
            assert!(matches!(render_svg(dot), Err(Error::Render { .. })), "{dot:?}");
        }
    }

    #[test]
    fn layout_rs_panics_become_errors() {
        // Both panic inside layout-rs 0.1.3 (empty graph; record parser on an empty label).
        for dot in ["digraph { }", "digraph { r [shape=record, label=\"\"]; }"] {
            let err = render_svg(dot).unwrap_err().to_string();
            assert!(err.starts_with("layout-rs failed to lay out the graph: "), "{dot}: {err}");
        }
        // The thread is still usable, and its panics are reported normally again.
        assert!(render_svg("digraph { a -> b }").is_ok());
        assert!(!QUIET.with(Cell::get));
    }
}
