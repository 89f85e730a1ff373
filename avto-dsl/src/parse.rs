//! syn -> model: reads the blueprint attribute and module, strips the helper attributes
//! (`#[handler]`, `#[aggregator]`, `#[when]`) and scans every handler body for its actions
//! and edges. Only syntax is checked here; meaning is checked by `validate`.

use proc_macro2::{Span, TokenStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::visit::Visit;
use syn::visit_mut::VisitMut;
use syn::{Expr, ExprMethodCall, Lit};

use crate::attr::{self, AGGREGATOR, HANDLER, WHEN};
use crate::errors::Errors;
use crate::model::{Action, ActionKind, Arg, Edge, EdgeKind, Handler, HandlerKind, Model, Spanned, Step, When};
use crate::printer;

/// A parsed blueprint: the model and the user's module with the helper attributes stripped.
#[derive(Debug)]
pub struct Parsed {
    pub model: Model,
    pub module: syn::ItemMod,
}

/// Parses `#[avto::blueprint(<attr>)] <item>`. `attr_span` is where errors about the whole
/// attribute go (a missing `name`). `None` when `item` is not an inline module (an error is recorded).
pub fn blueprint(attr: TokenStream, attr_span: Span, item: TokenStream, errors: &mut Errors) -> Option<Parsed> {
    let args = attr::parse_blueprint_args(attr, errors);
    let item: syn::Item = match syn::parse2(item) {
        Ok(item) => item,
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    let syn::Item::Mod(mut module) = item else {
        errors.error(
            item_span(&item),
            "`#[avto::blueprint]` goes on an inline module: `mod my_flow { /* handlers */ }`",
        );
        return None;
    };
    let ident = module.ident.clone();
    let Some((_, items)) = module.content.as_mut() else {
        errors.error(
            module.semi.map_or(module.ident.span(), |s| s.span),
            format!(
                "`#[avto::blueprint]` needs the module's handlers inline: write `mod {ident} {{ ... }}` instead of `mod {ident};`"
            ),
        );
        return None;
    };
    if args.name.is_none() {
        errors.error(attr_span, "missing `name = \"...\"` in `#[avto::blueprint(...)]`");
    }
    let mut handlers = Vec::new();
    for item in items.iter_mut() {
        match item {
            syn::Item::Fn(f) => {
                if let Some(h) = handler(f, errors) {
                    handlers.push(h);
                }
            }
            other => {
                if let Some(attrs) = item_attrs(other) {
                    for a in take_helpers(attrs) {
                        errors.error(
                            a.attr.span(),
                            format!("`#[{}]` goes on an `async fn` directly inside the blueprint module", a.name),
                        );
                    }
                }
            }
        }
    }
    let model = Model {
        module: ident,
        name: args.name,
        api_version: args.api_version,
        api_endpoint: args.api_endpoint,
        data_stores: args.data_stores,
        handlers,
    };
    Some(Parsed { model, module })
}

fn item_span(item: &syn::Item) -> Span {
    // The item's first token after its attributes (`fn`, `pub`, `struct`, ...).
    let mut item = item.clone();
    if let Some(attrs) = item_attrs(&mut item) {
        attrs.clear();
    }
    quote::ToTokens::to_token_stream(&item).into_iter().next().map_or_else(Span::call_site, |t| t.span())
}

fn item_attrs(item: &mut syn::Item) -> Option<&mut Vec<syn::Attribute>> {
    use syn::Item::*;
    Some(match item {
        Const(i) => &mut i.attrs,
        Enum(i) => &mut i.attrs,
        ExternCrate(i) => &mut i.attrs,
        Fn(i) => &mut i.attrs,
        ForeignMod(i) => &mut i.attrs,
        Impl(i) => &mut i.attrs,
        Macro(i) => &mut i.attrs,
        Mod(i) => &mut i.attrs,
        Static(i) => &mut i.attrs,
        Struct(i) => &mut i.attrs,
        Trait(i) => &mut i.attrs,
        TraitAlias(i) => &mut i.attrs,
        Type(i) => &mut i.attrs,
        Union(i) => &mut i.attrs,
        Use(i) => &mut i.attrs,
        _ => return None,
    })
}

/// A helper attribute taken off an item.
struct Helper {
    name: &'static str,
    attr: syn::Attribute,
}

/// Whether `path` names one of our helper attributes (`handler`, `avto::handler`, `avto::prelude::when`, ...).
fn helper_name(path: &syn::Path) -> Option<&'static str> {
    let last = path.segments.last()?.ident.to_string();
    let name = [HANDLER, AGGREGATOR, WHEN].into_iter().find(|n| *n == last)?;
    let ours = path.segments.len() == 1 || path.segments.first().is_some_and(|s| s.ident == "avto");
    ours.then_some(name)
}

/// Removes the helper attributes from `attrs` and returns them, in order.
fn take_helpers(attrs: &mut Vec<syn::Attribute>) -> Vec<Helper> {
    let mut helpers = Vec::new();
    attrs.retain(|a| match helper_name(a.path()) {
        Some(name) => {
            helpers.push(Helper { name, attr: a.clone() });
            false
        }
        None => true,
    });
    helpers
}

/// The tokens inside `#[name(...)]` (empty for `#[name]`); `#[name = ...]` is an error.
fn helper_args(h: &Helper, errors: &mut Errors) -> TokenStream {
    match &h.attr.meta {
        syn::Meta::Path(_) => TokenStream::new(),
        syn::Meta::List(list) => list.tokens.clone(),
        syn::Meta::NameValue(nv) => {
            errors.error(nv.eq_token.span, format!("expected `#[{}(...)]`", h.name));
            TokenStream::new()
        }
    }
}

fn handler(f: &mut syn::ItemFn, errors: &mut Errors) -> Option<Handler> {
    let helpers = take_helpers(&mut f.attrs);
    if helpers.is_empty() {
        return None;
    }
    let mut kind: Option<(HandlerKind, Span, attr::HandlerArgs)> = None;
    let mut when: Option<When> = None;
    for h in &helpers {
        let span = h.attr.path().segments.last().map_or_else(|| h.attr.span(), |s| s.ident.span());
        match h.name {
            WHEN => {
                if when.is_some() {
                    errors.error(span, "a handler can have only one `#[when(...)]`; combine the conditions with `&&` or `||`");
                    continue;
                }
                let tokens = helper_args(h, errors);
                if tokens.is_empty() {
                    errors.error(span, "`#[when(...)]` needs a condition over `ctx`, e.g. `#[when(ctx.initial_data[\"language\"] == \"en\")]`");
                    continue;
                }
                if let Err(e) = syn::parse2::<Expr>(tokens.clone()) {
                    errors.push(e);
                    continue;
                }
                let source = printer::print(&tokens);
                when = Some(When { expr: tokens, source, span });
            }
            name => {
                let this = if name == HANDLER { HandlerKind::Handler } else { HandlerKind::Aggregator };
                if let Some((first, ..)) = &kind {
                    errors.error(
                        span,
                        format!("`{}` already has `#[{}]`; a function handles one state", f.sig.ident, first.attr()),
                    );
                    continue;
                }
                let tokens = helper_args(h, errors);
                let args = match this {
                    HandlerKind::Handler => attr::parse_handler_args(tokens, errors),
                    HandlerKind::Aggregator => attr::parse_aggregator_args(tokens, errors),
                };
                kind = Some((this, span, args));
            }
        }
    }
    let Some((kind, attr_span, args)) = kind else {
        if let Some(w) = when {
            errors.error(
                w.span,
                format!("`#[when]` guards a handler: add `#[handler(state = \"...\")]` to `{}`", f.sig.ident),
            );
        }
        return None;
    };
    let fn_name = syn::ext::IdentExt::unraw(&f.sig.ident).to_string();
    let state = args.state.unwrap_or_else(|| Spanned::new(fn_name.clone(), f.sig.ident.span()));
    let end = attr::end_of(args.end, &state.value);
    let args_model = f
        .sig
        .inputs
        .iter()
        .filter_map(|arg| match arg {
            syn::FnArg::Typed(pt) => {
                let mut ty = (*pt.ty).clone();
                Unlifetime.visit_type_mut(&mut ty);
                let mutable = matches!(&*pt.ty, syn::Type::Reference(r) if r.mutability.is_some());
                Some(Arg { ty, mutable, span: pt.span(), ty_span: pt.ty.span() })
            }
            syn::FnArg::Receiver(_) => None,
        })
        .collect();
    let mut scanner = Scanner::new(errors);
    scanner.visit_block(&f.block);
    let Scanner { actions, stores, incomplete, .. } = scanner;
    Some(Handler {
        kind,
        attr_span,
        fn_ident: f.sig.ident.clone(),
        fn_name,
        sig: f.sig.clone(),
        state,
        start: args.start,
        end,
        when,
        args: args_model,
        actions,
        stores,
        incomplete,
    })
}

/// Replaces named lifetimes (other than `'static`) by `'_`, so an argument type can be written
/// in the generated extraction.
struct Unlifetime;

impl VisitMut for Unlifetime {
    fn visit_lifetime_mut(&mut self, l: &mut syn::Lifetime) {
        if l.ident != "static" && l.ident != "_" {
            *l = syn::Lifetime::new("'_", l.span());
        }
    }
    // Lifetimes bound by `for<'a>` stay as they are.
    fn visit_type_bare_fn_mut(&mut self, _: &mut syn::TypeBareFn) {}
    fn visit_trait_bound_mut(&mut self, b: &mut syn::TraitBound) {
        if b.lifetimes.is_none() {
            syn::visit_mut::visit_trait_bound_mut(self, b);
        }
    }
}

const DIVERGING_MACROS: &[&str] = &["panic", "unreachable", "todo", "unimplemented"];

fn is_diverging_macro(m: &syn::Macro) -> bool {
    m.path.segments.last().is_some_and(|s| DIVERGING_MACROS.iter().any(|d| s.ident == d))
}

/// A statement after which the handler run is over (`return ...;`, `panic!(..)`).
fn diverges(stmt: &syn::Stmt) -> bool {
    match stmt {
        syn::Stmt::Expr(Expr::Return(_), _) => true,
        syn::Stmt::Expr(Expr::Macro(m), _) => is_diverging_macro(&m.mac),
        syn::Stmt::Macro(m) => is_diverging_macro(&m.mac),
        _ => false,
    }
}

fn lit_str(expr: &Expr) -> Option<&syn::LitStr> {
    match expr {
        Expr::Lit(syn::ExprLit { lit: Lit::Str(s), .. }) => Some(s),
        Expr::Group(g) => lit_str(&g.expr),
        _ => None,
    }
}

const NOT_LITERAL: &str = "the graph would be incomplete; use a string literal";

/// Walks a handler body: actions, edges, data store names, and where each action sits in the
/// control flow (so exclusive branches are not mistaken for a parallel fan-out).
struct Scanner<'e> {
    errors: &'e mut Errors,
    actions: Vec<Action>,
    stores: Vec<Spanned<String>>,
    incomplete: bool,
    path: Vec<Step>,
    next_block: usize,
    next_node: usize,
    /// Inside a closure, async block or nested fn: `return` does not end the handler run.
    nested: usize,
}

