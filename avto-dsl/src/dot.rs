//! The Graphviz DOT of a blueprint. Byte-for-byte deterministic: states in declaration order,
//! edges in source order, exact duplicates removed. Stays inside the DOT subset the `layout-rs`
//! parser accepts (quoted IDs, `[k=v, ...]` lists, `;` terminated statements, no comments, no
//! ports) so `cargo avto graph` can render it without a system Graphviz.
//!
//! ```text
//! digraph "simple_linear_flow" {
//!   node [shape=box, style=rounded];
//!   "__start" [shape=point, label=""];
//!   "__start" -> "start";
//!   "start";
//!   "finished" [peripheries=2, label="finished\n(finished)"];
//!   "agg" [style="rounded,dashed"];
//!   "start" -> "step_A";
//!   "step_A" -> "step_B" [label="success"];
//!   "process_text" -> "finished" [label="when ctx.initial_data[\"language\"] == \"en\": success"];
//! }
//! ```

use std::fmt::Write as _;

use crate::model::{Model, StateKind};

/// A DOT string literal (quotes included), escaping `"` and `\`.
pub fn quote(s: &str) -> String {
    format!("\"{}\"", escape(s))
}

/// The inside of a DOT string literal: `"` and `\` escaped, line breaks turned into spaces.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The DOT of a (validated) blueprint model.
pub fn render(model: &Model) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quote(model.name()));
    out.push_str("  node [shape=box, style=rounded];\n");
    let states = model.states();
    if let Some(start) = model.start() {
        out.push_str("  \"__start\" [shape=point, label=\"\"];\n");
        let _ = writeln!(out, "  \"__start\" -> {};", quote(start));
    }
    for s in &states {
        let name = quote(&s.name);
        match s.kind {
            StateKind::Normal => {
                let _ = writeln!(out, "  {name};");
            }
            StateKind::End(status) => {
                // `\n` is DOT's line break inside a label.
                let label = format!("\"{}\\n({})\"", escape(&s.name), status.as_str());
                let _ = writeln!(out, "  {name} [peripheries=2, label={label}];");
            }
            StateKind::Aggregator => {
                let _ = writeln!(out, "  {name} [style=\"rounded,dashed\"];");
            }
        }
    }
    let mut seen: Vec<String> = Vec::new();
    for (h, e) in model.edges() {
        let label = match (&h.when, e.label.is_empty()) {
            (Some(w), true) => format!("when {}", w.source),
            (Some(w), false) => format!("when {}: {}", w.source, e.label),
            (None, _) => e.label.clone(),
        };
        let mut line = format!("  {} -> {}", quote(&h.state.value), quote(&e.target.value));
        if !label.is_empty() {
            let _ = write!(line, " [label={}]", quote(&label));
        }
        line.push_str(";\n");
        if !seen.contains(&line) {
            out.push_str(&line);
            seen.push(line);
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::Errors;
    use proc_macro2::{Span, TokenStream};
    use quote::quote;

    fn dot(attr: TokenStream, item: TokenStream) -> String {
        let mut errors = Errors::new();
        let parsed = crate::parse::blueprint(attr, Span::call_site(), item, &mut errors).expect("a module");
        crate::validate::validate(&parsed.model, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        render(&parsed.model)
    }

    fn linear_flow_dot() -> String {
        dot(
            quote!(name = "simple_linear_flow", api_version = "v1", api_endpoint = "jobs/simple_flow"),
            quote! {
                mod simple_flow {
                    use super::*;
                    #[handler(state = "start", start)]
                    async fn start(actions: &mut Actions) { actions.transition_to("step_A"); }
                    #[handler(state = "step_A")]
                    async fn step_a(ctx: &Context, actions: &mut Actions) {
                        actions.dispatch_task("simple_task").params(ctx.initial_data.clone())
                            .transitions([("success", "step_B"), ("failure", "failed")]);
                    }
                    #[handler(state = "step_B")]
                    async fn step_b(actions: &mut Actions) { actions.transition_to("finished"); }
                    #[handler(state = "finished", end)]
                    async fn finished(ctx: &Context) {}
                    #[handler(state = "failed", end)]
                    async fn failed(ctx: &Context) {}
                }
            },
        )
    }

    #[test]
    fn linear_flow() {
        assert_eq!(
            linear_flow_dot(),
            r#"digraph "simple_linear_flow" {
  node [shape=box, style=rounded];
  "__start" [shape=point, label=""];
  "__start" -> "start";
  "start";
  "step_A";
  "step_B";
  "finished" [peripheries=2, label="finished\n(finished)"];
  "failed" [peripheries=2, label="failed\n(failed)"];
  "start" -> "step_A";
  "step_A" -> "step_B" [label="success"];
  "step_A" -> "failed" [label="failure"];
  "step_B" -> "finished";
}
"#
        );
    }

    #[test]
    fn conditions_aggregators_and_duplicates() {
        let d = dot(
            quote!(name = "multi"),
            quote! {
                mod m {
                    #[handler(state = "start", start)]
                    async fn start(actions: &mut Actions) { actions.transition_to("process_text"); }
                    #[handler(state = "process_text")]
                    #[when(ctx.initial_data["language"] == "en")]
                    async fn english(actions: &mut Actions) {
                        actions.dispatch_task("process_en").transitions([("success", "fan"), ("failure", "failed")]);
                    }
                    #[handler(state = "process_text")]
                    async fn other(ctx: &Context, actions: &mut Actions) {
                        if ctx.x { actions.transition_to("failed"); } else { actions.transition_to("failed"); }
                    }
                    #[handler(state = "fan")]
                    async fn fan(actions: &mut Actions) {
                        for part in [1, 2] {
                            actions.dispatch_task("part").transitions([("success", "agg"), ("failure", "failed")]);
                        }
                    }
                    #[aggregator(state = "agg")]
                    async fn agg(actions: &mut Actions) {
                        actions.await_human_approval().transitions([("approved", "done"), ("rejected", "cancelled")]);
                    }
                    #[handler(end)] async fn done() {}
                    #[handler(end = "quarantined")] async fn failed() {}
                    #[handler(end)] async fn cancelled() {}
                }
            },
        );
        assert_eq!(
            d,
            r#"digraph "multi" {
  node [shape=box, style=rounded];
  "__start" [shape=point, label=""];
  "__start" -> "start";
  "start";
  "process_text";
  "fan";
  "agg" [style="rounded,dashed"];
  "done" [peripheries=2, label="done\n(finished)"];
  "failed" [peripheries=2, label="failed\n(quarantined)"];
  "cancelled" [peripheries=2, label="cancelled\n(cancelled)"];
  "start" -> "process_text";
  "process_text" -> "fan" [label="when ctx.initial_data[\"language\"] == \"en\": success"];
  "process_text" -> "failed" [label="when ctx.initial_data[\"language\"] == \"en\": failure"];
  "process_text" -> "failed";
  "fan" -> "agg" [label="success"];
  "fan" -> "failed" [label="failure"];
  "agg" -> "done" [label="approved"];
  "agg" -> "cancelled" [label="rejected"];
}
"#
        );
    }

    /// layout-rs (what `cargo avto graph` renders SVG with) parses and lays out our DOT.
    fn render_with_layout_rs(dot: &str) -> String {
        let mut parser = layout::gv::DotParser::new(dot);
        let graph = parser.process().expect("layout-rs parses the DOT");
        let mut builder = layout::gv::GraphBuilder::new();
        builder.visit_graph(&graph);
        let mut vg = builder.get();
        let mut svg = layout::backends::svg::SVGWriter::new();
        vg.do_it(false, false, false, &mut svg);
        svg.finalize()
    }

    #[test]
    fn layout_rs_accepts_the_dot() {
        let d = dot(
            quote!(name = "loops"),
            quote! {
                mod m {
                    #[handler(start)]
                    async fn start(ctx: &Context, actions: &mut Actions) {
                        if ctx.x { actions.transition_to("start"); } else { actions.transition_to("work"); }
                    }
                    #[handler]
                    #[when(ctx.initial_data["k"] == "a\\b\"c")]
                    async fn work(actions: &mut Actions) {
                        actions.dispatch_task("a").transitions([("success", "agg"), ("failure", "start")]);
                        actions.dispatch_task("b").transitions([("success", "agg"), ("failure", "start")]);
                    }
                    #[handler(state = "work")]
                    async fn work2(actions: &mut Actions) { actions.transition_to("done"); }
                    #[aggregator]
                    async fn agg(actions: &mut Actions) {
                        actions.await_human_approval().transitions([("approved", "done"), ("rejected", "work")]);
                    }
                    #[handler(end)] async fn done() {}
                }
            },
        );
        assert!(d.contains(r#"[label="when ctx.initial_data[\"k\"] == \"a\\\\b\\\"c\": success"]"#), "{d}");
        let svg = render_with_layout_rs(&d);
        let _ = render_with_layout_rs(&linear_flow_dot());
        assert!(svg.contains("<svg"), "{svg}");
        assert!(svg.contains("approved"), "{svg}");
    }

    #[test]
    fn escapes() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
