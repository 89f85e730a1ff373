//! Layout with layout-rs and the SVG writer (a `RenderBackend` of our own: presentation
//! attributes only, a tight `viewBox`, accessible names, overlay colours).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use layout::core::color::Color;
use layout::core::format::{ClipHandle, RenderBackend};
use layout::core::geometry::Point;
use layout::core::style::StyleAttr;

use crate::layout::{fnv, replay, Layout};
use crate::mark::{EdgeClass, Marker, Marks, NodeClass};
use crate::{Error, Overlay};

/// Lays out a Graphviz DOT graph and renders it to an SVG document (a string starting with
/// `<?xml`), without a system Graphviz: [`Layout::new`] then [`Layout::svg`].
///
/// layout-rs understands a subset of DOT; the input is first normalized (quoting, HTML labels
/// reduced to text, unsupported shapes and styles mapped to the nearest supported ones).
/// Invalid DOT is an [`Error::Syntax`] or [`Error::Parse`], a panic inside layout-rs an
/// [`Error::Layout`]. The same DOT always gives the same bytes.
pub fn render_svg(dot: &str) -> Result<String, Error> {
    Layout::new(dot).map(|l| l.svg())
}

/// Like [`render_svg`], with the path a job took drawn over the graph (see [`Overlay`]):
/// visited states and taken edges in blue and bold, `×n` on edges taken n > 1 times, states
/// never visited in grey, the current state in orange with a second, outer border. The layout
/// is exactly that of [`render_svg`]; a taken edge the graph lacks is drawn dashed over it.
/// To draw many overlays on one graph, lay it out once with [`Layout::new`].
pub fn render_svg_with(dot: &str, overlay: &Overlay) -> Result<String, Error> {
    Layout::new(dot).map(|l| l.svg_with(overlay))
}

/// Paints a laid-out graph, with an overlay or without.
pub(crate) fn paint(layout: &Layout, overlay: Option<&Overlay>) -> String {
    let mut marks = layout.marks.clone();
    marks.classify(overlay);
    // Ids differ between SVGs that may share an HTML page: a hash of the DOT and the overlay.
    let hash = match overlay {
        Some(o) => fnv(layout.hash, format!("{o:?}").as_bytes()),
        None => layout.hash,
    };
    let mut writer = Writer::new(marks, format!("g{:08x}", hash as u32));
    replay(layout, &mut writer);
    writer.finish(&layout.name, overlay)
}

/// Empty space around the drawing, in pixels.
const MARGIN: f64 = 8.0;
/// Text is set in a monospace font: each character is this many ems wide, which is what the
/// bounding box assumes (layout-rs reserves a whole em per character).
const CHAR_WIDTH_EM: f64 = 0.6;
/// Space between an edge label's end and its edge, in pixels.
const EDGE_LABEL_GAP: f64 = 3.0;
/// The font stack; DejaVu Sans Mono is the one `render_png` bundles.
pub(crate) const FONT_FAMILY: &str = "'DejaVu Sans Mono', Menlo, Consolas, 'Liberation Mono', monospace";

const BLUE: &str = "#1565c0";
const BLUE_FILL: &str = "#e3f2fd";
const BLUE_INK: &str = "#0b3a75";
const ORANGE: &str = "#d84315";
const ORANGE_FILL: &str = "#fff3e0";
const GREY: &str = "#9e9e9e";
const GREY_FILL: &str = "#f4f4f4";
/// Text of states never visited: 6:1 contrast on [`GREY_FILL`], still readable.
const GREY_INK: &str = "#5f5f5f";
const EDGE_GREY: &str = "#b0b0b0";

