//! The blueprint model: what `parse` builds out of the user's module and what `validate`,
//! `expand` and `dot` work on. Every node keeps the span of the token it came from, so errors
//! point at the offending literal or flag. Collections are `Vec`s in source order.

use proc_macro2::{Span, TokenStream};

/// A value and the span of the token it came from.
#[derive(Debug, Clone)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Self {
        Spanned { value, span }
    }
}

/// One `#[avto::blueprint]` module.
#[derive(Debug)]
pub struct Model {
    /// The module's identifier.
    pub module: syn::Ident,
    /// `name = "..."` (`None` when missing: already an error).
    pub name: Option<Spanned<String>>,
    pub api_version: Option<Spanned<String>>,
    pub api_endpoint: Option<Spanned<String>>,
    pub data_stores: Vec<DataStore>,
    /// `events(...)`: the declared event types (`None`: undeclared, any type may be sent).
    pub events: Option<Vec<EventDecl>>,
    /// Handlers and aggregators, in source order.
    pub handlers: Vec<Handler>,
}

/// `data_stores(name(key = value, ...))`.
#[derive(Debug, Clone)]
pub struct DataStore {
    pub name: Spanned<String>,
    /// The initial contents as JSON object text, keys in source order.
    pub initial: String,
}

/// `events(name = Type)`: an event type the handlers send, with its payload's type.
#[derive(Debug, Clone)]
pub struct EventDecl {
    pub name: Spanned<String>,
    pub ty: syn::Type,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerKind {
    /// `#[handler]`
    Handler,
    /// `#[aggregator]`
    Aggregator,
}

impl HandlerKind {
    pub fn attr(self) -> &'static str {
        match self {
            HandlerKind::Handler => "handler",
            HandlerKind::Aggregator => "aggregator",
        }
    }
}

/// The job status an end state means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndStatus {
    Finished,
    Failed,
    Cancelled,
    Quarantined,
}

impl EndStatus {
    pub const ALL: [EndStatus; 4] =
        [EndStatus::Finished, EndStatus::Failed, EndStatus::Cancelled, EndStatus::Quarantined];

    pub fn as_str(self) -> &'static str {
        match self {
            EndStatus::Finished => "finished",
            EndStatus::Failed => "failed",
            EndStatus::Cancelled => "cancelled",
            EndStatus::Quarantined => "quarantined",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The status a bare `end` flag means for a state name: `failed` / `*_failed` -> failed,
    /// `cancelled` / `*_cancelled` -> cancelled, anything else -> finished.
    pub fn from_state_name(state: &str) -> Self {
        if state == "failed" || state.ends_with("_failed") {
            EndStatus::Failed
        } else if state == "cancelled" || state.ends_with("_cancelled") {
            EndStatus::Cancelled
        } else {
            EndStatus::Finished
        }
    }

    /// The `JobStatus` variant name.
    pub fn variant(self) -> &'static str {
        match self {
            EndStatus::Finished => "Finished",
            EndStatus::Failed => "Failed",
            EndStatus::Cancelled => "Cancelled",
            EndStatus::Quarantined => "Quarantined",
        }
    }
}

/// The `end` flag of a handler.
#[derive(Debug, Clone, Copy)]
pub struct End {
    pub status: EndStatus,
    /// The `end` key.
    pub span: Span,
}

/// A `#[when(...)]` guard.
#[derive(Debug, Clone)]
pub struct When {
    /// The expression tokens, as written.
    pub expr: TokenStream,
    /// Canonical source text (see `printer`), identical inside and outside proc macros.
    pub source: String,
    /// The `when` attribute.
    pub span: Span,
}

/// One handler argument.
#[derive(Debug, Clone)]
pub struct Arg {
    /// The argument's type with named lifetimes replaced by `'_`.
    pub ty: syn::Type,
    /// `&mut T` (injected from `Actions`).
    pub mutable: bool,
    /// The whole argument (`pattern: Type`).
    pub span: Span,
    /// The type.
    pub ty_span: Span,
}

/// One `#[handler]` or `#[aggregator]` function.
#[derive(Debug, Clone)]
pub struct Handler {
    pub kind: HandlerKind,
    /// The helper attribute (`handler` in `#[handler(...)]`).
    pub attr_span: Span,
    pub fn_ident: syn::Ident,
    /// The function name without `r#`.
    pub fn_name: String,
    /// The signature as written (checked by `validate`).
    pub sig: syn::Signature,
    /// The state; its span is the `state = "..."` literal, or the function name when defaulted.
    pub state: Spanned<String>,
    /// The `start` flag.
    pub start: Option<Span>,
    pub end: Option<End>,
    pub when: Option<When>,
    pub args: Vec<Arg>,
    /// What the handler body does, in source order.
    pub actions: Vec<Action>,
    /// `.store("name")` calls with a literal name.
    pub stores: Vec<Spanned<String>>,
    /// `send_event("...", ..)` calls with a literal event type.
    pub events: Vec<Spanned<String>>,
    /// Some target in the body is not a literal (already an error): the handler's edges are incomplete.
    pub incomplete: bool,
}

