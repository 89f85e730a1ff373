//! SVG, overlay and PNG rendering of avto-graph.

use std::collections::BTreeMap;

use avto_graph::{render_svg, render_svg_with, Error, Overlay};

/// The shape of the DOT the `#[avto::blueprint]` macro generates, with a review loop.
const LOOP: &str = r#"digraph "review_loop" {
  node [shape=box, style=rounded];
  "__start" [shape=point, label=""];
  "__start" -> "start";
  "start";
  "draft";
  "review";
  "agg" [style="rounded,dashed"];
  "published" [peripheries=2, label="published\n(finished)"];
  "rejected" [peripheries=2, label="rejected\n(failed)"];
  "start" -> "draft";
  "draft" -> "review" [label="success"];
  "draft" -> "rejected" [label="failure"];
  "review" -> "draft" [label="when ctx.data[\"changes\"] == true: changes requested"];
  "review" -> "agg";
  "agg" -> "published" [label="approved"];
  "review" -> "rejected" [label="rejected & <done>"];
}
"#;

const STATES: &[&str] = &["start", "draft", "review", "agg", "published", "rejected"];

fn path(states: &[&str]) -> Vec<String> {
    states.iter().map(|s| s.to_string()).collect()
}

/// The looped path: draft -> review three times, review -> draft twice, now in `agg`.
fn loop_overlay() -> Overlay {
    Overlay::from_path(&path(&["start", "draft", "review", "draft", "review", "draft", "review", "agg"]), Some("agg"))
}

/// The text of the `<g ...>` group whose opening tag contains `needle`, up to its `</g>`.
fn group<'a>(svg: &'a str, needle: &str) -> &'a str {
    let start = svg.find(needle).unwrap_or_else(|| panic!("no {needle} in\n{svg}"));
    let start = svg[..start].rfind("<g").unwrap();
    let end = start + svg[start..].find("</g>").unwrap();
    &svg[start..end]
}

/// A small XML check: tags balance, one root, attribute values quoted, no stray `<` or `&`.
fn assert_xml(svg: &str) {
    let body = svg.split_once("?>").map_or(svg, |(_, b)| b);
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = body;
    let mut roots = 0;
    while let Some(lt) = rest.find('<') {
        let text = &rest[..lt];
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..text[i..].find(';').map_or(text.len(), |e| i + e + 1)];
            assert!(["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&entity), "bad entity {entity:?}");
        }
        let end = lt + rest[lt..].find('>').expect("unterminated tag");
        let tag = &rest[lt + 1..end];
        assert!(tag.matches('"').count() % 2 == 0, "unbalanced quotes in <{tag}>");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop(), Some(name), "mismatched </{name}>");
        } else if !tag.ends_with('/') {
            if stack.is_empty() {
                roots += 1;
            }
            stack.push(tag.split_whitespace().next().unwrap());
        }
        rest = &rest[end + 1..];
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    assert_eq!(roots, 1);
}

#[test]
fn plain_svg_is_accessible_and_csp_safe() {
    let svg = render_svg(LOOP).unwrap();
    assert!(svg.starts_with("<?xml"), "{svg}");
    assert_xml(&svg);
    assert!(svg.contains("role=\"img\""));
    assert!(svg.contains("<title>Graph of review_loop</title>"), "{svg}");
    // Presentation attributes only: nothing a strict CSP (no inline style or script) blocks.
    assert!(!svg.contains("<style") && !svg.contains("style=") && !svg.contains("<script"), "{svg}");
    for state in STATES {
        let g = group(&svg, &format!("data-state=\"{state}\""));
        assert!(g.contains(&format!("<title>{state}</title>")), "{g}");
        assert!(g.contains(&format!(">{state}</tspan>")), "{state} has no text: {g}");
    }
    assert!(svg.contains("rejected &amp; &lt;done&gt;"), "{svg}");
    assert_eq!(render_svg(LOOP).unwrap(), svg, "deterministic");
}

