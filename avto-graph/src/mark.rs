//! Tagging every node and edge of the parsed DOT so the SVG writer knows what it draws.
//!
//! layout-rs hands its backend only geometry and a style (colours, widths, font size), not which
//! node or edge is being drawn. [`mark`] therefore replaces the colour of every node and edge
//! with a *marker colour* that encodes its index (an alpha of 1/255 that no real DOT colour
//! uses in practice), remembering the real colour; [`Marker::decode`] turns the colour the
//! backend receives back into the node or edge. Chains `a -> b -> c` are split into single
//! edges, and nodes only named in edges get a node statement, so each has its own marker.
//! Marking does not depend on an [`Overlay`]: [`Marks::classify`] applies one afterwards, so a
//! graph is laid out once and painted with any overlay.

use std::collections::{BTreeSet, HashMap};

use layout::core::color::Color;
use layout::gv::parser::ast;

use crate::Overlay;

/// How a node is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeClass {
    /// No overlay: the DOT's own colours.
    Plain,
    /// Never visited: grey.
    Unvisited,
    Visited,
    /// The current state: its own colour and an outer border.
    Current,
}

/// How an edge is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EdgeClass {
    Plain,
    NotTaken,
    Taken,
}

#[derive(Debug, Clone)]
pub(crate) struct NodeMark {
    pub name: String,
    /// The border colour the DOT asked for.
    pub color: Color,
    pub class: NodeClass,
}

#[derive(Debug, Clone)]
pub(crate) struct EdgeMark {
    pub from: String,
    pub to: String,
    pub color: Color,
    pub class: EdgeClass,
    /// Times taken (0 without an overlay).
    pub count: u32,
    /// Added from the overlay: taken, but not in the graph.
    pub extra: bool,
    /// Whether this edge carries the `×n` of its pair (the first edge `from -> to`).
    pub counted: bool,
    /// The label as laid out.
    pub label: String,
}

/// Every node and edge of a marked graph, by marker index.
#[derive(Debug, Default, Clone)]
pub(crate) struct Marks {
    pub nodes: Vec<NodeMark>,
    pub edges: Vec<EdgeMark>,
}

/// What a colour received by the backend stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    Node(usize),
    Edge(usize),
}

/// The start marker node of a blueprint's DOT.
const START: &str = "__start";

/// Markers are `#KKiiii01`: KK the kind, iiii the index, alpha 1.
const NODE_KIND: u32 = 0xa1;
const EDGE_KIND: u32 = 0xa2;
const MAX_MARKED: usize = 0xffff;

impl Marker {
    fn color(self) -> Option<String> {
        let (kind, i) = match self {
            Marker::Node(i) => (NODE_KIND, i),
            Marker::Edge(i) => (EDGE_KIND, i),
        };
        (i <= MAX_MARKED).then(|| format!("#{kind:02x}{i:04x}01"))
    }

    /// The marker as the colour layout-rs hands the backend.
    pub(crate) fn color_value(self) -> Option<Color> {
        self.color().map(|c| Color::fast(&c))
    }

    pub(crate) fn decode(color: &Color) -> Option<Marker> {
        let web = color.to_web_color();
        let value = u32::from_str_radix(web.trim_start_matches('#'), 16).ok()?;
        if value & 0xff != 0x01 {
            return None;
        }
        let i = ((value >> 8) & 0xffff) as usize;
        match value >> 24 {
            NODE_KIND => Some(Marker::Node(i)),
            EDGE_KIND => Some(Marker::Edge(i)),
            _ => None,
        }
    }
}

/// The colour layout-rs would use for `value` (see `GraphBuilder::normalize_color`).
fn real_color(value: Option<&str>) -> Color {
    let value = value.unwrap_or("black");
    let value = value.split(':').next().unwrap_or(value);
    Color::fast(if value == "transparent" { "white" } else { value })
}

fn get<'a>(list: &'a ast::AttributeList, key: &str) -> Option<&'a str> {
    list.list.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn set(list: &mut ast::AttributeList, key: &str, value: String) {
    list.list.retain(|(k, _)| k != key);
    list.list.push((key.to_string(), value));
}

#[derive(Clone, Default)]
struct Defaults {
    node_color: Option<String>,
    edge_color: Option<String>,
}

struct State {
    marks: Marks,
    index: HashMap<String, usize>,
}