impl Handler {
    /// The `T` of a handler returning `Output<T>` or `Result<Output<T>, E>` (any path ending in
    /// `Output`; a type alias is not seen through).
    pub fn output_type(&self) -> Option<&syn::Type> {
        let syn::ReturnType::Type(_, ty) = &self.sig.output else { return None };
        let syn::Type::Path(p) = &**ty else { return None };
        let last = p.path.segments.last()?;
        fn first_arg(seg: &syn::PathSegment) -> Option<&syn::Type> {
            let syn::PathArguments::AngleBracketed(args) = &seg.arguments else { return None };
            match args.args.first()? {
                syn::GenericArgument::Type(t) => Some(t),
                _ => None,
            }
        }
        if last.ident == "Output" {
            return first_arg(last);
        }
        if last.ident == "Result" {
            let inner = first_arg(last)?;
            let syn::Type::Path(ip) = inner else { return None };
            let seg = ip.path.segments.last()?;
            if seg.ident == "Output" {
                return first_arg(seg);
            }
        }
        None
    }
}

/// What a handler can do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    Transition,
    Dispatch,
    Approval,
    SubBlueprint,
}

impl ActionKind {
    pub fn method(self) -> &'static str {
        match self {
            ActionKind::Transition => "transition_to",
            ActionKind::Dispatch => "dispatch_task",
            ActionKind::Approval => "await_human_approval",
            ActionKind::SubBlueprint => "run_blueprint",
        }
    }
}

/// One position in a handler body's control flow, from the outermost block inwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Statement `index` of block `block`; `diverges`: the block returns at or after this statement.
    Stmt { block: usize, index: usize, diverges: bool },
    /// Arm `arm` of the branching node `node` (`if`/`else`, `match`).
    Branch { node: usize, arm: usize },
}

/// One action call (`transition_to`, `dispatch_task`, `await_human_approval`, `run_blueprint`).
#[derive(Debug, Clone)]
pub struct Action {
    pub kind: ActionKind,
    /// The method name token.
    pub span: Span,
    pub edges: Vec<Edge>,
    /// Where in the body it is (see [`Action::may_run_with`]).
    pub path: Vec<Step>,
}

impl Action {
    /// Whether `self` and `later` (which comes after it in source order) can both run in one
    /// handler run: not when they sit in different arms of one `if`/`match`, nor when `self`'s
    /// block returns after it.
    pub fn may_run_with(&self, later: &Action) -> bool {
        let common = self.path.iter().zip(&later.path).take_while(|(a, b)| a == b).count();
        match (self.path.get(common), later.path.get(common)) {
            (Some(Step::Branch { node: a, .. }), Some(Step::Branch { node: b, .. })) if a == b => false,
            (Some(Step::Stmt { block: a, .. }), Some(Step::Stmt { block: b, .. })) if a == b => {
                !self.path[common..].iter().any(|s| matches!(s, Step::Stmt { diverges: true, .. }))
            }
            _ => true,
        }
    }
}

/// How an edge is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeKind {
    Transition,
    Dispatch,
    Event,
    Approval,
    SubBlueprint,
}

impl EdgeKind {
    pub fn variant(self) -> &'static str {
        match self {
            EdgeKind::Transition => "Transition",
            EdgeKind::Dispatch => "Dispatch",
            EdgeKind::Event => "Event",
            EdgeKind::Approval => "Approval",
            EdgeKind::SubBlueprint => "SubBlueprint",
        }
    }
}

/// One edge found in a handler body.
#[derive(Debug, Clone)]
pub struct Edge {
    pub kind: EdgeKind,
    /// Outcome label (`success`, `approved`, an event name), empty for `transition_to`.
    pub label: String,
    /// The target state literal.
    pub target: Spanned<String>,
    /// The method the target was given to (`transition_to`, `transitions`, `event_transitions`).
    pub method: &'static str,
}

/// What kind of state a state is (derived from its handlers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    Normal,
    End(EndStatus),
    Aggregator,
}

/// One state of the blueprint, derived from its handlers.
#[derive(Debug, Clone)]
pub struct State {
    pub name: String,
    pub kind: StateKind,
    /// The state literal (or function name) of its first handler.
    pub span: Span,
    /// Indices into `Model::handlers`, in source order.
    pub handlers: Vec<usize>,
}

impl Model {
    /// The blueprint name (empty when missing).
    pub fn name(&self) -> &str {
        self.name.as_ref().map_or("", |n| n.value.as_str())
    }

    /// States in declaration order (the order their first handler appears).
    pub fn states(&self) -> Vec<State> {
        let mut states: Vec<State> = Vec::new();
        for (i, h) in self.handlers.iter().enumerate() {
            let state = match states.iter_mut().find(|s| s.name == h.state.value) {
                Some(s) => s,
                None => {
                    states.push(State {
                        name: h.state.value.clone(),
                        kind: StateKind::Normal,
                        span: h.state.span,
                        handlers: Vec::new(),
                    });
                    states.last_mut().expect("just pushed")
                }
            };
            state.handlers.push(i);
            match (h.kind, h.end) {
                (HandlerKind::Aggregator, _) => state.kind = StateKind::Aggregator,
                (HandlerKind::Handler, Some(end)) if state.kind == StateKind::Normal => {
                    state.kind = StateKind::End(end.status)
                }
                _ => {}
            }
        }
        states
    }

    /// The start state: the state of the first handler marked `start`.
    pub fn start(&self) -> Option<&str> {
        self.handlers.iter().find(|h| h.start.is_some()).map(|h| h.state.value.as_str())
    }

    /// Every edge, with the handler it comes from, in source order.
    pub fn edges(&self) -> impl Iterator<Item = (&Handler, &Edge)> {
        self.handlers.iter().flat_map(|h| h.actions.iter().flat_map(move |a| a.edges.iter().map(move |e| (h, e))))
    }
}