#[test]
fn overlay_from_path_counts_consecutive_pairs() {
    let o = loop_overlay();
    assert_eq!(o.current.as_deref(), Some("agg"));
    assert_eq!(o.visited.iter().map(String::as_str).collect::<Vec<_>>(), ["agg", "draft", "review", "start"]);
    let want: BTreeMap<(String, String), u32> =
        [(("draft", "review"), 3), (("review", "agg"), 1), (("review", "draft"), 2), (("start", "draft"), 1)]
            .into_iter()
            .map(|((a, b), n)| ((a.to_string(), b.to_string()), n))
            .collect();
    assert_eq!(o.edges, want);
    assert_eq!(Overlay::from_path(&[], None), Overlay::default());
    // The current state counts as visited even before it is in the path.
    assert!(Overlay::from_path(&path(&["a"]), Some("b")).visited.contains("b"));
}

#[test]
fn overlay_highlights_the_path_with_loop_counts_and_marks_the_current_state_by_shape() {
    let svg = render_svg_with(LOOP, &loop_overlay()).unwrap();
    assert_xml(&svg);
    assert!(svg.contains("<title>Graph of review_loop: current state agg; 4 of 6 states visited</title>"), "{svg}");
    assert!(svg.contains("draft → review ×3") && svg.contains("review → draft ×2"), "{svg}");

    // Loop counts on the edges taken more than once, none on those taken once.
    let twice = group(&svg, "data-from=\"review\" data-to=\"draft\"");
    assert!(twice.contains("class=\"edge taken\"") && twice.contains("taken 2 times"), "{twice}");
    assert!(svg.contains(">success ×3</tspan>"), "{svg}");
    assert!(svg.contains("changes requested ×2</tspan>"), "{svg}");
    assert!(!svg.contains("×1"), "{svg}");
    let once = group(&svg, "data-from=\"review\" data-to=\"agg\"");
    assert!(once.contains("taken once") && once.contains("stroke-width=\"2\""), "{once}");
    // The blueprint's start marker and its edge: visited and taken.
    assert!(group(&svg, "data-state=\"__start\"").contains("class=\"node visited\""), "{svg}");
    assert!(group(&svg, "data-from=\"__start\" data-to=\"start\"").contains("class=\"edge taken\""), "{svg}");
    let not_taken = group(&svg, "data-from=\"agg\" data-to=\"published\"");
    assert!(not_taken.contains("class=\"edge not-taken\""), "{not_taken}");

    // Visited, unvisited and current states differ in colour; the current one also in shape:
    // one more outline than a visited state of the same kind.
    let visited = group(&svg, "data-state=\"review\"");
    let current = group(&svg, "data-state=\"agg\"");
    let unvisited = group(&svg, "data-state=\"published\"");
    assert!(visited.contains("class=\"node visited\"") && visited.contains("#1565c0"), "{visited}");
    assert!(current.contains("class=\"node visited current\"") && current.contains("current state"), "{current}");
    assert!(current.contains("#d84315") && !current.contains("#1565c0"), "{current}");
    assert!(unvisited.contains("class=\"node unvisited\"") && unvisited.contains("fill=\"#5f5f5f\""), "{unvisited}");
    let outlines = |g: &str| g.matches("fill=\"none\"").count();
    assert_eq!(outlines(current), outlines(visited) + 1, "{current}\n{visited}");
    // Every state's name is still drawn.
    for state in STATES {
        assert!(svg.contains(&format!(">{state}</tspan>")), "{state}");
    }
}

#[test]
fn overlay_without_current_state_and_with_unknown_names() {
    let mut o = Overlay::from_path(&path(&["start", "nowhere", "draft"]), None);
    o.edges.insert(("ghost".into(), "start".into()), 4);
    let svg = render_svg_with(LOOP, &o).unwrap();
    assert_xml(&svg);
    assert!(!svg.contains("current"), "{svg}");
    assert!(!svg.contains("nowhere") && !svg.contains("ghost"), "{svg}");
    assert!(svg.contains("2 of 6 states visited"), "{svg}");
}

#[test]
fn taken_edges_missing_from_the_graph_are_drawn_dashed() {
    let o = Overlay::from_path(&path(&["start", "draft", "published", "draft", "published"]), Some("published"));
    let svg = render_svg_with(LOOP, &o).unwrap();
    let extra = group(&svg, "data-from=\"published\" data-to=\"draft\"");
    assert!(extra.contains("class=\"edge taken extra\"") && extra.contains("stroke-dasharray"), "{extra}");
    assert!(svg.contains(">×2</tspan>"), "{svg}");
}