impl<'e> Scanner<'e> {
    fn new(errors: &'e mut Errors) -> Self {
        Scanner {
            errors,
            actions: Vec::new(),
            stores: Vec::new(),
            incomplete: false,
            path: Vec::new(),
            next_block: 0,
            next_node: 0,
            nested: 0,
        }
    }

    fn node(&mut self) -> usize {
        self.next_node += 1;
        self.next_node
    }

    fn in_branch(&mut self, node: usize, arm: usize, f: impl FnOnce(&mut Self)) {
        self.path.push(Step::Branch { node, arm });
        f(self);
        self.path.pop();
    }

    fn not_literal(&mut self, span: Span, what: &str) {
        self.incomplete = true;
        self.errors.error(span, format!("{what} is not a string literal: {NOT_LITERAL}"));
    }

    fn action(&mut self, kind: ActionKind, call: &ExprMethodCall) -> usize {
        self.actions.push(Action { kind, span: call.method.span(), edges: Vec::new(), path: self.path.clone() });
        self.actions.len() - 1
    }

    fn chain_call(&mut self, call: &ExprMethodCall, current: &mut Option<usize>) {
        let method = call.method.to_string();
        match method.as_str() {
            "transition_to" => {
                let a = self.action(ActionKind::Transition, call);
                *current = Some(a);
                if let Some(arg) = call.args.first() {
                    match lit_str(arg) {
                        Some(s) => self.actions[a].edges.push(Edge {
                            kind: EdgeKind::Transition,
                            label: String::new(),
                            target: Spanned::new(s.value(), s.span()),
                            method: "transition_to",
                        }),
                        None => self.not_literal(arg.span(), "the target of `transition_to`"),
                    }
                }
            }
            "dispatch_task" => *current = Some(self.action(ActionKind::Dispatch, call)),
            "await_human_approval" => *current = Some(self.action(ActionKind::Approval, call)),
            "run_blueprint" => *current = Some(self.action(ActionKind::SubBlueprint, call)),
            "transitions" | "event_transitions" => {
                let event = method == "event_transitions";
                let Some(a) = *current else {
                    self.incomplete = true;
                    self.errors.error(
                        call.method.span(),
                        format!(
                            "cannot tell which action `.{method}(..)` belongs to: chain it directly on `dispatch_task(..)`, `await_human_approval()` or `run_blueprint(..)` ({NOT_LITERAL}s and one chain)"
                        ),
                    );
                    return;
                };
                let kind = match (self.actions[a].kind, event) {
                    (ActionKind::Dispatch, false) => EdgeKind::Dispatch,
                    (ActionKind::Dispatch, true) => EdgeKind::Event,
                    (ActionKind::Approval, false) => EdgeKind::Approval,
                    (ActionKind::SubBlueprint, false) => EdgeKind::SubBlueprint,
                    // No such method on that builder: rustc reports it.
                    _ => return,
                };
                let method: &'static str = if event { "event_transitions" } else { "transitions" };
                let edges = self.pairs(call, kind, method);
                self.actions[a].edges.extend(edges);
            }
            "store" => {
                if call.args.len() == 1 {
                    if let Some(s) = call.args.first().and_then(lit_str) {
                        self.stores.push(Spanned::new(s.value(), s.span()));
                    }
                }
            }
            _ => {}
        }
    }