impl State {
    /// The index of node `name`, and whether it is new.
    fn node(&mut self, name: &str, color: Color) -> (usize, bool) {
        if let Some(&i) = self.index.get(name) {
            return (i, false);
        }
        let i = self.marks.nodes.len();
        self.marks.nodes.push(NodeMark { name: name.to_string(), color, class: NodeClass::Plain });
        self.index.insert(name.to_string(), i);
        (i, true)
    }

    fn edge(&mut self, from: &str, to: &str, color: Color, label: String) -> usize {
        let i = self.marks.edges.len();
        self.marks.edges.push(EdgeMark {
            from: from.to_string(),
            to: to.to_string(),
            color,
            class: EdgeClass::Plain,
            count: 0,
            extra: false,
            counted: false,
            label,
        });
        i
    }
}

impl Marks {
    /// Sets the classes and counts from `overlay` (`None`: plain), and adds the taken edges the
    /// graph lacks, between two of its nodes, as `extra` edges (not laid out).
    pub(crate) fn classify(&mut self, overlay: Option<&Overlay>) {
        self.edges.retain(|e| !e.extra);
        for n in &mut self.nodes {
            n.class = match overlay {
                None => NodeClass::Plain,
                Some(o) if o.current.as_deref() == Some(n.name.as_str()) => NodeClass::Current,
                Some(o) if o.visited.contains(&n.name) => NodeClass::Visited,
                Some(_) => NodeClass::Unvisited,
            };
        }
        // A blueprint's start marker (`__start`, the point before its start state) counts as
        // visited, and its edge as taken, once the state it points to is visited.
        let started: BTreeSet<String> = match overlay {
            Some(o) => self
                .edges
                .iter()
                .filter(|e| e.from == START && o.visited.contains(&e.to))
                .map(|e| e.to.clone())
                .collect(),
            None => BTreeSet::new(),
        };
        if !started.is_empty() {
            for n in self.nodes.iter_mut().filter(|n| n.name == START && n.class == NodeClass::Unvisited) {
                n.class = NodeClass::Visited;
            }
        }
        let mut counted = BTreeSet::new();
        for e in &mut self.edges {
            let key = (e.from.clone(), e.to.clone());
            e.count = overlay.and_then(|o| o.edges.get(&key)).copied().unwrap_or(0);
            if e.from == START && e.count == 0 && started.contains(&e.to) {
                e.count = 1;
            }
            e.class = match (overlay, e.count) {
                (None, _) => EdgeClass::Plain,
                (Some(_), 0) => EdgeClass::NotTaken,
                (Some(_), _) => EdgeClass::Taken,
            };
            e.counted = e.count > 1 && counted.insert(key);
        }
        let Some(o) = overlay else { return };
        let known: BTreeSet<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        let present: BTreeSet<(&str, &str)> = self.edges.iter().map(|e| (e.from.as_str(), e.to.as_str())).collect();
        let mut extra = Vec::new();
        for ((from, to), &count) in &o.edges {
            if count == 0
                || from == to
                || present.contains(&(from.as_str(), to.as_str()))
                || !known.contains(from.as_str())
                || !known.contains(to.as_str())
            {
                continue;
            }
            extra.push(EdgeMark {
                from: from.clone(),
                to: to.clone(),
                color: Color::fast("black"),
                class: EdgeClass::Taken,
                count,
                extra: true,
                counted: count > 1,
                label: String::new(),
            });
        }
        self.edges.extend(extra);
    }

    /// The `×n` to show for edge `i`, if it is the first of its pair taken more than once.
    pub(crate) fn count_label(&self, i: usize) -> Option<String> {
        let e = self.edges.get(i)?;
        e.counted.then(|| format!("×{}", e.count))
    }
}

fn marker_node_stmt(name: &str, i: usize) -> Option<ast::Stmt> {
    let color = Marker::Node(i).color()?;
    let mut list = ast::AttributeList::new();
    list.add_attr("color", &color);
    Some(ast::Stmt::Node(ast::NodeStmt::new_with_list(ast::NodeId::new(name, &None), list)))
}

/// Marks `graph` in place (see the module docs) and returns what each marker stands for, all
/// plain until [`Marks::classify`].
pub(crate) fn mark(graph: &mut ast::Graph) -> Marks {
    let mut state = State { marks: Marks::default(), index: HashMap::new() };
    mark_scope(graph, &mut Defaults::default(), &mut state);
    state.marks
}

