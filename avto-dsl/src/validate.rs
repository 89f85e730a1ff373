//! The compile-time checks: small named rules over the model, each pushing spanned errors into
//! one [`Errors`] accumulator. No rule stops the others, so one compile reports everything.

use std::collections::VecDeque;

use proc_macro2::Span;
use syn::spanned::Spanned as _;

use crate::errors::{did_you_mean, hint, list, Errors};
use crate::model::{Action, ActionKind, EdgeKind, Handler, HandlerKind, Model, Spanned, State, StateKind};

/// Runs every rule.
pub fn validate(model: &Model, errors: &mut Errors) {
    let states = model.states();
    blueprint_name(model, errors);
    api_version(model, errors);
    api_endpoint(model, errors);
    state_names(&states, errors);
    handler_signatures(model, errors);
    one_mut_argument(model, errors);
    conditions_on_handlers_only(model, errors);
    one_kind_per_state(model, &states, errors);
    one_aggregator_per_state(model, &states, errors);
    one_unconditional_handler_per_state(model, &states, errors);
    consistent_end_status(model, &states, errors);
    one_start_state(model, errors);
    some_end_state(model, &states, errors);
    end_states_take_no_action(model, &states, errors);
    outputs_from_end_handlers_only(model, &states, errors);
    known_targets(model, &states, errors);
    known_data_stores(model, errors);
    known_events(model, errors);
    parallel_dispatch_fans_into_one_aggregator(model, &states, errors);
    aggregators_are_fanned_into(model, &states, errors);
    graph_is_complete(model, &states, errors);
}

