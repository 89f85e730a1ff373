//! `#[avto::task]`: declares a worker task function, collected by `avto::worker::run()`.
//!
//! ```ignore
//! /// Process a long video.
//! #[avto::task("long_video_processing")]
//! async fn process(params: Video, task: TaskHandle) -> TaskOutcome { ... }
//! ```
//! The skill name is the string (default: the function name); the doc comment becomes the
//! skill's description. The function takes `(params)` or `(params, task)` (or nothing) and
//! returns anything `IntoTaskOutcome` accepts. When the params type implements
//! `schemars::JsonSchema` (and describes an object), its schema is the skill's `input_schema`;
//! when the function returns `Result<T, E>` with such a `T`, T's schema is its `output_schema`.
//!
//! `#[avto::task(contract = Resize)]` implements the `TaskContract` `Resize`: the skill name and
//! both schemas come from it, and the function must take `Resize::Params` and return
//! `Result<Resize::Output, E>` (a compile error otherwise).

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ItemFn, Lit, Meta, Token};

/// Expands `#[avto::task(...)]`.
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand(attr, item.clone()) {
        Ok(ts) => ts,
        Err(e) => {
            let mut out = e.to_compile_error();
            out.extend(item);
            out
        }
    }
}

fn valid_name(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let func: ItemFn = syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            "#[avto::task] goes on an `async fn` taking `(params)` or `(params, task: TaskHandle)`",
        )
    })?;
    let mut name: Option<(String, Span)> = None;
    let mut version: Option<String> = None;
    let mut contract: Option<syn::Path> = None;
    let mut errors: Option<syn::Error> = None;
    let mut push = |e: syn::Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };
    if !attr.is_empty() {
        if let Ok(lit) = syn::parse2::<syn::LitStr>(attr.clone()) {
            name = Some((lit.value(), lit.span()));
        } else {
            let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr)?;
            for meta in metas {
                let Meta::NameValue(nv) = &meta else {
                    push(syn::Error::new(
                        meta.span(),
                        "expected `\"skill_name\"` or `name = \"..\"`, `version = \"..\"`, `contract = Type`",
                    ));
                    continue;
                };
                if nv.path.is_ident("contract") {
                    match (&nv.value, &contract) {
                        (_, Some(_)) => push(syn::Error::new(nv.path.span(), "duplicate key `contract`")),
                        (Expr::Path(p), None) if p.qself.is_none() => contract = Some(p.path.clone()),
                        (other, None) => {
                            push(syn::Error::new(other.span(), "expected the path of a `TaskContract` type"))
                        }
                    }
                    continue;
                }
                let value = match &nv.value {
                    Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => s.value(),
                    other => {
                        push(syn::Error::new(other.span(), "expected a string literal"));
                        continue;
                    }
                };
                match nv.path.get_ident().map(|i| i.to_string()).as_deref() {
                    Some("name") if name.is_none() => name = Some((value, nv.value.span())),
                    Some("version") if version.is_none() => version = Some(value),
                    Some(k @ ("name" | "version")) => {
                        push(syn::Error::new(nv.path.span(), format!("duplicate key `{k}`")))
                    }
                    _ => {
                        push(syn::Error::new(nv.path.span(), "unknown key; valid keys: `name`, `version`, `contract`"))
                    }
                }
            }
        }
    }
    let fn_ident = func.sig.ident.clone();
    if let (Some(path), Some((_, span))) = (&contract, &name) {
        push(syn::Error::new(*span, format!("the skill name comes from the contract (`{}::NAME`)", quote!(#path))));
    }
    let (name, name_span) = name.unwrap_or_else(|| (fn_ident.to_string(), fn_ident.span()));
    if contract.is_none() && !valid_name(&name) {
        push(syn::Error::new(name_span, format!("invalid skill name `{name}`: use 1-128 characters of [A-Za-z0-9_-]")));
    }
    if func.sig.asyncness.is_none() {
        push(syn::Error::new(func.sig.fn_token.span(), "a task function must be `async`"));
    }
    if !func.sig.generics.params.is_empty() {
        push(syn::Error::new(func.sig.generics.span(), "a task function cannot be generic"));
    }
    if let Some(recv) = func.sig.receiver() {
        push(syn::Error::new(recv.span(), "a task function cannot take `self`"));
    }
    let arity = func.sig.inputs.len();
    if arity > 2 {
        push(syn::Error::new(
            func.sig.inputs.span(),
            "a task function takes `(params)` or `(params, task: TaskHandle)`",
        ));
    }
    if let Some(e) = errors {
        return Err(e);
    }
    let docs: Vec<String> = func
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Some(s.value().trim().to_owned()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let description = docs.join(" ").trim().to_owned();
    let describe = (!description.is_empty()).then(|| quote!(.description(#description)));
    let versioned = version.map(|v| quote!(.version(#v)));
    let span = fn_ident.span();
    let call = match arity {
        2 => quote_spanned!(span=> #fn_ident),
        1 => quote_spanned!(span=> |params, _task: ::avto::worker::TaskHandle| #fn_ident(params)),
        _ => {
            quote_spanned!(span=> |_params: ::avto::__private::serde_json::Value, _task: ::avto::worker::TaskHandle| #fn_ident())
        }
    };
    let register = format_ident!("__avto_task_register_{}", fn_ident);
    if let Some(contract) = contract {
        // The handler's types are the contract's, or `contract_handler` does not compile.
        let call = match arity {
            2 => quote_spanned!(span=> #fn_ident),
            1 => quote_spanned!(span=> |params, _task| #fn_ident(params)),
            _ => quote_spanned!(span=> |_params, _task| #fn_ident()),
        };
        return Ok(quote! {
            #func
            #[doc(hidden)]
            #[allow(non_snake_case)]
            fn #register(builder: ::avto::worker::WorkerBuilder) -> ::avto::worker::WorkerBuilder {
                builder.task(
                    ::avto::worker::Skill::of::<#contract>() #describe #versioned,
                    ::avto::__private::contract_handler::<#contract, _, _, _>(#call),
                )
            }
            ::avto::__private::inventory::submit! {
                ::avto::worker::DeclaredTask { name: <#contract as ::avto::TaskContract>::NAME, register: #register }
            }
        });
    }
    // The schemas of the params and output types, when they have them (see `SchemaProbe`).
    let input = match func.sig.inputs.first() {
        Some(syn::FnArg::Typed(arg)) if !has_impl_trait(&arg.ty) => {
            let ty = &arg.ty;
            quote!(::avto::__private::object_only((&::avto::__private::SchemaProbe::<#ty>::new()).input_schema()))
        }
        _ => quote!(::core::option::Option::None),
    };
    let output = match &func.sig.output {
        syn::ReturnType::Type(_, ty) if !has_impl_trait(ty) => {
            quote!((&::avto::__private::OutputProbe::<#ty>::new()).output_schema())
        }
        _ => quote!(::core::option::Option::None),
    };
    Ok(quote! {
        #func
        #[doc(hidden)]
        #[allow(non_snake_case)]
        fn #register(builder: ::avto::worker::WorkerBuilder) -> ::avto::worker::WorkerBuilder {
            #[allow(unused_imports)]
            use ::avto::__private::{HasOutputSchema as _, HasSchema as _, NoOutputSchema as _, NoSchema as _};
            let skill = ::avto::worker::Skill::new(#name) #describe #versioned;
            builder.task(skill.probed_schemas(#input, #output), #call)
        }
        ::avto::__private::inventory::submit! {
            ::avto::worker::DeclaredTask { name: #name, register: #register }
        }
    })
}

/// Whether a type mentions `impl Trait` (not nameable in a probe).
fn has_impl_trait(ty: &syn::Type) -> bool {
    quote!(#ty).into_iter().any(|t| matches!(&t, proc_macro2::TokenTree::Ident(i) if i == "impl"))
}
