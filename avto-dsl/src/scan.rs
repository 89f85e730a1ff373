//! Blueprints in a source file, without compiling it: what `cargo avto graph` prints.
//! Runs the same parse -> validate -> DOT pipeline as the macro, so the DOT is byte-identical
//! to the module's `DOT` constant.

use proc_macro2::{Span, TokenStream};
use syn::spanned::Spanned as _;

use crate::errors::Errors;
use crate::{dot, parse, validate};

/// One blueprint found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    /// The blueprint name (`name = "..."`).
    pub name: String,
    /// The module path inside the file (`simple_flow`, `outer::inner::flow`).
    pub module: String,
    /// The DOT, identical to the module's `DOT` constant.
    pub dot: String,
}

/// Every `#[avto::blueprint]` / `#[blueprint]` module of a Rust source file (also inside inline
/// modules), in source order. Any blueprint with errors makes the whole result an `Err` listing
/// every error as `module: line:column: message`, one per line.
pub fn graphs_in_source(src: &str) -> Result<Vec<Graph>, String> {
    let file = syn::parse_file(src).map_err(|e| {
        let start = e.span().start();
        format!("{}:{}: {e}", start.line, start.column + 1)
    })?;
    let mut graphs = Vec::new();
    let mut failures = Vec::new();
    walk(&file.items, &mut Vec::new(), &mut graphs, &mut failures);
    if failures.is_empty() {
        Ok(graphs)
    } else {
        Err(failures.join("\n"))
    }
}

fn is_blueprint_attr(attr: &syn::Attribute) -> bool {
    attr.path().segments.last().is_some_and(|s| s.ident == crate::attr::BLUEPRINT)
}

fn walk(items: &[syn::Item], path: &mut Vec<String>, graphs: &mut Vec<Graph>, failures: &mut Vec<String>) {
    for item in items {
        let syn::Item::Mod(m) = item else { continue };
        path.push(m.ident.to_string());
        if let Some(i) = m.attrs.iter().position(is_blueprint_attr) {
            let module = path.join("::");
            match graph(m, i) {
                Ok(dot) => {
                    let name = dot.1;
                    graphs.push(Graph { name, module, dot: dot.0 });
                }
                Err(msgs) => failures.extend(msgs.into_iter().map(|m| format!("{module}: {m}"))),
            }
        } else if let Some((_, inner)) = &m.content {
            walk(inner, path, graphs, failures);
        }
        path.pop();
    }
}

/// (DOT, name) of the blueprint module `m` whose attribute `attr_index` is `#[blueprint(...)]`.
fn graph(m: &syn::ItemMod, attr_index: usize) -> Result<(String, String), Vec<String>> {
    let mut m = m.clone();
    let attr = m.attrs.remove(attr_index);
    let (args, span): (TokenStream, Span) = match &attr.meta {
        syn::Meta::List(list) => (list.tokens.clone(), attr.span()),
        other => (TokenStream::new(), other.span()),
    };
    let mut errors = Errors::new();
    let parsed = parse::blueprint(args, span, quote::ToTokens::to_token_stream(&m), &mut errors);
    let Some(parsed) = parsed else { return Err(errors.messages()) };
    validate::validate(&parsed.model, &mut errors);
    if !errors.is_empty() {
        errors.sort_by_position();
        return Err(errors.messages());
    }
    Ok((dot::render(&parsed.model), parsed.model.name().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r#"
use avto::prelude::*;

#[avto::blueprint(name = "one")]
mod first {
    use super::*;
    #[handler(start)]
    async fn start(actions: &mut Actions) { actions.transition_to("done"); }
    #[handler(end)]
    async fn done() {}
}

mod outer {
    #[blueprint(name = "two")]
    pub mod second {
        #[handler(start, end)]
        async fn only() {}
    }
}

#[cfg(test)]
mod tests {}
"#;

    #[test]
    fn finds_every_blueprint() {
        let graphs = graphs_in_source(SRC).unwrap();
        assert_eq!(graphs.len(), 2);
        assert_eq!(graphs[0].name, "one");
        assert_eq!(graphs[0].module, "first");
        assert_eq!(graphs[1].module, "outer::second");
        assert_eq!(
            graphs[1].dot,
            "digraph \"two\" {\n  node [shape=box, style=rounded];\n  \"__start\" [shape=point, label=\"\"];\n  \"__start\" -> \"only\";\n  \"only\" [peripheries=2, label=\"only\\n(finished)\"];\n}\n"
        );
    }

    #[test]
    fn errors_have_positions() {
        let src = "#[avto::blueprint(name = \"x\")]\nmod m {\n    #[handler(start)]\n    async fn a(actions: &mut Actions) { actions.transition_to(\"b\"); }\n}\n";
        let err = graphs_in_source(src).unwrap_err();
        assert_eq!(
            err,
            "m: 2:5: blueprint `x` has no end state; mark the final handlers `end`: `#[handler(state = \"finished\", end)]`\n\
             m: 4:63: unknown state `b` in `transition_to` (states: `a`)"
        );
    }

    #[test]
    fn syntax_errors() {
        assert!(graphs_in_source("mod {").is_err());
    }
}