fn is_name(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

const NAME_RULE: &str = "1 to 128 characters of `A-Z`, `a-z`, `0-9`, `_` and `-`";

/// Why: the name becomes a URL segment, a Redis key part and a metric label, so it must be safe in all three.
fn blueprint_name(model: &Model, errors: &mut Errors) {
    if let Some(name) = &model.name {
        if !is_name(&name.value) {
            errors.error(name.span, format!("invalid blueprint name `{}`: use {NAME_RULE}", name.value));
        }
    }
}

/// Why: the version is a URL segment of every client route (`/{prefix}/{api_version}/...`).
fn api_version(model: &Model, errors: &mut Errors) {
    if let Some(v) = &model.api_version {
        if !is_name(&v.value) {
            errors.error(v.span, format!("invalid `api_version` `{}`: use {NAME_RULE}, e.g. `v1`", v.value));
        }
    }
}

/// A relative URL path: `jobs/my_flow` or `/jobs/my_flow`.
pub fn is_endpoint(s: &str) -> bool {
    let path = s.strip_prefix('/').unwrap_or(s);
    s.len() <= 256
        && !path.is_empty()
        && path
            .split('/')
            .all(|seg| !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
}

/// Why: the endpoint is mounted as an axum route; `..`, empty segments or a query would mount a different route than written.
fn api_endpoint(model: &Model, errors: &mut Errors) {
    if let Some(e) = &model.api_endpoint {
        if !is_endpoint(&e.value) {
            errors.error(
                e.span,
                format!(
                    "invalid `api_endpoint` `{}`: use a relative URL path of `/`-separated segments of `A-Z`, `a-z`, `0-9`, `_` and `-`, e.g. `jobs/my_flow` (no `..`, empty segments or query)",
                    e.value
                ),
            );
        }
    }
}

/// Why: state names are stored in jobs, sent to workers and drawn in DOT; `__` is kept for the macro's own names.
fn state_names(states: &[State], errors: &mut Errors) {
    for s in states {
        if !is_name(&s.name) {
            errors.error(s.span, format!("invalid state name `{}`: use {NAME_RULE}", s.name));
        } else if s.name.starts_with("__") {
            errors.error(s.span, format!("state names starting with `__` are reserved: `{}`", s.name));
        }
    }
}

/// Why: the generated table calls each handler as a plain `async fn` with concrete arguments; anything else cannot be called from it.
fn handler_signatures(model: &Model, errors: &mut Errors) {
    for h in &model.handlers {
        let sig = &h.sig;
        let name = &h.fn_name;
        if sig.asyncness.is_none() {
            errors.error(
                sig.fn_token.span,
                format!("handler `{name}` must be an `async fn`: write `async fn {name}(...)`"),
            );
        }
        if let Some(c) = &sig.constness {
            errors.error(c.span, format!("handler `{name}` cannot be `const`"));
        }
        if let Some(u) = &sig.unsafety {
            errors.error(u.span, format!("handler `{name}` cannot be `unsafe`"));
        }
        if let Some(abi) = &sig.abi {
            errors.error(abi.extern_token.span, format!("handler `{name}` cannot have an `extern` ABI"));
        }
        for p in &sig.generics.params {
            if !matches!(p, syn::GenericParam::Lifetime(_)) {
                errors.error(
                    p.span(),
                    format!("handler `{name}` cannot be generic: the blueprint calls it with concrete argument types"),
                );
            }
        }
        for arg in &sig.inputs {
            // A `self` receiver or a C-variadic argument is rejected by rustc itself, on the token,
            // for any free function: reporting it again would only duplicate the error (see `rustc_rejects`).
            if let syn::FnArg::Typed(pt) = arg {
                if let Some(span) = impl_trait(&pt.ty) {
                    errors.error(
                        span,
                        format!("handler `{name}` cannot take `impl Trait` arguments: name the argument's type"),
                    );
                }
            }
        }
    }
}

/// Handler signatures that rustc rejects on its own in a module (`self` receiver, C-variadic):
/// the blueprint must not expand (no call of a function that cannot exist), but rustc's own
/// error is the one the user sees.
pub fn rustc_rejects(model: &Model) -> bool {
    model.handlers.iter().any(|h| h.sig.receiver().is_some() || h.sig.variadic.is_some())
}

/// Whether the macro can call the handler (no signature error): `expand` generates the argument
/// extraction of such handlers even when the blueprint has other errors.
pub fn signature_ok(h: &Handler) -> bool {
    let sig = &h.sig;
    sig.asyncness.is_some()
        && sig.constness.is_none()
        && sig.unsafety.is_none()
        && sig.abi.is_none()
        && sig.variadic.is_none()
        && sig.generics.params.iter().all(|p| matches!(p, syn::GenericParam::Lifetime(_)))
        && sig.inputs.iter().all(|a| matches!(a, syn::FnArg::Typed(pt) if impl_trait(&pt.ty).is_none()))
        && h.args.iter().filter(|a| a.mutable).count() <= 1
}

/// The span of an `impl Trait` inside a type, if any.
fn impl_trait(ty: &syn::Type) -> Option<Span> {
    struct Find(Option<Span>);
    impl<'a> syn::visit::Visit<'a> for Find {
        fn visit_type_impl_trait(&mut self, t: &'a syn::TypeImplTrait) {
            self.0.get_or_insert(t.impl_token.span);
        }
    }
    let mut f = Find(None);
    syn::visit::Visit::visit_type(&mut f, ty);
    f.0
}

/// Why: the engine lends one `&mut Actions` per run; a second `&mut` argument could never be supplied.
fn one_mut_argument(model: &Model, errors: &mut Errors) {
    for h in &model.handlers {
        for arg in h.args.iter().filter(|a| a.mutable).skip(1) {
            errors.error(
                arg.span,
                format!(
                    "handler `{}` takes a second `&mut` argument: a handler takes at most one, `&mut Actions`",
                    h.fn_name
                ),
            );
        }
    }
}

/// Why: an aggregator runs exactly once when every branch is done; a guard that said no would strand the job.
fn conditions_on_handlers_only(model: &Model, errors: &mut Errors) {
    for h in &model.handlers {
        if let (HandlerKind::Aggregator, Some(w)) = (h.kind, &h.when) {
            errors.error(
                w.span,
                format!(
                    "`#[when]` cannot guard an `#[aggregator]`: aggregator `{}` runs once every parallel branch is done",
                    h.fn_name
                ),
            );
        }
    }
}

/// Why: a state either runs handlers or waits for parallel branches; mixing both has no single meaning when a job enters it.
fn one_kind_per_state(model: &Model, states: &[State], errors: &mut Errors) {
    for s in states {
        let first = &model.handlers[s.handlers[0]];
        for &i in &s.handlers[1..] {
            let h = &model.handlers[i];
            if h.kind != first.kind {
                errors.error(
                    h.state.span,
                    format!(
                        "state `{}` is already declared by {} `{}`; a state has either `#[handler]`s or one `#[aggregator]`",
                        s.name,
                        match first.kind {
                            HandlerKind::Handler => "handler",
                            HandlerKind::Aggregator => "aggregator",
                        },
                        first.fn_name
                    ),
                );
            }
        }
    }
}

/// Why: the branches' results are handed to one aggregator; with two, which one runs would be arbitrary.
fn one_aggregator_per_state(model: &Model, states: &[State], errors: &mut Errors) {
    for s in states {
        let mut aggs = s.handlers.iter().map(|&i| &model.handlers[i]).filter(|h| h.kind == HandlerKind::Aggregator);
        let Some(first) = aggs.next() else { continue };
        for h in aggs {
            errors.error(
                h.state.span,
                format!(
                    "state `{}` already has the aggregator `{}`; a state has one aggregator",
                    s.name, first.fn_name
                ),
            );
        }
    }
}

/// Why: guards are tried in order and the unguarded handler is the fallback; two fallbacks would make one unreachable.
fn one_unconditional_handler_per_state(model: &Model, states: &[State], errors: &mut Errors) {
    for s in states {
        let mut plain = s
            .handlers
            .iter()
            .map(|&i| &model.handlers[i])
            .filter(|h| h.kind == HandlerKind::Handler && h.when.is_none());
        let Some(first) = plain.next() else { continue };
        for h in plain {
            errors.error(
                h.state.span,
                format!(
                    "state `{}` already has the unconditional handler `{}`; guard one of them with `#[when(...)]` or give it its own state",
                    s.name, first.fn_name
                ),
            );
        }
    }
}

/// Why: a job that reaches an end state ends with one status (`finished`, `failed`, ...), whichever handler ran.
fn consistent_end_status(model: &Model, states: &[State], errors: &mut Errors) {
    for s in states {
        let StateKind::End(status) = s.kind else { continue };
        for &i in &s.handlers {
            let h = &model.handlers[i];
            if let Some(end) = h.end {
                if end.status != status {
                    let first = s
                        .handlers
                        .iter()
                        .map(|&i| &model.handlers[i])
                        .find(|h| h.end.is_some_and(|e| e.status == status))
                        .map_or("", |h| h.fn_name.as_str());
                    errors.error(
                        end.span,
                        format!(
                            "conflicting end status `{}`: handler `{first}` already made `{}` an end state with status `{}`; every handler of a state must agree",
                            end.status.as_str(),
                            s.name,
                            status.as_str()
                        ),
                    );
                }
            }
        }
    }
}

/// Why: a new job begins in one state; none or two leaves the engine nothing unambiguous to run first.
fn one_start_state(model: &Model, errors: &mut Errors) {
    let mut first: Option<&str> = None;
    for h in &model.handlers {
        let Some(span) = h.start else { continue };
        match first {
            None => first = Some(&h.state.value),
            Some(f) if f == h.state.value => {}
            Some(f) => errors.error(
                span,
                format!("second start state `{}` (first is `{f}`); a blueprint has one start state", h.state.value),
            ),
        }
    }
    if first.is_none() {
        errors.error(
            model.module.span(),
            format!(
                "blueprint `{}` has no start state; mark one handler `start`: `#[handler(state = \"...\", start)]`",
                model.name()
            ),
        );
    }
}

/// Why: without an end state no job could ever finish.
fn some_end_state(model: &Model, states: &[State], errors: &mut Errors) {
    if !states.iter().any(|s| matches!(s.kind, StateKind::End(_))) {
        errors.error(
            model.module.span(),
            format!(
                "blueprint `{}` has no end state; mark the final handlers `end`: `#[handler(state = \"finished\", end)]`",
                model.name()
            ),
        );
    }
}

/// Why: reaching an end state finishes the job, so a transition or dispatch there would be silently dropped.
fn end_states_take_no_action(model: &Model, states: &[State], errors: &mut Errors) {
    for s in states {
        if !matches!(s.kind, StateKind::End(_)) {
            continue;
        }
        for &i in &s.handlers {
            for a in &model.handlers[i].actions {
                errors.error(
                    a.span,
                    format!(
                        "end state `{}` must not call `{}`: reaching an end state finishes the job",
                        s.name,
                        a.kind.method()
                    ),
                );
            }
        }
    }
}

/// Why: the output is the job's result, and only reaching an end state makes one; an `Output`
/// returned on the way would be dropped.
fn outputs_from_end_handlers_only(model: &Model, states: &[State], errors: &mut Errors) {
    for s in states {
        if matches!(s.kind, StateKind::End(_)) {
            continue;
        }
        for &i in &s.handlers {
            let h = &model.handlers[i];
            if let (Some(_), syn::ReturnType::Type(_, ty)) = (h.output_type(), &h.sig.output) {
                errors.push(syn::Error::new_spanned(
                    ty,
                    format!(
                        "handler `{}` of state `{}` returns an `Output`, but only end handlers do: the output is the job's result, made when it reaches an end state; mark the state `end` or return `()`",
                        h.fn_name, s.name
                    ),
                ));
            }
        }
    }
}

fn state_names_of(states: &[State]) -> impl Iterator<Item = &str> {
    states.iter().map(|s| s.name.as_str())
}

/// Why: a typo in a target state would fail a job at run time; here it fails the build at the misspelt literal.
fn known_targets(model: &Model, states: &[State], errors: &mut Errors) {
    for (_, e) in model.edges() {
        let target = &e.target.value;
        if states.iter().any(|s| s.name == *target) {
            continue;
        }
        let help = match did_you_mean(target, state_names_of(states)) {
            Some(s) => format!("; did you mean `{s}`?"),
            None => {
                let names: Vec<&str> = state_names_of(states).collect();
                format!(" (states: {})", list(&names))
            }
        };
        errors.error(e.target.span, format!("unknown state `{target}` in `{}`{help}", e.method));
    }
}

/// Why: a store the blueprint does not declare has no initial values; a misspelt name would only fail at run time.
fn known_data_stores(model: &Model, errors: &mut Errors) {
    let declared: Vec<&str> = model.data_stores.iter().map(|d| d.name.value.as_str()).collect();
    for h in &model.handlers {
        for s in &h.stores {
            if declared.contains(&s.value.as_str()) {
                continue;
            }
            let help = if declared.is_empty() {
                format!("; declare it: `#[avto::blueprint(..., data_stores({}()))]`", s.value)
            } else {
                format!("{} (declared: {})", hint(&s.value, declared.iter().copied()), list(&declared))
            };
            errors.error(s.span, format!("unknown data store `{}`{help}", s.value));
        }
    }
}

/// Why: once a blueprint declares its events, a misspelt event type would only be refused at run
/// time (the job's handler then fails).
fn known_events(model: &Model, errors: &mut Errors) {
    let Some(events) = &model.events else { return };
    let declared: Vec<&str> = events.iter().map(|e| e.name.value.as_str()).collect();
    for h in &model.handlers {
        // `progress` is the protocol's own event type: always allowed.
        for e in h.events.iter().filter(|e| e.value != "progress") {
            if !declared.contains(&e.value.as_str()) {
                let help = if declared.is_empty() {
                    format!("; declare it: `#[avto::blueprint(..., events({} = PayloadType))]`", e.value)
                } else {
                    format!("{} (declared: {})", hint(&e.value, declared.iter().copied()), list(&declared))
                };
                errors.error(e.span, format!("undeclared event type `{}` in `send_event`{help}", e.value));
            }
        }
    }
}

/// The `success` target of a dispatch.
fn success(a: &Action) -> Option<&Spanned<String>> {
    a.edges.iter().find(|e| e.kind == EdgeKind::Dispatch && e.label == "success").map(|e| &e.target)
}

fn kind_of<'a>(states: &'a [State], name: &str) -> Option<&'a StateKind> {
    states.iter().find(|s| s.name == name).map(|s| &s.kind)
}