    /// `[("status", "state"), ...]`
    fn pairs(&mut self, call: &ExprMethodCall, kind: EdgeKind, method: &'static str) -> Vec<Edge> {
        let mut edges: Vec<Edge> = Vec::new();
        let Some(arg) = call.args.first() else { return edges };
        let what = if kind == EdgeKind::Event { "event" } else { "status" };
        let Expr::Array(array) = arg else {
            self.incomplete = true;
            self.errors.error(
                arg.span(),
                format!(
                    "`{method}` takes an array literal of `(\"{what}\", \"state\")` pairs, e.g. `[(\"success\", \"done\"), (\"failure\", \"failed\")]`: {NOT_LITERAL}s"
                ),
            );
            return edges;
        };
        for elem in &array.elems {
            let pair = match elem {
                Expr::Tuple(t) if t.elems.len() == 2 => (&t.elems[0], &t.elems[1]),
                other => {
                    self.incomplete = true;
                    self.errors.error(other.span(), format!("expected a `(\"{what}\", \"state\")` pair"));
                    continue;
                }
            };
            let label = lit_str(pair.0);
            let target = lit_str(pair.1);
            if label.is_none() {
                self.not_literal(pair.0.span(), &format!("the {what} in `{method}`"));
            }
            if target.is_none() {
                self.not_literal(pair.1.span(), &format!("the target state in `{method}`"));
            }
            let (Some(label), Some(target)) = (label, target) else { continue };
            if edges.iter().any(|e| e.label == label.value()) {
                self.errors.error(label.span(), format!("duplicate {what} `{}` in `{method}`", label.value()));
                continue;
            }
            edges.push(Edge { kind, label: label.value(), target: Spanned::new(target.value(), target.span()), method });
        }
        edges
    }
}