fn num(v: f64) -> String {
    let v = if v.is_finite() { (v * 100.0).round() / 100.0 } else { 0.0 };
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

fn web(c: &Color) -> String {
    let w = c.to_web_color();
    match w.strip_suffix("ff") {
        Some(rgb) if w.len() == 9 => rgb.to_string(),
        _ => w,
    }
}

/// Dark enough that text on it would need to be light.
fn is_dark(c: &Color) -> bool {
    let v = u32::from_str_radix(c.to_web_color().trim_start_matches('#'), 16).unwrap_or(0xffff_ffff);
    let (r, g, b, a) = ((v >> 24) & 0xff, (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff);
    a > 0x80 && (r * 299 + g * 587 + b * 114) / 1000 < 110
}

pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Not allowed in XML 1.0.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// One drawn piece, with the node or edge it belongs to.
struct Item {
    owner: Option<Marker>,
    body: String,
}

struct Writer {
    marks: Marks,
    prefix: String,
    items: Vec<Item>,
    clips: Vec<String>,
    /// Arrow heads used: (colour, at the start).
    heads: BTreeSet<(String, bool)>,
    min: Option<Point>,
    max: Option<Point>,
    /// Bounding box of each node's drawing (for the current state's outer border).
    node_boxes: Vec<Option<(Point, Point)>>,
    /// Edges whose `×n` is drawn.
    counts_drawn: BTreeSet<usize>,
}

/// The colours and width a piece is drawn with.
struct Paint {
    stroke: String,
    fill: Option<String>,
    ink: String,
    width: f64,
    bold: bool,
}

impl Writer {
    fn new(marks: Marks, prefix: String) -> Self {
        let n = marks.nodes.len();
        Writer {
            marks,
            prefix,
            items: Vec::new(),
            clips: Vec::new(),
            heads: BTreeSet::new(),
            min: None,
            max: None,
            node_boxes: vec![None; n],
            counts_drawn: BTreeSet::new(),
        }
    }

    fn include(&mut self, owner: Option<Marker>, x: f64, y: f64) {
        if !x.is_finite() || !y.is_finite() {
            return;
        }
        let grow = |min: &mut Option<Point>, max: &mut Option<Point>| {
            let lo = min.get_or_insert(Point::new(x, y));
            lo.x = lo.x.min(x);
            lo.y = lo.y.min(y);
            let hi = max.get_or_insert(Point::new(x, y));
            hi.x = hi.x.max(x);
            hi.y = hi.y.max(y);
        };
        grow(&mut self.min, &mut self.max);
        if let Some(Marker::Node(i)) = owner {
            if let Some(slot) = self.node_boxes.get_mut(i) {
                let (mut lo, mut hi) = slot.map_or((None, None), |(a, b)| (Some(a), Some(b)));
                grow(&mut lo, &mut hi);
                if let (Some(a), Some(b)) = (lo, hi) {
                    *slot = Some((a, b));
                }
            }
        }
    }

    fn owner(&self, look: &StyleAttr) -> Option<Marker> {
        let m = Marker::decode(&look.line_color)?;
        let known = match m {
            Marker::Node(i) => i < self.marks.nodes.len(),
            Marker::Edge(i) => i < self.marks.edges.len(),
        };
        known.then_some(m)
    }

    fn paint(&self, owner: Option<Marker>, look: &StyleAttr) -> Paint {
        let fill = look.fill_color.as_ref();
        let width = look.line_width as f64;
        let plain = |stroke: String| Paint { stroke, fill: fill.map(web), ink: "#000000".into(), width, bold: false };
        match owner {
            None => plain(web(&look.line_color)),
            Some(Marker::Node(i)) => {
                let node = &self.marks.nodes[i];
                let dark_fill = fill.is_some_and(is_dark);
                let (stroke, fill_to, ink, w, bold) = match node.class {
                    NodeClass::Plain => return plain(web(&node.color)),
                    NodeClass::Unvisited => (GREY, if dark_fill { GREY } else { GREY_FILL }, GREY_INK, width, false),
                    NodeClass::Visited => {
                        (BLUE, if dark_fill { BLUE } else { BLUE_FILL }, BLUE_INK, width.max(2.0), false)
                    }
                    NodeClass::Current => {
                        (ORANGE, if dark_fill { ORANGE } else { ORANGE_FILL }, "#000000", width.max(3.0), true)
                    }
                };
                Paint { stroke: stroke.into(), fill: fill.map(|_| fill_to.into()), ink: ink.into(), width: w, bold }
            }
            Some(Marker::Edge(i)) => {
                let edge = &self.marks.edges[i];
                let (stroke, ink, w, bold) = match edge.class {
                    EdgeClass::Plain => return plain(web(&edge.color)),
                    EdgeClass::NotTaken => (EDGE_GREY, GREY_INK, width, false),
                    EdgeClass::Taken => (BLUE, BLUE_INK, width.max(if edge.count > 1 { 3.0 } else { 2.0 }), true),
                };
                Paint { stroke: stroke.into(), fill: None, ink: ink.into(), width: w, bold }
            }
        }
    }

    fn push(&mut self, owner: Option<Marker>, body: String) {
        self.items.push(Item { owner, body });
    }

    fn group_open(&self, owner: Option<Marker>) -> String {
        match owner {
            None => "<g>".to_string(),
            Some(Marker::Node(i)) => {
                let n = &self.marks.nodes[i];
                let (class, what) = match n.class {
                    NodeClass::Plain => ("node", ""),
                    NodeClass::Unvisited => ("node unvisited", ": not visited"),
                    NodeClass::Visited => ("node visited", ": visited"),
                    NodeClass::Current => ("node visited current", ": current state"),
                };
                let name = escape(&n.name);
                format!("<g class=\"{class}\" data-state=\"{name}\"><title>{name}{what}</title>")
            }
            Some(Marker::Edge(i)) => {
                let e = &self.marks.edges[i];
                let class = match (e.class, e.extra) {
                    (EdgeClass::Plain, _) => "edge",
                    (EdgeClass::NotTaken, _) => "edge not-taken",
                    (EdgeClass::Taken, false) => "edge taken",
                    (EdgeClass::Taken, true) => "edge taken extra",
                };
                let what = match (e.class, e.count) {
                    (EdgeClass::Taken, 1) => ": taken once".to_string(),
                    (EdgeClass::Taken, n) => format!(": taken {n} times"),
                    (EdgeClass::NotTaken, _) => ": not taken".to_string(),
                    (EdgeClass::Plain, _) => String::new(),
                };
                let (from, to) = (escape(&e.from), escape(&e.to));
                format!("<g class=\"{class}\" data-from=\"{from}\" data-to=\"{to}\"><title>{from} → {to}{what}</title>")
            }
        }
    }

    /// A taken edge the graph lacks: a dashed curve between the two states' boxes.
    fn extra_edge(&mut self, i: usize) {
        let e = &self.marks.edges[i];
        let (Some(&from), Some(&to)) = (
            self.marks.nodes.iter().position(|n| n.name == e.from).and_then(|k| self.node_boxes[k].as_ref()),
            self.marks.nodes.iter().position(|n| n.name == e.to).and_then(|k| self.node_boxes[k].as_ref()),
        ) else {
            return;
        };
        let centre = |(lo, hi): (Point, Point)| Point::new((lo.x + hi.x) / 2.0, (lo.y + hi.y) / 2.0);
        let (c0, c1) = (centre(from), centre(to));
        let down = c1.y >= c0.y;
        let start = Point::new(c0.x, if down { from.1.y } else { from.0.y });
        let end = Point::new(c1.x, if down { to.0.y } else { to.1.y });
        let bend = 40.0 + (end.y - start.y).abs() / 4.0;
        let path = [
            (start, Point::new(start.x + bend, start.y + (end.y - start.y) / 3.0)),
            (Point::new(end.x + bend, end.y - (end.y - start.y) / 3.0), end),
        ];
        let mut look = StyleAttr::simple();
        look.line_width = 1;
        look.font_size = crate::dot::EDGE_LAYOUT_FONT;
        if let Some(c) = Marker::Edge(i).color_value() {
            look.line_color = c;
        }
        self.draw_arrow(&path, true, (false, true), &look, None, "");
    }

    fn finish(mut self, name: &str, overlay: Option<&Overlay>) -> String {
        let extras: Vec<usize> = (0..self.marks.edges.len()).filter(|&i| self.marks.edges[i].extra).collect();
        for i in extras {
            self.extra_edge(i);
        }
        // The current state's second border, 5 px outside its drawing.
        let current: Vec<(usize, (Point, Point))> = self
            .marks
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.class == NodeClass::Current)
            .filter_map(|(i, _)| self.node_boxes[i].map(|b| (i, b)))
            .collect();
        for (i, (lo, hi)) in current {
            let owner = Some(Marker::Node(i));
            let (x, y, w, h) = (lo.x - 5.0, lo.y - 5.0, hi.x - lo.x + 10.0, hi.y - lo.y + 10.0);
            self.include(owner, x - 1.5, y - 1.5);
            self.include(owner, x + w + 1.5, y + h + 1.5);
            let body = format!(
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"12\" fill=\"none\" stroke=\"{ORANGE}\" stroke-width=\"3\"/>",
                num(x),
                num(y),
                num(w),
                num(h)
            );
            // Right after the node's last piece, so it is in the node's group.
            let at = self.items.iter().rposition(|it| it.owner == owner).map_or(self.items.len(), |p| p + 1);
            self.items.insert(at, Item { owner, body });
        }

        let (lo, hi) = match (self.min, self.max) {
            (Some(a), Some(b)) => (a, b),
            _ => (Point::new(0.0, 0.0), Point::new(0.0, 0.0)),
        };
        let (x, y) = ((lo.x - MARGIN).floor(), (lo.y - MARGIN).floor());
        let (w, h) = ((hi.x + MARGIN).ceil() - x, (hi.y + MARGIN).ceil() - y);
        let mut out = String::with_capacity(4096 + self.items.iter().map(|i| i.body.len() + 8).sum::<usize>());
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n");
        let _ = writeln!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"{} {} {} {}\" role=\"img\" font-family=\"{FONT_FAMILY}\">",
            num(w),
            num(h),
            num(x),
            num(y),
            num(w),
            num(h)
        );
        let _ = writeln!(out, "<title>{}</title>", escape(&self.title(name, overlay)));
        if let Some(desc) = self.description(overlay) {
            let _ = writeln!(out, "<desc>{}</desc>", escape(&desc));
        }
        out.push_str("<defs>\n");
        for (color, start) in &self.heads {
            let (id, points, refx) = if *start {
                (self.head_id(color, true), "10 0, 10 7, 0 3.5", 0)
            } else {
                (self.head_id(color, false), "0 0, 10 3.5, 0 7", 10)
            };
            let _ = writeln!(
                out,
                "<marker id=\"{id}\" markerWidth=\"10\" markerHeight=\"7\" refX=\"{refx}\" refY=\"3.5\" orient=\"auto\" markerUnits=\"userSpaceOnUse\"><polygon points=\"{points}\" fill=\"{color}\"/></marker>"
            );
        }
        for clip in &self.clips {
            out.push_str(clip);
            out.push('\n');
        }
        out.push_str("</defs>\n");
        let _ = writeln!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#ffffff\"/>",
            num(x),
            num(y),
            num(w),
            num(h)
        );
        // Consecutive pieces of one node or edge form one group.
        let mut i = 0;
        while i < self.items.len() {
            let owner = self.items[i].owner;
            out.push_str(&self.group_open(owner));
            out.push('\n');
            while i < self.items.len() && self.items[i].owner == owner {
                out.push_str(&self.items[i].body);
                out.push('\n');
                i += 1;
            }
            out.push_str("</g>\n");
        }
        out.push_str("</svg>\n");
        out
    }

    fn title(&self, name: &str, overlay: Option<&Overlay>) -> String {
        let name = if name.trim().is_empty() { "graph".to_string() } else { format!("Graph of {name}") };
        let Some(o) = overlay else { return name };
        let states = self.marks.nodes.iter().filter(|n| !n.name.starts_with("__")).count();
        let visited = self
            .marks
            .nodes
            .iter()
            .filter(|n| !n.name.starts_with("__") && n.class != NodeClass::Unvisited && n.class != NodeClass::Plain)
            .count();
        match &o.current {
            Some(c) => format!("{name}: current state {c}; {visited} of {states} states visited"),
            None => format!("{name}: {visited} of {states} states visited"),
        }
    }

    fn description(&self, overlay: Option<&Overlay>) -> Option<String> {
        overlay?;
        let taken: Vec<String> = self
            .marks
            .edges
            .iter()
            .filter(|e| e.class == EdgeClass::Taken)
            .take(100)
            .map(|e| {
                if e.count > 1 {
                    format!("{} → {} ×{}", e.from, e.to, e.count)
                } else {
                    format!("{} → {}", e.from, e.to)
                }
            })
            .collect();
        Some(if taken.is_empty() {
            "No transition taken yet.".to_string()
        } else {
            format!("Transitions taken: {}.", taken.join(", "))
        })
    }

    fn head_id(&self, color: &str, start: bool) -> String {
        format!("{}-{}{}", self.prefix, if start { "s" } else { "e" }, color.trim_start_matches('#'))
    }

    fn text(&mut self, owner: Option<Marker>, xy: Point, text: &str, look: &StyleAttr, paint: &Paint) {
        // An edge's label gets the edge's `×n`.
        let mut with_count = None;
        if let Some(Marker::Edge(i)) = owner {
            if let Some(count) = self.marks.count_label(i) {
                if !text.is_empty() && text == self.marks.edges[i].label && self.counts_drawn.insert(i) {
                    with_count = Some(format!("{text} ×{}", count.trim_start_matches('×')));
                }
            }
        }
        let laid_out = text;
        let text = with_count.as_deref().unwrap_or(text);
        let mut size = look.font_size as f64;
        let mut xy = xy;
        let longest_of = |t: &str| t.split('\n').map(|l| l.chars().count()).max().unwrap_or(0) as f64;
        if look.font_size == crate::dot::EDGE_LAYOUT_FONT {
            size = crate::dot::EDGE_RENDER_FONT as f64;
            // An edge passes by the right side of its label's box (one layout font size per
            // character): the label, drawn larger and perhaps with its `×n`, ends before it.
            let right = xy.x + longest_of(laid_out) * crate::dot::EDGE_LAYOUT_FONT as f64 / 2.0;
            xy.x = right - EDGE_LABEL_GAP - longest_of(text) * size * CHAR_WIDTH_EM / 2.0;
        }
        let lines: Vec<&str> = if text.is_empty() { Vec::new() } else { text.split('\n').collect() };
        if lines.is_empty() || size < 2.0 {
            return;
        }
        let line_height = size * 1.15;
        let n = lines.len() as f64;
        let longest = longest_of(text);
        let half = longest * size * CHAR_WIDTH_EM / 2.0;
        let top = xy.y - n * line_height / 2.0;
        self.include(owner, xy.x - half, top);
        self.include(owner, xy.x + half, top + n * line_height);
        let weight = if paint.bold { " font-weight=\"bold\"" } else { "" };
        let mut body = format!(
            "<text x=\"{}\" text-anchor=\"middle\" font-size=\"{}\" fill=\"{}\"{weight}>",
            num(xy.x),
            num(size),
            paint.ink
        );
        for (k, line) in lines.iter().enumerate() {
            // The baseline of a line centred on its slot: about 0.35 em below the middle.
            let y = top + (k as f64 + 0.5) * line_height + 0.35 * size;
            let _ = write!(body, "<tspan x=\"{}\" y=\"{}\">{}</tspan>", num(xy.x), num(y), escape(line));
        }
        body.push_str("</text>");
        self.push(owner, body);
    }
}