/// Why: parallel branches must meet in one aggregator; a branch that leads elsewhere would advance the job twice.
fn parallel_dispatch_fans_into_one_aggregator(model: &Model, states: &[State], errors: &mut Errors) {
    // A handler with a non-literal target (already an error) is skipped: its transitions are unknown.
    for h in model.handlers.iter().filter(|h| !h.incomplete) {
        let dispatches: Vec<_> = h.actions.iter().filter(|a| a.kind == ActionKind::Dispatch).collect();
        for (i, d) in dispatches.iter().enumerate() {
            let first = dispatches[..i].iter().find(|p| p.may_run_with(d));
            let later = dispatches[i + 1..].iter().any(|l| d.may_run_with(l));
            if first.is_none() && !later {
                continue;
            }
            let Some(target) = success(d) else {
                errors.error(
                    d.span,
                    "this `dispatch_task` runs in parallel with another one in the same handler, so it needs `.transitions([(\"success\", \"<aggregator state>\"), ...])` into the `#[aggregator]` where the branches meet",
                );
                continue;
            };
            match kind_of(states, &target.value) {
                None => {} // unknown state: already reported
                Some(StateKind::Aggregator) => {
                    let first_target = first.and_then(|f| success(f));
                    if let Some(ft) = first_target {
                        let first_is_agg = kind_of(states, &ft.value) == Some(&StateKind::Aggregator);
                        if first_is_agg && ft.value != target.value {
                            errors.error(
                                target.span,
                                format!(
                                    "parallel dispatches must all fan into one aggregator: this one leads to `{}`, the first one to `{}`",
                                    target.value, ft.value
                                ),
                            );
                        }
                    }
                }
                Some(_) => errors.error(
                    target.span,
                    format!(
                        "`{}` is not an `#[aggregator]` state: several `dispatch_task` calls in one handler run in parallel, so their `success` transitions must all lead to one `#[aggregator]`",
                        target.value
                    ),
                ),
            }
        }
    }
}