impl<'ast> Visit<'ast> for Scanner<'_> {
    fn visit_block(&mut self, b: &'ast syn::Block) {
        let block = self.next_block;
        self.next_block += 1;
        let last_exit = if self.nested == 0 { b.stmts.iter().rposition(diverges) } else { None };
        for (index, stmt) in b.stmts.iter().enumerate() {
            self.path.push(Step::Stmt { block, index, diverges: last_exit.is_some_and(|j| j >= index) });
            self.visit_stmt(stmt);
            self.path.pop();
        }
    }

    fn visit_expr_if(&mut self, e: &'ast syn::ExprIf) {
        self.visit_expr(&e.cond);
        let node = self.node();
        self.in_branch(node, 0, |s| s.visit_block(&e.then_branch));
        if let Some((_, else_branch)) = &e.else_branch {
            self.in_branch(node, 1, |s| s.visit_expr(else_branch));
        }
    }

    fn visit_expr_match(&mut self, e: &'ast syn::ExprMatch) {
        self.visit_expr(&e.expr);
        let node = self.node();
        for (arm_index, arm) in e.arms.iter().enumerate() {
            self.in_branch(node, arm_index, |s| {
                if let Some((_, guard)) = &arm.guard {
                    s.visit_expr(guard);
                }
                s.visit_expr(&arm.body);
            });
        }
    }

    fn visit_local(&mut self, l: &'ast syn::Local) {
        let Some(init) = &l.init else { return };
        self.visit_expr(&init.expr);
        if let Some((_, diverge)) = &init.diverge {
            let node = self.node();
            self.in_branch(node, 1, |s| s.visit_expr(diverge));
        }
    }

    fn visit_expr_closure(&mut self, e: &'ast syn::ExprClosure) {
        self.nested += 1;
        syn::visit::visit_expr_closure(self, e);
        self.nested -= 1;
    }

    fn visit_expr_async(&mut self, e: &'ast syn::ExprAsync) {
        self.nested += 1;
        syn::visit::visit_expr_async(self, e);
        self.nested -= 1;
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        self.nested += 1;
        syn::visit::visit_item_fn(self, f);
        self.nested -= 1;
    }

    fn visit_expr_method_call(&mut self, call: &'ast ExprMethodCall) {
        // The whole chain `base.head(..).b(..).c(..)`, processed head first (source order).
        let mut chain = vec![call];
        let mut base: &Expr = &call.receiver;
        loop {
            match base {
                Expr::MethodCall(m) => {
                    chain.push(m);
                    base = &m.receiver;
                }
                Expr::Paren(p) if matches!(&*p.expr, Expr::MethodCall(_)) => base = &p.expr,
                Expr::Group(g) => base = &g.expr,
                _ => break,
            }
        }
        self.visit_expr(base);
        let mut current = None;
        for call in chain.into_iter().rev() {
            self.chain_call(call, &mut current);
            for arg in &call.args {
                self.visit_expr(arg);
            }
        }
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        // Best effort: macros whose input is a list of expressions (`vec![..]`, `println!(..)`).
        if let Ok(exprs) = m.parse_body_with(Punctuated::<Expr, syn::Token![,]>::parse_terminated) {
            for e in &exprs {
                self.visit_expr(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse(item: TokenStream) -> (Option<Parsed>, Vec<String>) {
        let mut errors = Errors::new();
        let parsed = blueprint(quote!(name = "t"), Span::call_site(), item, &mut errors);
        let msgs = errors.combined().map(|e| e.into_iter().map(|e| e.to_string()).collect()).unwrap_or_default();
        (parsed, msgs)
    }

    #[test]
    fn edges_in_source_order() {
        let (p, errs) = parse(quote! {
            mod m {
                #[handler(state = "a", start)]
                async fn a(actions: &mut Actions) {
                    actions.dispatch_task("x").params(1).transitions([("success", "b"), ("failure", "c")]).event_transitions([("progress", "d")]);
                }
            }
        });
        assert!(errs.is_empty(), "{errs:?}");
        let m = p.unwrap().model;
        let e: Vec<(String, String, EdgeKind)> =
            m.edges().map(|(_, e)| (e.label.clone(), e.target.value.clone(), e.kind)).collect();
        assert_eq!(
            e,
            vec![
                ("success".into(), "b".into(), EdgeKind::Dispatch),
                ("failure".into(), "c".into(), EdgeKind::Dispatch),
                ("progress".into(), "d".into(), EdgeKind::Event),
            ]
        );
    }

    #[test]
    fn branches_are_exclusive() {
        let (p, errs) = parse(quote! {
            mod m {
                #[handler(start)]
                async fn a(ctx: &Context, actions: &mut Actions) {
                    if x {
                        actions.dispatch_task("p").transitions([("success", "f")]);
                    } else if y {
                        actions.dispatch_task("q").transitions([("success", "f")]);
                    } else {
                        actions.transition_to("g");
                    }
                    if z {
                        actions.transition_to("h");
                        return;
                    }
                    match k {
                        1 => { actions.dispatch_task("r"); }
                        _ => { actions.dispatch_task("s"); actions.dispatch_task("t"); }
                    }
                }
            }
        });
        assert!(errs.is_empty(), "{errs:?}");
        let acts = &p.unwrap().model.handlers[0].actions;
        assert_eq!(acts.len(), 7);
        assert!(!acts[0].may_run_with(&acts[1]));
        assert!(!acts[0].may_run_with(&acts[2]));
        assert!(!acts[1].may_run_with(&acts[2]));
        assert!(!acts[3].may_run_with(&acts[4]), "returns after");
        assert!(acts[0].may_run_with(&acts[4]));
        assert!(!acts[4].may_run_with(&acts[5]));
        assert!(acts[5].may_run_with(&acts[6]));
    }

    #[test]
    fn non_literals_are_errors() {
        let (p, errs) = parse(quote! {
            mod m {
                #[handler(start)]
                async fn a(actions: &mut Actions) {
                    let t = "x";
                    actions.transition_to(t);
                    actions.dispatch_task("x").transitions(vec![("a", "b")]);
                    actions.dispatch_task("x").transitions([("success", t), (s, "b"), ("a", "b", "c")]);
                    let b = actions.dispatch_task("y");
                    b.transitions([("success", "x")]);
                }
            }
        });
        assert_eq!(errs.len(), 6, "{errs:#?}");
        assert!(p.unwrap().model.handlers[0].incomplete);
    }

    #[test]
    fn helpers_stripped_and_misplaced() {
        let (p, errs) = parse(quote! {
            mod m {
                #[handler] struct S;
                #[when(ctx.x)] async fn lone() {}
                #[handler(start)] #[aggregator] async fn two() {}
                #[handler(end)] #[when(a)] #[when(b)] async fn three() {}
            }
        });
        assert_eq!(errs.len(), 4, "{errs:#?}");
        let p = p.unwrap();
        let text = quote::ToTokens::to_token_stream(&p.module).to_string();
        assert!(!text.contains("handler") && !text.contains("when"), "{text}");
        assert_eq!(p.model.handlers.len(), 2);
    }
}
