//! Making arbitrary DOT digestible for `layout-rs`, which implements a subset of the language.
//!
//! 1. [`normalize`] re-tokenizes the DOT with a lexer that follows the Graphviz grammar
//!    (identifiers starting with `_`, numerals such as `.5`, `"a" + "b"` concatenation,
//!    `#` lines, HTML labels `<...>`, keywords in any case) and writes it back with every ID
//!    quoted, which is the one form layout-rs reads reliably. Lexical errors are reported here
//!    with the line and column of the original text.
//! 2. [`adapt`] rewrites the attributes layout-rs does not know into the nearest ones it does
//!    (`shape=point`, `ellipse`, `peripheries=2`, `style="rounded,filled"`, float sizes, ...).

use layout::gv::parser::ast;

/// Stands for `\N` (the node's name) in a decoded label until [`adapt`] knows the name.
const NODE_NAME: char = '\u{E000}';

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// An ID (plain, numeral, quoted or HTML), already decoded to its text.
    Id(String),
    /// `graph`, `digraph`, `subgraph`, `node`, `edge` or `strict`, unquoted.
    Keyword(&'static str),
    /// `{ } [ ] ; , = :` or `->` / `--`.
    Punct(&'static str),
}

/// A DOT syntax error at a 1-based line and column of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    src: &'a str,
}