impl RenderBackend for Writer {
    fn draw_rect(&mut self, xy: Point, size: Point, look: &StyleAttr, _: Option<String>, clip: Option<ClipHandle>) {
        let owner = self.owner(look);
        let paint = self.paint(owner, look);
        let pad = paint.width / 2.0;
        self.include(owner, xy.x - pad, xy.y - pad);
        self.include(owner, xy.x + size.x + pad, xy.y + size.y + pad);
        let clip = clip.map(|c| format!(" clip-path=\"url(#{}-c{c})\"", self.prefix)).unwrap_or_default();
        let body = format!(
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"{}\" fill=\"{}\" stroke=\"{}\" stroke-width=\"{}\"{clip}/>",
            num(xy.x),
            num(xy.y),
            num(size.x),
            num(size.y),
            look.rounded,
            paint.fill.as_deref().unwrap_or("none"),
            paint.stroke,
            num(paint.width)
        );
        self.push(owner, body);
    }

    fn draw_line(&mut self, start: Point, stop: Point, look: &StyleAttr, _: Option<String>) {
        let owner = self.owner(look);
        let paint = self.paint(owner, look);
        self.include(owner, start.x, start.y);
        self.include(owner, stop.x, stop.y);
        let body = format!(
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"{}\"/>",
            num(start.x),
            num(start.y),
            num(stop.x),
            num(stop.y),
            paint.stroke,
            num(paint.width)
        );
        self.push(owner, body);
    }