/// Why: an aggregator only runs when parallel branches meet in it; one nobody fans into would never run.
fn aggregators_are_fanned_into(model: &Model, states: &[State], errors: &mut Errors) {
    for s in states.iter().filter(|s| s.kind == StateKind::Aggregator) {
        let fanned = model
            .edges()
            .any(|(_, e)| e.kind == EdgeKind::Dispatch && e.label == "success" && e.target.value == s.name);
        if !fanned {
            errors.error(
                s.span,
                format!(
                    "aggregator `{}` is not the target of any parallel dispatch: point the `success` transitions of the parallel `dispatch_task` calls at it",
                    s.name
                ),
            );
        }
    }
}

/// Unreachable states and states from which no end state can be reached.
///
/// An unknown target counts as an edge to the state it most likely means (its "did you mean"),
/// and a state whose handler has a non-literal target may lead anywhere: neither mistake, already
/// reported, cascades into graph errors.
///
/// Why: a state nothing leads to is dead code, and one from which no end state is reachable
/// would leave its jobs running forever.
fn graph_is_complete(model: &Model, states: &[State], errors: &mut Errors) {
    let n = states.len();
    let index = |name: &str| states.iter().position(|s| s.name == name);
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut open = vec![false; n];
    for (si, s) in states.iter().enumerate() {
        for &hi in &s.handlers {
            let h = &model.handlers[hi];
            open[si] |= h.incomplete;
            for a in &h.actions {
                for e in &a.edges {
                    let to = index(&e.target.value)
                        .or_else(|| did_you_mean(&e.target.value, state_names_of(states)).and_then(index));
                    match to {
                        Some(t) => out[si].push(t),
                        None => open[si] = true,
                    }
                }
            }
        }
    }
    let bfs = |starts: Vec<usize>, adj: &Vec<Vec<usize>>| {
        let mut seen = vec![false; n];
        let mut queue: VecDeque<usize> = starts.into_iter().collect();
        for &s in &queue {
            seen[s] = true;
        }
        while let Some(s) = queue.pop_front() {
            for &t in &adj[s] {
                if !seen[t] {
                    seen[t] = true;
                    queue.push_back(t);
                }
            }
        }
        seen
    };

    // Reachable from the start state.
    let start = model.start().and_then(index);
    let reachable = start.map(|s| bfs(vec![s], &out));
    if let (Some(start), Some(reachable)) = (start, &reachable) {
        if !(0..n).any(|i| reachable[i] && open[i]) {
            for (i, s) in states.iter().enumerate() {
                // A second `start` state is already an error of its own.
                let marked_start = s.handlers.iter().any(|&h| model.handlers[h].start.is_some());
                if !reachable[i] && !marked_start {
                    errors.error(
                        s.span,
                        format!(
                            "state `{}` cannot be reached from start state `{}`: no `transition_to` or `transitions` target leads to it",
                            s.name, states[start].name
                        ),
                    );
                }
            }
        }
    }

    // Can reach an end state (or an open state, which may).
    let ends: Vec<usize> = (0..n).filter(|&i| matches!(states[i].kind, StateKind::End(_)) || open[i]).collect();
    if !states.iter().any(|s| matches!(s.kind, StateKind::End(_))) {
        return; // "no end state" is reported
    }
    let mut rev: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (from, targets) in out.iter().enumerate() {
        for &t in targets {
            rev[t].push(from);
        }
    }
    let finishing = bfs(ends, &rev);
    for (i, s) in states.iter().enumerate() {
        if finishing[i] || reachable.as_ref().is_some_and(|r| !r[i]) {
            continue;
        }
        let msg = if out[i].is_empty() {
            format!(
                "state `{}` is a dead end: its handler takes no action the blueprint can see; call `actions.transition_to(\"...\")` (or `dispatch_task(..).transitions([..])`, ...) with literal targets, or mark it `end`",
                s.name
            )
        } else {
            format!("from state `{}` no end state can be reached", s.name)
        };
        errors.error(s.span, msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proc_macro2::TokenStream;
    use quote::quote;

    fn check(attr: TokenStream, item: TokenStream) -> Vec<String> {
        let mut errors = Errors::new();
        let parsed = crate::parse::blueprint(attr, Span::call_site(), item, &mut errors).expect("a module");
        validate(&parsed.model, &mut errors);
        errors.combined().map(|e| e.into_iter().map(|e| e.to_string()).collect()).unwrap_or_default()
    }

    fn ok(item: TokenStream) {
        let errs = check(quote!(name = "t"), item);
        assert!(errs.is_empty(), "{errs:#?}");
    }

    #[test]
    fn linear_flow_is_valid() {
        ok(quote! {
            mod flow {
                #[handler(state = "start", start)]
                async fn start(actions: &mut Actions) { actions.transition_to("step_A"); }
                #[handler(state = "step_A")]
                async fn step_a(ctx: &Context, actions: &mut Actions) {
                    actions.dispatch_task("t").params(ctx.initial_data.clone())
                        .transitions([("success", "step_B"), ("failure", "failed")]);
                }
                #[handler(state = "step_B")]
                async fn step_b(actions: &mut Actions) { actions.transition_to("finished"); }
                #[handler(state = "finished", end)]
                async fn finished() {}
                #[handler(state = "failed", end)]
                async fn failed() {}
            }
        });
    }

    #[test]
    fn only_end_handlers_return_an_output() {
        ok(quote! {
            mod flow {
                #[handler(start)]
                async fn start(actions: &mut Actions) { actions.transition_to("finished"); }
                #[handler(end)]
                async fn finished() -> Result<avto::Output<Summary>, String> { todo!() }
            }
        });
        let errs = check(
            quote!(name = "t"),
            quote! {
                mod flow {
                    #[handler(start)]
                    async fn start(actions: &mut Actions) -> Output<u32> { actions.transition_to("finished"); Output(1) }
                    #[handler(end)]
                    async fn finished() -> Output<u32> { Output(2) }
                }
            },
        );
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(
            errs[0].contains("handler `start` of state `start` returns an `Output`, but only end handlers do"),
            "{errs:#?}"
        );
    }

    #[test]
    fn exclusive_dispatches_are_not_parallel() {
        ok(quote! {
            mod flow {
                #[handler(start)]
                async fn start(ctx: &Context, actions: &mut Actions) {
                    if ctx.client.plan == "premium" {
                        actions.dispatch_task("hq").transitions([("success", "finished")]);
                    } else if ctx.initial_data.is_null() {
                        actions.dispatch_task("std").transitions([("success", "finished")]);
                    } else {
                        actions.transition_to("failed").error_message("no");
                    }
                }
                #[handler(end)] async fn finished() {}
                #[handler(end)] async fn failed() {}
            }
        });
    }

    #[test]
    fn parallel_fan_out() {
        ok(quote! {
            mod flow {
                #[handler(start)]
                async fn start(actions: &mut Actions) {
                    actions.dispatch_task("a").transitions([("success", "agg"), ("failure", "failed")]);
                    actions.dispatch_task("b").transitions([("success", "agg"), ("failure", "failed")]);
                }
                #[aggregator]
                async fn agg(actions: &mut Actions) { actions.transition_to("end"); }
                #[handler(end)] async fn end() {}
                #[handler(end)] async fn failed() {}
            }
        });
        let errs = check(
            quote!(name = "t"),
            quote! {
                mod flow {
                    #[handler(start)]
                    async fn start(actions: &mut Actions) {
                        actions.dispatch_task("a").transitions([("success", "agg")]);
                        actions.dispatch_task("b").transitions([("success", "agg2")]);
                        actions.dispatch_task("c").transitions([("success", "end")]);
                        actions.dispatch_task("d");
                    }
                    #[aggregator] async fn agg(actions: &mut Actions) { actions.transition_to("end"); }
                    #[aggregator] async fn agg2(actions: &mut Actions) { actions.transition_to("end"); }
                    #[handler(end)] async fn end() {}
                }
            },
        );
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(errs[0].starts_with("parallel dispatches must all fan into one aggregator: this one leads to `agg2`"));
        assert!(errs[1].starts_with("`end` is not an `#[aggregator]` state"));
        assert!(errs[2].starts_with("this `dispatch_task` runs in parallel"));
    }

    #[test]
    fn graph_errors() {
        let errs = check(
            quote!(name = "t"),
            quote! {
                mod flow {
                    #[handler(start)]
                    async fn start(actions: &mut Actions) { actions.transition_to("step_BB"); }
                    #[handler] async fn step_B(actions: &mut Actions) { actions.transition_to("done"); }
                    #[handler] async fn orphan(actions: &mut Actions) { actions.transition_to("done"); }
                    #[handler] async fn loop_a(actions: &mut Actions) { actions.transition_to("loop_b"); }
                    #[handler] async fn loop_b(actions: &mut Actions) { actions.transition_to("loop_a"); }
                    #[handler(end)] async fn done(actions: &mut Actions) { actions.transition_to("start"); }
                }
            },
        );
        assert_eq!(
            errs,
            vec![
                "end state `done` must not call `transition_to`: reaching an end state finishes the job",
                "unknown state `step_BB` in `transition_to`; did you mean `step_B`?",
                "state `orphan` cannot be reached from start state `start`: no `transition_to` or `transitions` target leads to it",
                "state `loop_a` cannot be reached from start state `start`: no `transition_to` or `transitions` target leads to it",
                "state `loop_b` cannot be reached from start state `start`: no `transition_to` or `transitions` target leads to it",
            ]
        );
    }

    #[test]
    fn cannot_finish() {
        let errs = check(
            quote!(name = "t"),
            quote! {
                mod flow {
                    #[handler(start)]
                    async fn start(ctx: &Context, actions: &mut Actions) {
                        if ctx.x { actions.transition_to("loop_a"); } else { actions.transition_to("done"); }
                    }
                    #[handler] async fn loop_a(actions: &mut Actions) { actions.transition_to("loop_b"); }
                    #[handler] async fn loop_b(actions: &mut Actions) { actions.transition_to("loop_a"); }
                    #[handler(start)] async fn stuck() {}
                    #[handler(end)] async fn done() {}
                }
            },
        );
        assert_eq!(
            errs,
            vec![
                "second start state `stuck` (first is `start`); a blueprint has one start state",
                "from state `loop_a` no end state can be reached",
                "from state `loop_b` no end state can be reached",
            ]
        );
    }

    #[test]
    fn non_literal_targets_do_not_cascade() {
        let errs = check(
            quote!(name = "t"),
            quote! {
                mod flow {
                    #[handler(start)]
                    async fn start(actions: &mut Actions, t: &str) { actions.transition_to(t); }
                    #[handler(end)] async fn done() {}
                }
            },
        );
        assert_eq!(errs, vec!["the target of `transition_to` is not a string literal: the graph would be incomplete; use a string literal"]);
    }

    #[test]
    fn names_and_endpoints() {
        assert!(is_endpoint("jobs/simple_flow"));
        assert!(is_endpoint("/jobs/parallel_example"));
        assert!(!is_endpoint("jobs//x"));
        assert!(!is_endpoint("jobs/../x"));
        assert!(!is_endpoint("jobs/x?y=1"));
        assert!(!is_endpoint("jobs/x/"));
        assert!(!is_endpoint(""));
        assert!(!is_endpoint("/"));
        let errs = check(
            quote!(name = "bad name", api_version = "v/1", api_endpoint = "../x"),
            quote! { mod m { #[handler(start, end)] async fn only() {} } },
        );
        assert_eq!(errs.len(), 3, "{errs:#?}");
    }

    #[test]
    fn state_rules() {
        let errs = check(
            quote!(name = "t", data_stores(counter(n = 0))),
            quote! {
                mod m {
                    #[handler(start)]
                    async fn a(ctx: &Context, actions: &mut Actions) {
                        ctx.data_stores.store("countr");
                        actions.dispatch_task("x").transitions([("success", "agg")]);
                    }
                    #[aggregator] async fn agg(actions: &mut Actions) { actions.transition_to("done"); }
                    #[handler(state = "agg")] async fn agg_too(actions: &mut Actions) { actions.transition_to("done"); }
                    #[handler(end)] async fn done() {}
                    #[handler(state = "done", end = "failed")] #[when(ctx.x)] async fn done2() {}
                    #[handler(state = "done")] async fn done3() {}
                    #[aggregator] async fn lonely(actions: &mut Actions) { actions.transition_to("done"); }
                }
            },
        );
        assert_eq!(
            errs,
            vec![
                "state `agg` is already declared by aggregator `agg`; a state has either `#[handler]`s or one `#[aggregator]`",
                "state `done` already has the unconditional handler `done`; guard one of them with `#[when(...)]` or give it its own state",
                "conflicting end status `failed`: handler `done` already made `done` an end state with status `finished`; every handler of a state must agree",
                "unknown data store `countr`; did you mean `counter`? (declared: `counter`)",
                "aggregator `lonely` is not the target of any parallel dispatch: point the `success` transitions of the parallel `dispatch_task` calls at it",
                "state `lonely` cannot be reached from start state `a`: no `transition_to` or `transitions` target leads to it",
            ]
        );
    }

    #[test]
    fn sent_events_must_be_declared() {
        let errs = check(
            quote!(name = "t", events(warmed = Warmed)),
            quote! {
                mod m {
                    #[handler(start, end)]
                    async fn a(actions: &mut Actions, kind: &str) {
                        actions.send_event("warmd", ()).send_event("warmed", ()).send_event("progress", ());
                        actions.send_event(kind, ());
                    }
                }
            },
        );
        assert_eq!(
            errs,
            vec!["undeclared event type `warmd` in `send_event`; did you mean `warmed`? (declared: `warmed`)"]
        );
        // A blueprint that declares no events may send any type.
        ok(
            quote! { mod m { #[handler(start, end)] async fn a(actions: &mut Actions) { actions.send_event("x", ()); } } },
        );
    }

    #[test]
    fn only_data_stores_are_checked() {
        ok(quote! {
            mod m {
                #[handler(start, end)]
                async fn a(cache: &Cache, flag: &AtomicBool) {
                    cache.store("anything");
                    flag.store(true, Ordering::SeqCst);
                }
            }
        });
        let errs = check(
            quote!(name = "t"),
            quote! {
                mod m {
                    #[handler(start, end)]
                    async fn a(ctx: &Context, s: &avto::DataStores) {
                        ctx.data_stores.store("x");
                        s.store("y");
                    }
                }
            },
        );
        assert_eq!(errs.len(), 2, "{errs:#?}");
    }

    #[test]
    fn signatures() {
        let errs = check(
            quote!(name = "t"),
            quote! {
                mod m {
                    #[handler(start, end)]
                    fn a<T>(self, x: impl Fn(), a: &mut Actions, b: &mut Actions) {}
                }
            },
        );
        assert_eq!(
            errs,
            vec![
                "handler `a` must be an `async fn`: write `async fn a(...)`",
                "handler `a` cannot be generic: the blueprint calls it with concrete argument types",
                "handler `a` cannot take `impl Trait` arguments: name the argument's type",
                "handler `a` takes a second `&mut` argument: a handler takes at most one, `&mut Actions`",
            ]
        );
    }
}