fn mark_scope(graph: &mut ast::Graph, defaults: &mut Defaults, state: &mut State) {
    let old = std::mem::take(&mut graph.list.list);
    let mut out = Vec::with_capacity(old.len());
    for stmt in old {
        match stmt {
            ast::Stmt::Node(mut n) => {
                let color = real_color(get(&n.list, "color").or(defaults.node_color.as_deref()));
                let (i, _) = state.node(&n.id.name, color);
                // A later statement for the node sets its colour again.
                state.marks.nodes[i].color = color;
                if let Some(marker) = Marker::Node(i).color() {
                    set(&mut n.list, "color", marker);
                }
                out.push(ast::Stmt::Node(n));
            }
            ast::Stmt::Edge(e) => {
                // Nodes first named here: a node statement each, as layout-rs would create them.
                let ends = std::iter::once(&e.from).chain(e.to.iter().map(|t| &t.0));
                for id in ends {
                    let color = real_color(defaults.node_color.as_deref());
                    let (i, new) = state.node(&id.name, color);
                    if new {
                        out.extend(marker_node_stmt(&id.name, i));
                    }
                }
                let color = real_color(get(&e.list, "color").or(defaults.edge_color.as_deref()));
                let mut from = e.from.clone();
                for (to, kind) in &e.to {
                    let mut single = ast::EdgeStmt::new(from.clone());
                    single.insert(to.clone(), kind.clone());
                    single.list = e.list.clone();
                    let label = get(&single.list, "label").unwrap_or_default().to_string();
                    let i = state.edge(&from.name, &to.name, color, label);
                    if let Some(marker) = Marker::Edge(i).color() {
                        set(&mut single.list, "color", marker);
                    }
                    out.push(ast::Stmt::Edge(single));
                    from = to.clone();
                }
            }
            ast::Stmt::Attribute(a) => {
                match a.target {
                    ast::AttrStmtTarget::Node => {
                        if let Some(c) = get(&a.list, "color") {
                            defaults.node_color = Some(c.to_string());
                        }
                    }
                    ast::AttrStmtTarget::Edge => {
                        if let Some(c) = get(&a.list, "color") {
                            defaults.edge_color = Some(c.to_string());
                        }
                    }
                    ast::AttrStmtTarget::Graph => {}
                }
                out.push(ast::Stmt::Attribute(a));
            }
            ast::Stmt::SubGraph(mut g) => {
                mark_scope(&mut g, &mut defaults.clone(), state);
                out.push(ast::Stmt::SubGraph(g));
            }
        }
    }
    graph.list.list = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip() {
        for m in [Marker::Node(0), Marker::Node(7), Marker::Edge(0), Marker::Edge(0xffff)] {
            assert_eq!(Marker::decode(&Color::fast(&m.color().unwrap())), Some(m));
        }
        assert_eq!(Marker::Node(0x10000).color(), None);
        for real in ["black", "white", "#a1000101", "#a10001", "red"] {
            let c = Color::fast(real);
            assert!(real == "#a1000101" || Marker::decode(&c).is_none(), "{real}");
        }
    }

    #[test]
    fn splits_chains_and_declares_implicit_nodes() {
        let mut g = layout::gv::DotParser::new("digraph { \"a\" -> \"b\" -> \"c\" ; \"c\" [color=\"red\"] ; }")
            .process()
            .unwrap();
        let mut marks = mark(&mut g);
        // 3 node statements added before the chain, the chain split in 2, the node.
        assert_eq!(g.list.list.len(), 3 + 2 + 1);
        assert_eq!(marks.nodes[2].color.to_web_color(), Color::fast("red").to_web_color());

        let overlay = Overlay::from_path(&["a".into(), "b".into(), "c".into(), "b".into(), "c".into()], Some("c"));
        marks.classify(Some(&overlay));
        let names: Vec<_> = marks.nodes.iter().map(|n| (n.name.as_str(), n.class)).collect();
        assert_eq!(names, [("a", NodeClass::Visited), ("b", NodeClass::Visited), ("c", NodeClass::Current)]);
        let edges: Vec<_> = marks.edges.iter().map(|e| (e.from.as_str(), e.to.as_str(), e.count, e.extra)).collect();
        assert_eq!(edges, [("a", "b", 1, false), ("b", "c", 2, false), ("c", "b", 1, true)]);
        assert_eq!(marks.count_label(1).as_deref(), Some("×2"));
        assert_eq!(marks.count_label(0), None);
        // Classifying again (another overlay, or none) starts afresh.
        marks.classify(None);
        assert_eq!(marks.edges.len(), 2);
        assert!(marks.nodes.iter().all(|n| n.class == NodeClass::Plain));
    }
}