impl Lexer<'_> {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn error(&self, at: usize, message: impl Into<String>) -> SyntaxError {
        let before = &self.chars[..at.min(self.chars.len())];
        let line = before.iter().filter(|&&c| c == '\n').count() + 1;
        let column = before.iter().rev().take_while(|&&c| c != '\n').count() + 1;
        let _ = self.src;
        SyntaxError { line, column, message: message.into() }
    }

    fn at_line_start(&self) -> bool {
        self.chars[..self.pos].iter().rev().take_while(|&&c| c != '\n').all(|c| c.is_whitespace())
    }

    /// Skips whitespace and comments; `Err` for an unterminated `/*`.
    fn skip_trivia(&mut self) -> Result<(), SyntaxError> {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(c), _) if c.is_whitespace() => self.pos += 1,
                (Some('/'), Some('/')) => self.skip_line(),
                (Some('#'), _) if self.at_line_start() => self.skip_line(),
                (Some('/'), Some('*')) => {
                    let start = self.pos;
                    self.pos += 2;
                    loop {
                        match (self.peek(0), self.peek(1)) {
                            (Some('*'), Some('/')) => {
                                self.pos += 2;
                                break;
                            }
                            (Some(_), _) => self.pos += 1,
                            (None, _) => return Err(self.error(start, "unterminated `/*` comment")),
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn skip_line(&mut self) {
        while let Some(c) = self.peek(0) {
            if c == '\n' {
                break;
            }
            self.pos += 1;
        }
    }

    /// A quoted string, decoded: `\"` and line continuations at the lexical level, then the
    /// escString escapes of labels (`\n`, `\l`, `\r` are line breaks, `\\` a backslash).
    fn quoted(&mut self) -> Result<String, SyntaxError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek(0) {
                None => return Err(self.error(start, "unterminated string")),
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('\\') => {
                    match self.peek(1) {
                        Some('\n') => {}
                        Some('\r') if self.peek(2) == Some('\n') => self.pos += 1,
                        Some('n' | 'l' | 'r') => out.push('\n'),
                        Some('N') => out.push(NODE_NAME),
                        Some(c) => out.push(c),
                        None => return Err(self.error(start, "unterminated string")),
                    }
                    self.pos += 2;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// An HTML string `<...>` (nested angle brackets), reduced to its text.
    fn html(&mut self) -> Result<String, SyntaxError> {
        let start = self.pos;
        let mut depth = 0usize;
        let mut raw = String::new();
        loop {
            let Some(c) = self.peek(0) else { return Err(self.error(start, "unterminated HTML label `<...>`")) };
            self.pos += 1;
            match c {
                '<' => depth += 1,
                '>' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            raw.push(c);
        }
        Ok(html_text(&raw[1..]))
    }

    fn tokens(mut self) -> Result<Vec<Tok>, SyntaxError> {
        let mut out = Vec::new();
        loop {
            self.skip_trivia()?;
            let Some(c) = self.peek(0) else { return Ok(out) };
            let tok = match c {
                '{' | '}' | '[' | ']' | ';' | ',' | '=' | ':' => {
                    self.pos += 1;
                    Tok::Punct(match c {
                        '{' => "{",
                        '}' => "}",
                        '[' => "[",
                        ']' => "]",
                        ';' => ";",
                        ',' => ",",
                        '=' => "=",
                        _ => ":",
                    })
                }
                '-' if self.peek(1) == Some('>') => {
                    self.pos += 2;
                    Tok::Punct("->")
                }
                '-' if self.peek(1) == Some('-') => {
                    self.pos += 2;
                    Tok::Punct("--")
                }
                '"' => {
                    let mut text = self.quoted()?;
                    // "a" + "b" concatenation.
                    loop {
                        let save = self.pos;
                        self.skip_trivia()?;
                        if self.peek(0) == Some('+') {
                            self.pos += 1;
                            self.skip_trivia()?;
                            if self.peek(0) == Some('"') {
                                text.push_str(&self.quoted()?);
                                continue;
                            }
                            return Err(self.error(self.pos, "expected a quoted string after `+`"));
                        }
                        self.pos = save;
                        break;
                    }
                    Tok::Id(text)
                }
                '<' => Tok::Id(self.html()?),
                c if c == '-' || c == '.' || c.is_ascii_digit() => {
                    let start = self.pos;
                    if c == '-' {
                        self.pos += 1;
                    }
                    let mut dot = false;
                    let mut digits = 0;
                    while let Some(d) = self.peek(0) {
                        if d.is_ascii_digit() {
                            digits += 1;
                        } else if d == '.' && !dot {
                            dot = true;
                        } else {
                            break;
                        }
                        self.pos += 1;
                    }
                    if digits == 0 {
                        return Err(self.error(start, format!("unexpected character `{c}`")));
                    }
                    Tok::Id(self.chars[start..self.pos].iter().collect())
                }
                c if c == '_' || c.is_alphabetic() => {
                    let start = self.pos;
                    while self.peek(0).is_some_and(|d| d == '_' || d.is_alphanumeric()) {
                        self.pos += 1;
                    }
                    let word: String = self.chars[start..self.pos].iter().collect();
                    match word.to_ascii_lowercase().as_str() {
                        "graph" => Tok::Keyword("graph"),
                        "digraph" => Tok::Keyword("digraph"),
                        "subgraph" => Tok::Keyword("subgraph"),
                        "node" => Tok::Keyword("node"),
                        "edge" => Tok::Keyword("edge"),
                        "strict" => Tok::Keyword("strict"),
                        _ => Tok::Id(word),
                    }
                }
                other => return Err(self.error(self.pos, format!("unexpected character `{other}`"))),
            };
            out.push(tok);
        }
    }
}

/// The text of an HTML label: tags dropped (`<br/>` is a line break), entities decoded.
fn html_text(raw: &str) -> String {
    let mut text = String::new();
    let mut rest = raw;
    while let Some(lt) = rest.find('<') {
        text.push_str(&rest[..lt]);
        let end = rest[lt..].find('>').map_or(rest.len(), |e| lt + e + 1);
        let tag = rest[lt + 1..end.saturating_sub(1).max(lt + 1)].trim().to_ascii_lowercase();
        if tag.starts_with("br") {
            text.push('\n');
        }
        rest = &rest[end..];
    }
    text.push_str(rest);
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let semi = tail.find(';').filter(|&s| s <= 10);
        let decoded = semi.and_then(|s| match &tail[1..s] {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some(' '),
            e if e.starts_with("#x") || e.starts_with("#X") => {
                u32::from_str_radix(&e[2..], 16).ok().and_then(char::from_u32)
            }
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        });
        match (decoded, semi) {
            (Some(c), Some(s)) => {
                out.push(c);
                rest = &tail[s + 1..];
            }
            _ => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Quotes `text` so that the layout-rs lexer decodes it back to exactly `text`.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\0' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Re-writes DOT so that the layout-rs lexer and parser can read it (see the module docs).
pub(crate) fn normalize(dot: &str) -> Result<String, SyntaxError> {
    let tokens = Lexer { chars: dot.chars().collect(), pos: 0, src: dot }.tokens()?;
    let mut out = String::with_capacity(dot.len() + dot.len() / 4);
    for tok in tokens {
        match tok {
            Tok::Id(text) => out.push_str(&quote(&text)),
            Tok::Keyword(k) => out.push_str(k),
            Tok::Punct(p) => out.push_str(p),
        }
        out.push(if out.ends_with([';', '{', '}']) { '\n' } else { ' ' });
    }
    Ok(out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Graph,
    Node,
    Edge,
}

/// The node defaults (`node [...]`) in force, as written in the DOT.
#[derive(Clone, Default)]
struct NodeDefaults {
    shape: Option<String>,
    style: Option<String>,
}

/// Rewrites attributes layout-rs does not understand into ones it does, in place.
pub(crate) fn adapt(graph: &mut ast::Graph) {
    adapt_scope(graph, &mut NodeDefaults::default());
}

fn raw<'a>(list: &'a ast::AttributeList, key: &str) -> Option<&'a str> {
    list.list.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn adapt_scope(graph: &mut ast::Graph, defaults: &mut NodeDefaults) {
    for stmt in &mut graph.list.list {
        match stmt {
            ast::Stmt::Node(n) => {
                // layout-rs rounds the corners of `Mrecord`s only: use one for a rounded box when
                // its label has nothing a record label would interpret.
                let shape = raw(&n.list, "shape").map(str::to_string).or_else(|| defaults.shape.clone());
                let style = raw(&n.list, "style").map(str::to_string).or_else(|| defaults.style.clone());
                let label = raw(&n.list, "label").unwrap_or(&n.id.name);
                let rounded = matches!(shape.as_deref().map(str::trim), Some("box" | "rect" | "rectangle" | "square"))
                    && style.is_some_and(|s| s.split(',').any(|p| p.trim() == "rounded"))
                    && !label.trim().is_empty()
                    && !label.contains(['{', '}', '|', '<', '>', NODE_NAME]);
                adapt_list(&mut n.list, Kind::Node, Some(&n.id.name));
                if rounded {
                    n.list.list.retain(|(k, _)| k != "shape");
                    n.list.add_attr("shape", "Mrecord");
                }
            }
            ast::Stmt::Edge(e) => {
                // Compass points (`a:n`) are not ports of a record; layout-rs would panic on them.
                for id in std::iter::once(&mut e.from).chain(e.to.iter_mut().map(|t| &mut t.0)) {
                    if matches!(id.port.as_deref(), Some("n" | "ne" | "e" | "se" | "s" | "sw" | "w" | "nw" | "c" | "_"))
                    {
                        id.port = None;
                    }
                }
                adapt_list(&mut e.list, Kind::Edge, None)
            }
            ast::Stmt::Attribute(a) => {
                let kind = match a.target {
                    ast::AttrStmtTarget::Graph => Kind::Graph,
                    ast::AttrStmtTarget::Node => {
                        if let Some(shape) = raw(&a.list, "shape") {
                            defaults.shape = Some(shape.to_string());
                        }
                        if let Some(style) = raw(&a.list, "style") {
                            defaults.style = Some(style.to_string());
                        }
                        Kind::Node
                    }
                    ast::AttrStmtTarget::Edge => Kind::Edge,
                };
                adapt_list(&mut a.list, kind, None)
            }
            ast::Stmt::SubGraph(g) => adapt_scope(g, &mut defaults.clone()),
        }
    }
}

/// Greedy word wrap at `width` characters (existing line breaks kept, long words not split, no
/// line left shorter than a third of `width` just to break before a long word):
/// layout-rs sizes a label at one font size per character, about twice its real width, so long
/// one-line edge labels spread the graph far apart.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut len = 0;
        for word in line.split(' ').filter(|w| !w.is_empty()) {
            let n = word.chars().count();
            if len > 0 && len + 1 + n > width && len >= width / 3 {
                out.push('\n');
                len = 0;
            } else if len > 0 {
                out.push(' ');
                len += 1;
            }
            out.push_str(word);
            len += n;
        }
    }
    out
}

/// Edge labels are wrapped at this many characters.
const EDGE_LABEL_WIDTH: usize = 30;
/// The font size edge labels are laid out with. layout-rs reserves one font size of width per
/// character, about twice what a serif font needs, and the edge passes by the side of its label's
/// box, so labels laid out at their real size end up far from their edges. They are laid out at
/// this size and drawn at [`EDGE_RENDER_FONT`] (see `svg::Bounded::draw_text`); no node uses it.
pub(crate) const EDGE_LAYOUT_FONT: usize = 6;
/// The font size edge labels are drawn with.
pub(crate) const EDGE_RENDER_FONT: usize = 12;

fn rounded(value: &str) -> Option<String> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| (v.round().max(1.0) as usize).to_string())
}

fn color(value: &str) -> String {
    let value = value.trim();
    let value = value.rsplit('/').next().unwrap_or(value);
    let first = value.split([':', ';']).next().unwrap_or(value);
    match first.to_ascii_lowercase().as_str() {
        "none" | "transparent" | "invis" => "white".to_string(),
        c if c.starts_with('#') => c.to_string(),
        c => c.to_string(),
    }
}

fn adapt_list(list: &mut ast::AttributeList, kind: Kind, node_name: Option<&str>) {
    let old = std::mem::take(&mut list.list);
    let get = |key: &str| old.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let mut new: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| {
        new.retain(|(key, _)| key != k);
        new.push((k.to_string(), v));
    };
    let style: Vec<String> =
        get("style").map(|s| s.split(',').map(|p| p.trim().to_ascii_lowercase()).collect()).unwrap_or_default();
    let has_style = |s: &str| style.iter().any(|p| p == s);

    match kind {
        Kind::Graph => {
            for (k, v) in &old {
                match k.as_str() {
                    "rankdir" => {
                        let lr = matches!(v.trim().to_ascii_uppercase().as_str(), "LR" | "RL");
                        set("rankdir", if lr { "LR" } else { "TB" }.to_string());
                    }
                    _ => set(k, v.clone()),
                }
            }
        }
        Kind::Node => {
            for (k, v) in &old {
                match k.as_str() {
                    // Graphviz sizes are in inches; layout-rs reads `width` as the line width.
                    "width" | "height" | "style" | "shape" | "peripheries" | "penwidth" | "fixedsize" => {}
                    "label" => {
                        let label = match node_name {
                            Some(name) => v.replace(NODE_NAME, name),
                            None if v.chars().all(|c| c == NODE_NAME) => continue,
                            None => v.replace(NODE_NAME, ""),
                        };
                        set("label", label);
                    }
                    "fontsize" => {
                        if let Some(size) = rounded(v) {
                            let size = if size == EDGE_LAYOUT_FONT.to_string() { "7".to_string() } else { size };
                            set("fontsize", size);
                        }
                    }
                    "color" | "fillcolor" => set(k, color(v)),
                    _ => set(k, v.clone()),
                }
            }
            let mut line_width = get("penwidth").and_then(rounded);
            if has_style("bold") {
                line_width = Some("2".into());
            }
            if has_style("filled") {
                set("style", "filled".into());
            }
            if has_style("invis") {
                set("color", "white".into());
                set("fillcolor", "white".into());
                set("label", String::new());
            }
            if let Some(shape) = get("shape") {
                match shape.trim() {
                    "doublecircle" | "doubleoctagon" | "tripleoctagon" => set("shape", "doublecircle".into()),
                    "circle" | "ellipse" | "oval" | "egg" => set("shape", "circle".into()),
                    s @ ("record" | "Mrecord") => set("shape", s.into()),
                    "point" => {
                        set("shape", "circle".into());
                        set("label", String::new());
                        set("fontsize", "1".into());
                        set("style", "filled".into());
                        if get("fillcolor").is_none() {
                            set("fillcolor", get("color").map_or_else(|| "black".into(), color));
                        }
                    }
                    s => {
                        set("shape", "box".into());
                        if matches!(s, "none" | "plaintext" | "plain" | "underline") && get("color").is_none() {
                            set("color", "white".into());
                        }
                    }
                }
            }
            let double =
                matches!(get("shape").map(str::trim), Some("doublecircle" | "doubleoctagon" | "tripleoctagon"));
            if !double && get("peripheries").and_then(|p| p.trim().parse::<u32>().ok()).is_some_and(|p| p >= 2) {
                line_width = Some("3".into());
            }
            if let Some(w) = line_width {
                set("width", w);
            }
        }
        Kind::Edge => {
            for (k, v) in &old {
                match k.as_str() {
                    "style" | "xlabel" | "headlabel" | "taillabel" => {}
                    "label" => set("label", wrap(&v.replace(NODE_NAME, ""), EDGE_LABEL_WIDTH)),
                    "fontsize" => {}
                    "penwidth" => {
                        if let Some(n) = rounded(v) {
                            set(k, n);
                        }
                    }
                    "color" | "fillcolor" | "fontcolor" => set(k, color(v)),
                    _ => set(k, v.clone()),
                }
            }
            if get("label").is_none() {
                if let Some(l) = get("xlabel").or(get("headlabel")).or(get("taillabel")) {
                    set("label", wrap(&l.replace(NODE_NAME, ""), EDGE_LABEL_WIDTH));
                }
            }
            set("fontsize", EDGE_LAYOUT_FONT.to_string());
            if has_style("dashed") || has_style("dotted") {
                set("style", "dashed".into());
            }
            if has_style("bold") {
                set("penwidth", "2".into());
            }
            if has_style("invis") {
                set("color", "white".into());
                set("label", String::new());
            }
        }
    }
    list.list = new;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_what_layout_rs_cannot_lex() {
        let dot = "Digraph \"g\" {\n  # a preprocessor line\n  __start [shape=point, width=.2];\n  \
                   __start -> start /* c */;\n  start -> \"step \\\"A\\\"\" [label=\"a\" + \"b\\nc\"];\n  \
                   x [label=<<b>bold</b><br/>&amp; more>];\n}\n";
        let out = normalize(dot).unwrap();
        assert_eq!(
            out,
            "digraph \"g\" {\n\"__start\" [ \"shape\" = \"point\" , \"width\" = \".2\" ] ;\n\"__start\" -> \"start\" ;\n\
             \"start\" -> \"step \\\"A\\\"\" [ \"label\" = \"ab\\nc\" ] ;\n\"x\" [ \"label\" = \"bold\\n& more\" ] ;\n}\n"
        );
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = normalize("digraph {\n  a -> b;\n  a ~ b\n}").unwrap_err();
        assert_eq!((err.line, err.column), (3, 5));
        assert_eq!(normalize("digraph { a [label=\"x ]; }").unwrap_err().message, "unterminated string");
        assert_eq!(normalize("digraph { /* }").unwrap_err().line, 1);
    }

    #[test]
    fn wraps() {
        assert_eq!(
            wrap("when ctx.initial_data[\"kind\"] == \"a\": success", 30),
            "when ctx.initial_data[\"kind\"]\n== \"a\": success"
        );
        assert_eq!(wrap("a b\nc  d", 3), "a b\nc d");
        assert_eq!(
            wrap("when ctx.initial_data[\"language\"] == \"en\": success", 30),
            "when ctx.initial_data[\"language\"]\n== \"en\": success"
        );
        assert_eq!(wrap("", 3), "");
    }

    #[test]
    fn html_text() {
        assert_eq!(super::html_text("a<br align=\"left\"/>b &lt;c&gt; &#65;&#x42; & d"), "a\nb <c> AB & d");
    }
}