    fn draw_circle(&mut self, xy: Point, size: Point, look: &StyleAttr, _: Option<String>) {
        let owner = self.owner(look);
        let paint = self.paint(owner, look);
        let pad = paint.width / 2.0;
        self.include(owner, xy.x - size.x / 2.0 - pad, xy.y - size.y / 2.0 - pad);
        self.include(owner, xy.x + size.x / 2.0 + pad, xy.y + size.y / 2.0 + pad);
        let body = format!(
            "<ellipse cx=\"{}\" cy=\"{}\" rx=\"{}\" ry=\"{}\" fill=\"{}\" stroke=\"{}\" stroke-width=\"{}\"/>",
            num(xy.x),
            num(xy.y),
            num(size.x / 2.0),
            num(size.y / 2.0),
            paint.fill.as_deref().unwrap_or("none"),
            paint.stroke,
            num(paint.width)
        );
        self.push(owner, body);
    }

    fn draw_text(&mut self, xy: Point, text: &str, look: &StyleAttr) {
        let mut owner = self.owner(look);
        let mut look = look.clone();
        if owner.is_none() && !text.is_empty() {
            // layout-rs sometimes draws the label of a long edge with its default style instead
            // of the edge's: find the edge by its label when only one has it.
            let mut same = self.marks.edges.iter().enumerate().filter(|(_, e)| e.label == text);
            if let (Some((i, _)), None) = (same.next(), same.next()) {
                owner = Some(Marker::Edge(i));
                look.font_size = crate::dot::EDGE_LAYOUT_FONT;
                look.line_width = 1;
            }
        }
        let paint = self.paint(owner, &look);
        self.text(owner, xy, text, &look, &paint);
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
        if path.len() < 2 {
            return;
        }
        let owner = self.owner(look);
        let paint = self.paint(owner, look);
        // A cubic Bézier lies inside the hull of its control points.
        for (a, b) in path {
            self.include(owner, a.x, a.y);
            self.include(owner, b.x, b.y);
        }
        let mut d = format!(
            "M {} {} C {} {}, {} {}, {} {}",
            num(path[0].0.x),
            num(path[0].0.y),
            num(path[0].1.x),
            num(path[0].1.y),
            num(path[1].0.x),
            num(path[1].0.y),
            num(path[1].1.x),
            num(path[1].1.y)
        );
        for p in &path[2..] {
            let _ = write!(d, " S {} {}, {} {}", num(p.0.x), num(p.0.y), num(p.1.x), num(p.1.y));
        }
        let mut attrs = String::new();
        if dashed {
            attrs.push_str(" stroke-dasharray=\"5,5\"");
        }
        if head.0 {
            self.heads.insert((paint.stroke.clone(), true));
            let _ = write!(attrs, " marker-start=\"url(#{})\"", self.head_id(&paint.stroke, true));
        }
        if head.1 {
            self.heads.insert((paint.stroke.clone(), false));
            let _ = write!(attrs, " marker-end=\"url(#{})\"", self.head_id(&paint.stroke, false));
        }
        let body = format!(
            "<path d=\"{d}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{}\"{attrs}/>",
            paint.stroke,
            num(paint.width)
        );
        self.push(owner, body);
        if !text.is_empty() {
            let mid = path[path.len() / 2].1;
            self.text(owner, Point::new(mid.x, mid.y - look.font_size as f64), text, look, &paint);
        }
        // An edge without a label: its `×n` beside the middle of the path.
        if let Some(Marker::Edge(i)) = owner {
            if let Some(count) = self.marks.count_label(i) {
                if self.marks.edges[i].label.is_empty() && self.counts_drawn.insert(i) {
                    let (a, b) = (path[0].0, path[path.len() - 1].1);
                    let mid = Point::new((a.x + b.x) / 2.0 + 14.0, (a.y + b.y) / 2.0);
                    let mut small = look.clone();
                    small.font_size = crate::dot::EDGE_LAYOUT_FONT;
                    self.text(owner, mid, &count, &small, &paint);
                }
            }
        }
    }

    fn create_clip(&mut self, xy: Point, size: Point, rounded_px: usize) -> ClipHandle {
        let handle = self.clips.len();
        self.clips.push(format!(
            "<clipPath id=\"{}-c{handle}\"><rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"{rounded_px}\"/></clipPath>",
            self.prefix,
            num(xy.x),
            num(xy.y),
            num(size.x),
            num(size.y)
        ));
        handle
    }
}