#[test]
fn several_svgs_on_one_page_do_not_share_ids() {
    let ids = |svg: &str| -> Vec<String> {
        svg.match_indices(" id=\"").map(|(i, _)| svg[i + 5..].split('"').next().unwrap().to_string()).collect()
    };
    let a = ids(&render_svg(LOOP).unwrap());
    let b = ids(&render_svg_with(LOOP, &loop_overlay()).unwrap());
    assert!(!a.is_empty());
    assert!(a.iter().all(|id| !b.contains(id)), "{a:?} {b:?}");
}

#[test]
fn bad_dot_is_an_error() {
    match render_svg("digraph {\n  a -> b;\n  a ~ b;\n}") {
        Err(e @ Error::Syntax { line: 3, column: 5, .. }) => {
            assert!(e.to_string().starts_with("invalid DOT at line 3, column 5: "), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(render_svg("digraph { a -> [label=x] }"), Err(Error::Parse(_))));
    // Both panic inside layout-rs 0.1.3; the panic is caught, also with an overlay.
    for dot in ["digraph { }", "digraph { r [shape=record, label=\"\"]; }"] {
        assert!(matches!(render_svg(dot), Err(Error::Layout(_))), "{dot}");
        assert!(matches!(render_svg_with(dot, &loop_overlay()), Err(Error::Layout(_))), "{dot}");
    }
    assert!(render_svg("digraph { a -> b }").is_ok());
}

/// Mutated DOT with an overlay (a small deterministic fuzz): `Ok` or `Err`, never a panic.
#[test]
fn never_panics_on_mutated_dot() {
    let pieces = ["->", "[", "]", "{", "}", ";", "\"", "=", "label=\"\"", "shape=record", "a:n", "color=red", "×"];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let overlay = loop_overlay();
    let (mut ok, mut err) = (0, 0);
    for _ in 0..200 {
        let mut chars: Vec<char> = LOOP.chars().collect();
        for _ in 0..1 + next(3) {
            let at = next(chars.len() + 1);
            if next(2) == 0 && at < chars.len() {
                let end = (at + 1 + next(6)).min(chars.len());
                chars.drain(at..end);
            } else {
                chars.splice(at..at, pieces[next(pieces.len())].chars());
            }
        }
        let dot: String = chars.into_iter().collect();
        match render_svg_with(&dot, &overlay) {
            Ok(svg) => {
                assert!(svg.contains("role=\"img\""));
                ok += 1
            }
            Err(_) => err += 1,
        }
    }
    assert!(ok > 0 && err > 0, "ok {ok}, err {err}");
}

#[cfg(feature = "png")]
mod png {
    use super::*;
    use avto_graph::render_png;
    use resvg::tiny_skia::Pixmap;

    fn decode(png: &[u8]) -> Pixmap {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        Pixmap::decode_png(png).unwrap()
    }

    /// Pixels noticeably darker than white.
    fn inked(p: &Pixmap) -> usize {
        p.pixels()
            .iter()
            .filter(|c| c.alpha() > 0 && (c.red() as u32 + c.green() as u32 + c.blue() as u32) < 600)
            .count()
    }

    fn svg_size(svg: &str) -> (f32, f32) {
        let attr = |name: &str| -> f32 {
            let at = svg.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
            svg[at..].split('"').next().unwrap().parse().unwrap()
        };
        (attr("width"), attr("height"))
    }

    /// The SVG without its text: every `<text ...>...</text>` removed.
    fn without_text(svg: &str) -> String {
        let mut out = String::new();
        let mut rest = svg;
        while let Some(start) = rest.find("<text") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find("</text>").unwrap() + start + "</text>".len();
            rest = &rest[end..];
        }
        out.push_str(rest);
        out
    }

    /// The font is bundled: only it is loaded (no system fonts), and the labels are drawn.
    #[test]
    fn png_has_the_svg_size_and_draws_the_text() {
        let svg = render_svg_with(LOOP, &loop_overlay()).unwrap();
        let (w, h) = svg_size(&svg);
        for scale in [1.0f32, 2.0] {
            let pixmap = decode(&render_png(&svg, scale).unwrap());
            assert_eq!((pixmap.width(), pixmap.height()), ((w * scale).ceil() as u32, (h * scale).ceil() as u32));
            // A white background, not a transparent one.
            assert!(pixmap.pixels().iter().all(|c| c.alpha() == 255));
            let with_text = inked(&pixmap);
            let no_text = inked(&decode(&render_png(&without_text(&svg), scale).unwrap()));
            assert!(no_text > 0, "the shapes are drawn");
            // About 90 characters of 14 px (12 px for edge labels) text: well over 2,000 more
            // dark pixels at scale 1.
            let min = (2_000.0 * scale * scale) as usize;
            assert!(with_text > no_text + min, "text adds {} pixels at scale {scale}", with_text - no_text);
        }
    }

    #[test]
    fn png_text_fits_the_box_layout_rs_made_for_it() {
        // One node whose label is 20 characters: layout-rs makes the box 20 em wide (plus
        // padding); the monospace font draws the text 0.6 em a character, inside the box.
        let svg = render_svg("digraph { n [shape=box, label=\"MMMMMMMMMMMMMMMMMMMM\"] }").unwrap();
        let dark_columns = |svg: &str| -> Vec<bool> {
            let p = decode(&render_png(svg, 1.0).unwrap());
            (0..p.width())
                .map(|x| {
                    (0..p.height()).any(|y| {
                        let c = p.pixel(x, y).unwrap();
                        (c.red() as u32 + c.green() as u32 + c.blue() as u32) < 200
                    })
                })
                .collect()
        };
        let (with, without) = (dark_columns(&svg), dark_columns(&without_text(&svg)));
        let text: Vec<usize> = (0..with.len()).filter(|&x| with[x] && !without[x]).collect();
        let box_columns: Vec<usize> = (0..without.len()).filter(|&x| without[x]).collect();
        let (t0, t1) = (text[0], text[text.len() - 1]);
        let (b0, b1) = (box_columns[0], box_columns[box_columns.len() - 1]);
        // 20 × 0.6 × 14 px = 168 px of text, inside a box of about 280 px.
        assert!((150..=185).contains(&(t1 - t0)), "text {t0}..{t1}");
        assert!(b0 < t0 && t1 < b1 && b1 - b0 > 270, "box {b0}..{b1}, text {t0}..{t1}");
    }

    #[test]
    fn png_errors() {
        let svg = render_svg("digraph { a -> b }").unwrap();
        for scale in [0.0, -1.0, f32::NAN, f32::INFINITY, 1e6] {
            assert!(matches!(render_png(&svg, scale), Err(Error::Png(_))), "{scale}");
        }
        for bad in ["", "not svg", "<svg", "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"0\" height=\"0\"/>"] {
            assert!(matches!(render_png(bad, 1.0), Err(Error::Png(_))), "{bad}");
        }
    }
}

/// Laid out once, painted with any overlay: the geometry never moves.
#[test]
fn one_layout_many_overlays() {
    let layout = avto_graph::Layout::new(LOOP).unwrap();
    assert_eq!(layout.name(), "review_loop");
    assert_eq!(layout.svg(), render_svg(LOOP).unwrap());
    assert_eq!(layout.svg_with(&loop_overlay()), render_svg_with(LOOP, &loop_overlay()).unwrap());
    let rect_of = |svg: &str, state: &str| -> String {
        let g = group(svg, &format!("data-state=\"{state}\""));
        let at = g.find("<rect").unwrap();
        let rect = &g[at..at + g[at..].find("/>").unwrap()];
        // Geometry only.
        rect.split(' ').filter(|a| ["x=", "y=", "width=", "height="].iter().any(|p| a.starts_with(p))).collect()
    };
    let early = layout.svg_with(&Overlay::from_path(&path(&["start"]), Some("start")));
    let late = layout.svg_with(&loop_overlay());
    let plain = layout.svg();
    for state in STATES {
        assert_eq!(rect_of(&early, state), rect_of(&plain, state), "{state}");
        assert_eq!(rect_of(&late, state), rect_of(&plain, state), "{state}");
    }
    let fast = avto_graph::Layout::with_quality(LOOP, avto_graph::Quality::Fast).unwrap();
    for state in STATES {
        assert!(fast.svg().contains(&format!(">{state}</tspan>")), "{state}");
    }
}
