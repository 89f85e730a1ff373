//! Code generation from the validated model (the shape written out by hand in
//! `avto/tests/hand_expanded.rs`). Only absolute `::avto::__private::...` paths, or `__avto::...`
//! through the `use ::avto::__private as __avto;` the expansion adds; generated names
//! start with `__avto_`. On any error the output is the user's module (helper attributes
//! stripped) plus the errors and stub items, so rustc reports nothing else.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned as _;

use crate::errors::Errors;
use crate::model::{Handler, Model, StateKind};
use crate::parse::{self, Parsed};
use crate::{dot, validate};

/// `#[avto::blueprint(<attr>)] <item>`.
pub fn blueprint(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::new();
    let Some(parsed) = parse::blueprint(attr, Span::call_site(), item.clone(), &mut errors) else {
        // Not an inline module: the item as it was, plus the error.
        let mut out = errors.to_compile_errors();
        out.extend(item);
        return out;
    };
    validate::validate(&parsed.model, &mut errors);
    if errors.is_empty() && !validate::rustc_rejects(&parsed.model) {
        expand(&parsed)
    } else {
        errors.sort_by_position();
        expand_with_errors(&parsed, &errors)
    }
}

/// `#[handler]`, `#[aggregator]` or `#[when]` outside a blueprint module: an error on the
/// attribute, and the item unchanged.
pub fn stray_helper(name: &str, attr: TokenStream, item: TokenStream) -> TokenStream {
    let _ = attr;
    let msg = format!(
        "`#[{name}]` must be inside a `#[avto::blueprint]` module: put this function in `#[avto::blueprint(name = \"...\")] mod my_flow {{ ... }}`"
    );
    let mut out = quote_spanned!(Span::call_site()=> ::core::compile_error!(#msg););
    out.extend(item);
    out
}

fn call_ident(h: &Handler) -> syn::Ident {
    format_ident!("__avto_call_{}", h.fn_name)
}

fn state_types_ident(h: &Handler) -> syn::Ident {
    format_ident!("__avto_state_types_{}", h.fn_name)
}

/// Whether an argument of the handler may be a `State<T>`: any immutable one that is not a
/// reference (a type alias of `State<T>` is a path too; a reference never is one).
fn may_take_state(h: &Handler) -> bool {
    h.args.iter().any(|a| !a.mutable && !matches!(a.ty, syn::Type::Reference(_)))
}

/// What `HandlerSpec::state_types` names: the handler's own probe function, or the shared one
/// returning nothing.
fn state_types_path(h: &Handler) -> TokenStream {
    if may_take_state(h) {
        let ident = state_types_ident(h);
        quote!(#ident)
    } else {
        quote!(__avto::no_state_types)
    }
}

/// `fn __avto_state_types_<handler>()`: the `T` of each `State<T>` argument of the handler
/// (probed per argument type, so a type alias of `State<T>` counts too). None for a handler
/// none of whose arguments can be one ([`may_take_state`]).
fn state_types_fn(h: &Handler) -> TokenStream {
    if !may_take_state(h) {
        return TokenStream::new();
    }
    let ident = state_types_ident(h);
    let probes = h.args.iter().filter(|a| !a.mutable).map(|a| {
        let ty = &a.ty;
        quote!((&__avto::StateProbe::<#ty>::new()).state_type())
    });
    quote! {
        #[doc(hidden)]
        fn #ident() -> __avto::std::vec::Vec<__avto::StateType> {
            #[allow(unused_imports)]
            use __avto::{HasStateType as _, NoStateType as _};
            let all: __avto::std::vec::Vec<::core::option::Option<__avto::StateType>> =
                __avto::std::vec![#(#probes),*];
            all.into_iter().flatten().collect()
        }
    }
}

fn when_ident(h: &Handler) -> syn::Ident {
    format_ident!("__avto_when_{}", h.fn_name)
}

fn opt_str(s: &Option<crate::model::Spanned<String>>) -> TokenStream {
    match s {
        Some(s) => {
            let v = &s.value;
            quote!(::core::option::Option::Some(#v))
        }
        None => quote!(::core::option::Option::None),
    }
}

fn expand(parsed: &Parsed) -> TokenStream {
    let model = &parsed.model;
    let module = &parsed.module;
    let name = model.name();
    let dot = dot::render(model);
    let api_version = opt_str(&model.api_version);
    let api_endpoint = opt_str(&model.api_endpoint);
    let start = model.start().unwrap_or_default();
    let states = model.states().into_iter().map(|s| {
        let name = &s.name;
        let kind = match s.kind {
            StateKind::Normal => quote!(__avto::StateKind::Normal),
            StateKind::Aggregator => quote!(__avto::StateKind::Aggregator),
            StateKind::End(status) => {
                let v = format_ident!("{}", status.variant());
                quote!(__avto::StateKind::End(__avto::JobStatus::#v))
            }
        };
        quote!(__avto::StateSpec { name: #name, kind: #kind })
    });
    let handlers = model.handlers.iter().map(|h| {
        let state = &h.state.value;
        let name = &h.fn_name;
        let call = call_ident(h);
        let condition = match &h.when {
            Some(w) => {
                let source = &w.source;
                let eval = when_ident(h);
                quote!(::core::option::Option::Some(__avto::Condition { source: #source, eval: #eval }))
            }
            None => quote!(::core::option::Option::None),
        };
        let state_types = state_types_path(h);
        quote!(__avto::HandlerSpec {
            state: #state, name: #name, condition: #condition, call: #call, state_types: #state_types,
        })
    });
    let edges = model.edges().map(|(h, e)| {
        let from = &h.state.value;
        let to = &e.target.value;
        let label = &e.label;
        let kind = format_ident!("{}", e.kind.variant());
        let handler = &h.fn_name;
        quote!(__avto::EdgeSpec { from: #from, to: #to, label: #label, kind: __avto::EdgeKind::#kind, handler: #handler })
    });
    let stores = model.data_stores.iter().map(|d| {
        let name = &d.name.value;
        let initial = &d.initial;
        quote!(::avto::__private::DataStoreSpec { name: #name, initial: #initial })
    });
    // The input contract: every `InitialData<T>` a handler takes (see `SchemaProbe`).
    let mut inputs: Vec<&syn::Type> = Vec::new();
    for h in &model.handlers {
        for arg in h.args.iter().filter(|a| !a.mutable) {
            if let Some(t) = initial_data_type(&arg.ty) {
                if !inputs.iter().any(|seen| quote!(#seen).to_string() == quote!(#t).to_string()) {
                    inputs.push(t);
                }
            }
        }
    }
    let probes = inputs.iter().map(|t| quote!((&::avto::__private::SchemaProbe::<#t>::new()).input_schema()));
    // The output contract: the `Output<T>` each end handler returns (`validate` refuses it
    // elsewhere), per end state.
    let outputs = model.handlers.iter().filter_map(|h| {
        let t = h.output_type()?;
        let state = &h.state.value;
        Some(quote!((#state, (&::avto::__private::SchemaProbe::<#t>::new()).input_schema())))
    });
    // The events contract: `events(name = T)`, each T probed like the others.
    let (events, event_probes) = match &model.events {
        None => (quote!(::core::option::Option::None), Vec::new()),
        Some(decls) => {
            let names = decls.iter().map(|d| &d.name.value);
            let probes = decls
                .iter()
                .map(|d| {
                    let (name, t) = (&d.name.value, &d.ty);
                    quote!((#name, (&::avto::__private::SchemaProbe::<#t>::new()).input_schema()))
                })
                .collect();
            (quote!(::core::option::Option::Some(&[#(#names),*])), probes)
        }
    };
    // A contract function per kind of probe, or without probes the shared one returning nothing
    // (three functions fewer for most blueprints).
    let contract_fn =
        |ident: &str, ret: TokenStream, combine: TokenStream, probes: Vec<TokenStream>, none: TokenStream| {
            if probes.is_empty() {
                return (quote!(__avto::#none), TokenStream::new());
            }
            let ident = format_ident!("{ident}");
            let f = quote! {
                #[doc(hidden)]
                fn #ident() -> #ret {
                    #[allow(unused_imports)]
                    use ::avto::__private::{HasSchema as _, NoSchema as _};
                    ::avto::__private::#combine(::avto::__private::std::vec![#(#probes),*])
                }
            };
            (quote!(#ident), f)
        };
    let schemas = quote!(::avto::__private::std::vec::Vec<(&'static str, ::avto::__private::serde_json::Value)>);
    let (input_schema, input_schema_fn) = contract_fn(
        "__avto_input_schema",
        quote!(::core::option::Option<::avto::__private::serde_json::Value>),
        quote!(input_contract),
        probes.collect(),
        quote!(no_input_schema),
    );
    let (output_schemas, output_schemas_fn) = contract_fn(
        "__avto_output_schemas",
        schemas.clone(),
        quote!(output_contract),
        outputs.collect(),
        quote!(no_schemas),
    );
    let (events_schemas, events_schemas_fn) =
        contract_fn("__avto_events_schemas", schemas, quote!(output_contract), event_probes, quote!(no_schemas));
    let alias = private_alias();
    let generated = quote! {
        #alias
        /// The blueprint's name.
        pub const NAME: &str = #name;
        /// The blueprint's state graph as Graphviz DOT (what `cargo avto graph` prints).
        pub const DOT: &str = #dot;
        /// The compiled blueprint, for `Orchestrator::builder().blueprint(..)` or `TestRun::new(..)`.
        pub fn blueprint() -> ::avto::__private::Blueprint {
            ::avto::__private::Blueprint::from_spec(&__AVTO_SPEC)
        }
        #[doc(hidden)]
        pub static __AVTO_SPEC: ::avto::__private::BlueprintSpec = ::avto::__private::BlueprintSpec {
            name: #name,
            api_version: #api_version,
            api_endpoint: #api_endpoint,
            start: #start,
            states: &[#(#states),*],
            handlers: &[#(#handlers),*],
            edges: &[#(#edges),*],
            data_stores: &[#(#stores),*],
            dot: DOT,
            input_schema: #input_schema,
            output_schemas: #output_schemas,
            events: #events,
            events_schemas: #events_schemas,
        };
        #input_schema_fn
        #output_schemas_fn
        #events_schemas_fn
        ::avto::__private::inventory::submit! { ::avto::__private::Registration(&__AVTO_SPEC) }
    };
    let calls = model.handlers.iter().map(call_fn);
    let state_fns = model.handlers.iter().map(state_types_fn);
    let whens = model.handlers.iter().filter_map(when_fn);
    // The graph in the module's rustdoc (only when rustdoc runs the macro: see `doc_graph`).
    let doc = if crate::doc_graph::wanted() {
        let markdown = crate::doc_graph::markdown(name, &dot, model.states().len());
        quote!(#![doc = #markdown])
    } else {
        TokenStream::new()
    };
    with_items(module, quote!(#generated #(#calls)* #(#state_fns)* #(#whens)*), TokenStream::new(), doc)
}

/// The `T` of an argument typed `InitialData<T>` (any path ending in `InitialData`, e.g.
/// `avto::InitialData<T>`; a type alias is not seen through).
fn initial_data_type(ty: &syn::Type) -> Option<&syn::Type> {
    let syn::Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "InitialData" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else { return None };
    match args.args.first()? {
        syn::GenericArgument::Type(t) if args.args.len() == 1 => Some(t),
        _ => None,
    }
}

/// The user's module with `extra` appended to its items, `attrs` added to it and `inner` after
/// its inner attributes.
fn with_items(module: &syn::ItemMod, extra: TokenStream, attrs: TokenStream, inner_extra: TokenStream) -> TokenStream {
    let syn::ItemMod { attrs: user_attrs, vis, unsafety, mod_token, ident, content, .. } = module;
    let items = content.as_ref().map(|(_, items)| items.as_slice()).unwrap_or_default();
    let outer = user_attrs.iter().filter(|a| matches!(a.style, syn::AttrStyle::Outer));
    let inner = user_attrs.iter().filter(|a| matches!(a.style, syn::AttrStyle::Inner(_)));
    quote! {
        #(#outer)*
        #attrs
        #vis #unsafety #mod_token #ident {
            #(#inner)*
            #inner_extra
            #(#items)*
            #extra
        }
    }
}

/// `__avto_call_<fn>`: extracts every argument, calls the handler and hands its future to
/// `__private::run`, which converts its result, or, for a handler without a return type, to
/// `__private::run_unit` (nothing to convert: the box is all it adds). Not an `async` block: the
/// handler's own future is the only state machine per handler.
fn call_fn(h: &Handler) -> TokenStream {
    let fn_ident = &h.fn_ident;
    let call = call_ident(h);
    let mut lets = Vec::new();
    let mut vars = Vec::new();
    for (i, arg) in h.args.iter().enumerate() {
        let var = format_ident!("__avto_arg{}", i);
        let ty = &arg.ty;
        if let Some(half) = direct_arg(arg) {
            // `&Context` / `&mut Actions` as written: the half itself, typed, both spanned on the
            // type (a `Context` or `Actions` of another crate is a type mismatch there). Resolving
            // the traits below was about a million of rustc's instructions per handler.
            let ty = quote_spanned!(arg.ty_span=> #ty);
            let value = syn::Ident::new(half, arg.ty_span);
            lets.push(quote!(let #var: #ty = #value;));
            vars.push(var);
            continue;
        }
        let extract = if arg.mutable {
            quote_spanned!(arg.ty_span=> <#ty as __avto::FromActions<'_>>::from_actions(__avto_actions))
        } else {
            let from = quote_spanned!(arg.ty_span=> <#ty as __avto::FromContext<'_>>::from_context(__avto_ctx));
            quote!(match #from { ::core::result::Result::Ok(a) => a, ::core::result::Result::Err(e) => return __avto::fail(e) })
        };
        lets.push(quote!(let #var = #extract;));
        vars.push(var);
    }
    let ctx = if h.args.iter().any(|a| !a.mutable) { quote!(__avto_ctx) } else { quote!(_) };
    let actions = if h.args.iter().any(|a| a.mutable) { quote!(__avto_actions) } else { quote!(_) };
    let output_span = match &h.sig.output {
        syn::ReturnType::Type(_, ty) => ty.span(),
        syn::ReturnType::Default => h.fn_ident.span(),
    };
    let run = match &h.sig.output {
        // Nothing to convert: the handler's own future, boxed, is all this handler adds (the
        // `Send` check is `run_unit`'s bound, spanned like `assert_send`'s).
        syn::ReturnType::Default => quote_spanned!(h.fn_ident.span()=> __avto::run_unit(#fn_ident(#(#vars),*))),
        syn::ReturnType::Type(..) => {
            let future = quote_spanned!(h.fn_ident.span()=> __avto::assert_send(#fn_ident(#(#vars),*)));
            let convert = quote_spanned!(output_span=> |r| __avto::IntoHandlerResult::into_handler_result(r));
            quote!(__avto::run(#future, #convert))
        }
    };
    // The closure carries the user's span (errors on the return type), so clippy would ask for
    // the method path instead.
    quote! {
        #[doc(hidden)]
        #[allow(clippy::redundant_closure)]
        fn #call<'__avto>(__avto_inv: &'__avto mut __avto::Invocation) -> __avto::HandlerFuture<'__avto> {
            let (#ctx, #actions) = __avto_inv.split();
            #(#lets)*
            #run
        }
    }
}

/// The split invocation's half (`__avto_ctx`, `__avto_actions`) an argument written `&Context`
/// (immutable) or `&mut Actions` is bound to directly, instead of through `FromContext` /
/// `FromActions`; `None` for any other type. Read from the syntax: the type's last path
/// segment, without generic arguments.
fn direct_arg(arg: &crate::model::Arg) -> Option<&'static str> {
    let syn::Type::Reference(r) = &arg.ty else { return None };
    let syn::Type::Path(p) = &*r.elem else { return None };
    if p.qself.is_some() {
        return None;
    }
    let last = p.path.segments.last()?;
    if !matches!(last.arguments, syn::PathArguments::None) {
        return None;
    }
    match (arg.mutable, r.mutability.is_some()) {
        (false, false) if last.ident == "Context" => Some("__avto_ctx"),
        (true, true) if last.ident == "Actions" => Some("__avto_actions"),
        _ => None,
    }
}

/// The path generated code names `::avto::__private` by (a `use` of the module: shorter
/// paths, fewer tokens to make and to parse per state).
fn private_alias() -> TokenStream {
    quote! {
        #[doc(hidden)]
        #[allow(unused_imports)]
        use ::avto::__private as __avto;
    }
}

/// `__avto_when_<fn>`: the `#[when(...)]` condition as a function of `ctx`.
fn when_fn(h: &Handler) -> Option<TokenStream> {
    let w = h.when.as_ref()?;
    let ident = when_ident(h);
    let expr = &w.expr;
    // A non-`bool` condition: "expected `bool` because of return type" points at `when`.
    let bool_ty = quote_spanned!(w.span=> bool);
    Some(quote! {
        #[doc(hidden)]
        #[allow(unused_variables)]
        fn #ident(ctx: &::avto::__private::Context) -> #bool_ty {
            #expr
        }
    })
}

/// The module, the errors and stubs (`NAME`, `DOT`, `blueprint()`), plus the argument
/// extraction of every handler whose signature is fine, so argument errors show up in the same
/// compile.
fn expand_with_errors(parsed: &Parsed, errors: &Errors) -> TokenStream {
    let model: &Model = &parsed.model;
    let name = model.name();
    let panic_msg = format!("blueprint `{name}` did not compile");
    let calls = model.handlers.iter().filter(|h| validate::signature_ok(h)).map(call_fn);
    let whens = model.handlers.iter().filter_map(when_fn);
    // Stubs for what code outside the module may name; none that the user's module already
    // defines (that clash is an error of its own).
    let defined = |n: &str| {
        parsed.module.content.as_ref().is_some_and(|(_, items)| {
            items.iter().any(|i| parse::item_ident(i).is_some_and(|id| syn::ext::IdentExt::unraw(id) == n))
        })
    };
    let mut stubs = TokenStream::new();
    if !defined("NAME") {
        stubs.extend(quote! {
            /// The blueprint's name.
            pub const NAME: &str = #name;
        });
    }
    if !defined("DOT") {
        stubs.extend(quote! {
            /// The blueprint's state graph (empty: the blueprint has errors).
            pub const DOT: &str = "";
        });
    }
    if !defined("blueprint") {
        stubs.extend(quote! {
            /// The blueprint has compile errors.
            pub fn blueprint() -> ::avto::__private::Blueprint {
                ::core::panic!(#panic_msg)
            }
        });
    }
    stubs.extend(private_alias());
    stubs.extend(quote!(#(#calls)* #(#whens)*));
    let mut out = errors.to_compile_errors();
    out.extend(with_items(&parsed.module, stubs, quote!(#[allow(dead_code)]), TokenStream::new()));
    out
}
