//! Attribute arguments: key names, one generic setter that rejects duplicates, and the parsers
//! of `#[avto::blueprint(...)]`, `#[handler(...)]` and `#[aggregator(...)]` arguments.
//! Every mistake is recorded in [`Errors`] and parsing goes on with the next key.

use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::spanned::Spanned as _;
use syn::{Expr, Lit};

use crate::errors::{hint, list, Errors};
use crate::model::{DataStore, End, EndStatus, EventDecl, Spanned};

// Key names (serde's `symbol.rs`).
pub const NAME: &str = "name";
pub const API_VERSION: &str = "api_version";
pub const API_ENDPOINT: &str = "api_endpoint";
pub const DATA_STORES: &str = "data_stores";
pub const EVENTS: &str = "events";
pub const STATE: &str = "state";
pub const START: &str = "start";
pub const END: &str = "end";

pub const BLUEPRINT_KEYS: &[&str] = &[NAME, API_VERSION, API_ENDPOINT, DATA_STORES, EVENTS];
pub const HANDLER_KEYS: &[&str] = &[STATE, START, END];
pub const AGGREGATOR_KEYS: &[&str] = &[STATE];

// Helper attribute names.
pub const HANDLER: &str = "handler";
pub const AGGREGATOR: &str = "aggregator";
pub const WHEN: &str = "when";
pub const BLUEPRINT: &str = "blueprint";

/// One attribute key: set at most once (serde's `Attr<T>`).
pub struct Attr<T> {
    key: &'static str,
    attr: &'static str,
    value: Option<Spanned<T>>,
}

impl<T> Attr<T> {
    pub fn new(attr: &'static str, key: &'static str) -> Self {
        Attr { key, attr, value: None }
    }

    /// Sets the value; a second set is a "duplicate key" error at `span`.
    pub fn set(&mut self, span: Span, value: T, errors: &mut Errors) {
        if self.value.is_some() {
            errors.error(span, format!("duplicate key `{}` in `#[{}(...)]`", self.key, self.attr));
        } else {
            self.value = Some(Spanned::new(value, span));
        }
    }

    pub fn get(self) -> Option<Spanned<T>> {
        self.value
    }
}

/// The arguments of `#[avto::blueprint(...)]`.
#[derive(Debug, Default)]
pub struct BlueprintArgs {
    pub name: Option<Spanned<String>>,
    /// Whether a `name` key was written (possibly with a bad value, already reported).
    pub has_name_key: bool,
    pub api_version: Option<Spanned<String>>,
    pub api_endpoint: Option<Spanned<String>>,
    pub data_stores: Vec<DataStore>,
    /// `events(name = Type, ...)`: `None` when the key is absent (any event type may be sent).
    pub events: Option<Vec<EventDecl>>,
}

/// The arguments of `#[handler(...)]` or `#[aggregator(...)]`.
#[derive(Debug, Default)]
pub struct HandlerArgs {
    pub state: Option<Spanned<String>>,
    pub start: Option<Span>,
    /// `end` or `end = "..."`: the status is `None` for a bare flag (derived from the state name).
    pub end: Option<(Option<EndStatus>, Span)>,
}

fn unknown_key(meta: &ParseNestedMeta<'_>, attr: &str, keys: &[&str], errors: &mut Errors) -> syn::Result<()> {
    let key = meta.path.get_ident().map(|i| i.to_string()).unwrap_or_else(|| path_text(&meta.path));
    errors.error(
        meta.path.span(),
        format!(
            "unknown key `{key}` in `#[{attr}(...)]`{} (valid keys: {})",
            hint(&key, keys.iter().copied()),
            list(keys)
        ),
    );
    skip_value(meta)
}

fn path_text(path: &syn::Path) -> String {
    path.segments.iter().map(|s| s.ident.to_string()).collect::<Vec<_>>().join("::")
}

/// Skips `= value` or `(...)` after a key we do not use.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.input.parse::<proc_macro2::TokenTree>()?;
    }
    Ok(())
}

/// `key = "string"`; records an error (and returns `None`) for anything else.
fn string_value(meta: &ParseNestedMeta<'_>, attr: &str, errors: &mut Errors) -> syn::Result<Option<syn::LitStr>> {
    let key = meta.path.get_ident().map(|i| i.to_string()).unwrap_or_default();
    if !meta.input.peek(syn::Token![=]) {
        errors.error(meta.path.span(), format!("`{key}` needs a value: `#[{attr}({key} = \"...\")]`"));
        skip_value(meta)?;
        return Ok(None);
    }
    let expr: Expr = meta.value()?.parse()?;
    match expr {
        Expr::Lit(syn::ExprLit { lit: Lit::Str(s), .. }) => Ok(Some(s)),
        other => {
            errors.error(other.span(), format!("`{key}` must be a string literal: `{key} = \"...\"`"));
            Ok(None)
        }
    }
}

/// `#[avto::blueprint(name = "...", api_version = "...", api_endpoint = "...", data_stores(...), events(...))]`.
pub fn parse_blueprint_args(tokens: TokenStream, errors: &mut Errors) -> BlueprintArgs {
    const ATTR: &str = "avto::blueprint";
    let mut name = Attr::new(ATTR, NAME);
    let mut api_version = Attr::new(ATTR, API_VERSION);
    let mut api_endpoint = Attr::new(ATTR, API_ENDPOINT);
    let mut data_stores: Attr<Vec<DataStore>> = Attr::new(ATTR, DATA_STORES);
    let mut events: Attr<Vec<EventDecl>> = Attr::new(ATTR, EVENTS);
    let mut has_name_key = false;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident(NAME) {
            has_name_key = true;
            if let Some(s) = string_value(&meta, ATTR, errors)? {
                name.set(s.span(), s.value(), errors);
            }
        } else if meta.path.is_ident(API_VERSION) {
            if let Some(s) = string_value(&meta, ATTR, errors)? {
                api_version.set(s.span(), s.value(), errors);
            }
        } else if meta.path.is_ident(API_ENDPOINT) {
            if let Some(s) = string_value(&meta, ATTR, errors)? {
                api_endpoint.set(s.span(), s.value(), errors);
            }
        } else if meta.path.is_ident(DATA_STORES) {
            let span = meta.path.span();
            if !meta.input.peek(syn::token::Paren) {
                errors.error(span, "expected `data_stores(name(key = value, ...), ...)`");
                return skip_value(&meta);
            }
            let stores = parse_data_stores(&meta, errors)?;
            data_stores.set(span, stores, errors);
        } else if meta.path.is_ident(EVENTS) {
            let span = meta.path.span();
            if !meta.input.peek(syn::token::Paren) {
                errors.error(span, "expected `events(event_type = PayloadType, ...)`");
                return skip_value(&meta);
            }
            let decls = parse_events(&meta, errors)?;
            events.set(span, decls, errors);
        } else {
            return unknown_key(&meta, ATTR, BLUEPRINT_KEYS, errors);
        }
        Ok(())
    });
    if let Err(e) = parser.parse2(tokens) {
        errors.push(e);
    }
    BlueprintArgs {
        name: name.get(),
        has_name_key,
        api_version: api_version.get(),
        api_endpoint: api_endpoint.get(),
        data_stores: data_stores.get().map(|s| s.value).unwrap_or_default(),
        events: events.get().map(|s| s.value),
    }
}

/// `events(warmed = Warmed, done = serde_json::Value)`: the event types the blueprint's handlers
/// send (`actions.send_event(..)`), each with the type of its payload.
fn parse_events(meta: &ParseNestedMeta<'_>, errors: &mut Errors) -> syn::Result<Vec<EventDecl>> {
    let mut decls: Vec<EventDecl> = Vec::new();
    let contents = paren_contents(meta)?;
    let parser = syn::meta::parser(|event| {
        let Some(ident) = event.path.get_ident() else {
            errors.error(event.path.span(), "an event type must be a plain identifier");
            return skip_value(&event);
        };
        let name = syn::ext::IdentExt::unraw(ident).to_string();
        if !event.input.peek(syn::Token![=]) {
            errors
                .error(ident.span(), format!("expected `{name} = PayloadType` (`serde_json::Value` for any payload)"));
            return skip_value(&event);
        }
        let ty: syn::Type = event.value()?.parse()?;
        if decls.iter().any(|d| d.name.value == name) {
            errors.error(ident.span(), format!("duplicate event type `{name}`"));
        } else {
            decls.push(EventDecl { name: Spanned::new(name, ident.span()), ty });
        }
        Ok(())
    });
    if let Err(e) = parser.parse2(contents) {
        errors.push(e);
    }
    Ok(decls)
}

/// The tokens inside the parentheses after `meta`'s path (`name(...)`).
fn paren_contents(meta: &ParseNestedMeta<'_>) -> syn::Result<TokenStream> {
    match meta.input.parse::<proc_macro2::TokenTree>()? {
        proc_macro2::TokenTree::Group(g) => Ok(g.stream()),
        other => Err(syn::Error::new(other.span(), "expected `(...)`")),
    }
}

fn parse_data_stores(meta: &ParseNestedMeta<'_>, errors: &mut Errors) -> syn::Result<Vec<DataStore>> {
    let mut stores: Vec<DataStore> = Vec::new();
    let contents = paren_contents(meta)?;
    let parser = syn::meta::parser(|store| {
        let Some(ident) = store.path.get_ident() else {
            errors.error(store.path.span(), "a data store name must be a plain identifier");
            return skip_value(&store);
        };
        let name = syn::ext::IdentExt::unraw(ident).to_string();
        let mut entries: Vec<(String, String)> = Vec::new();
        if store.input.peek(syn::Token![=]) {
            errors.error(store.path.span(), format!("expected `{name}(key = value, ...)` or `{name}`"));
            return skip_value(&store);
        }
        if store.input.peek(syn::token::Paren) {
            let contents = paren_contents(&store)?;
            let parser = syn::meta::parser(|kv| {
                let Some(key) = kv.path.get_ident() else {
                    errors.error(kv.path.span(), "a data store key must be a plain identifier");
                    return skip_value(&kv);
                };
                let key = syn::ext::IdentExt::unraw(key).to_string();
                if !kv.input.peek(syn::Token![=]) {
                    errors.error(kv.path.span(), format!("expected `{key} = <literal>`"));
                    return skip_value(&kv);
                }
                let expr: Expr = kv.value()?.parse()?;
                if entries.iter().any(|(k, _)| *k == key) {
                    errors.error(kv.path.span(), format!("duplicate key `{key}` in data store `{name}`"));
                } else if let Some(json) = json_value(&expr, errors) {
                    entries.push((key, json));
                }
                Ok(())
            });
            if let Err(e) = parser.parse2(contents) {
                errors.push(e);
            }
        }
        if stores.iter().any(|s| s.name.value == name) {
            errors.error(ident.span(), format!("duplicate data store `{name}`"));
        } else {
            let body: Vec<String> = entries.iter().map(|(k, v)| format!("{}:{v}", json_string(k))).collect();
            stores
                .push(DataStore { name: Spanned::new(name, ident.span()), initial: format!("{{{}}}", body.join(",")) });
        }
        Ok(())
    });
    if let Err(e) = parser.parse2(contents) {
        errors.push(e);
    }
    Ok(stores)
}

/// A literal as JSON text: integers, floats, strings, booleans, negative numbers.
fn json_value(expr: &Expr, errors: &mut Errors) -> Option<String> {
    let (negative, lit) = match expr {
        Expr::Lit(l) => (false, &l.lit),
        Expr::Unary(syn::ExprUnary { op: syn::UnOp::Neg(_), expr: inner, .. }) => match &**inner {
            Expr::Lit(l) if matches!(l.lit, Lit::Int(_) | Lit::Float(_)) => (true, &l.lit),
            _ => return not_literal(expr, errors),
        },
        Expr::Group(g) => return json_value(&g.expr, errors),
        _ => return not_literal(expr, errors),
    };
    let sign = if negative { "-" } else { "" };
    match lit {
        Lit::Int(i) => match i.base10_parse::<u128>() {
            Ok(v) => Some(format!("{sign}{v}")),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        Lit::Float(f) => match f.base10_parse::<f64>() {
            Ok(v) if v.is_finite() => Some(format!("{sign}{v:?}")),
            Ok(_) => {
                errors.error(f.span(), "this number does not fit in JSON (it is not finite as an f64)");
                None
            }
            Err(e) => {
                errors.push(e);
                None
            }
        },
        Lit::Str(s) => Some(json_string(&s.value())),
        Lit::Bool(b) => Some(b.value.to_string()),
        other => not_literal(other, errors),
    }
}

fn not_literal(tokens: &dyn quote::ToTokens, errors: &mut Errors) -> Option<String> {
    errors.error(
        tokens.to_token_stream().into_iter().next().map_or_else(Span::call_site, |t| t.span()),
        "data store values must be number, string or boolean literals",
    );
    None
}

/// A JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `#[handler(state = "...", start, end, end = "failed")]`.
pub fn parse_handler_args(tokens: TokenStream, errors: &mut Errors) -> HandlerArgs {
    let mut state = Attr::new(HANDLER, STATE);
    let mut start = Attr::new(HANDLER, START);
    let mut end: Attr<Option<EndStatus>> = Attr::new(HANDLER, END);
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident(STATE) {
            if let Some(s) = string_value(&meta, HANDLER, errors)? {
                state.set(s.span(), s.value(), errors);
            }
        } else if meta.path.is_ident(START) {
            if !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
                errors.error(meta.path.span(), "`start` is a flag: `#[handler(start)]`");
                return skip_value(&meta);
            }
            start.set(meta.path.span(), (), errors);
        } else if meta.path.is_ident(END) {
            let span = meta.path.span();
            if meta.input.peek(syn::Token![=]) {
                let Some(s) = string_value(&meta, HANDLER, errors)? else { return Ok(()) };
                match EndStatus::parse(&s.value()) {
                    Some(status) => end.set(span, Some(status), errors),
                    None => {
                        let all: Vec<&str> = EndStatus::ALL.iter().map(|s| s.as_str()).collect();
                        errors.error(
                            s.span(),
                            format!(
                                "unknown end status `{}`{} (expected one of {})",
                                s.value(),
                                hint(&s.value(), all.iter().copied()),
                                list(&all)
                            ),
                        );
                        // Still an end state (no follow-on "no end state" error).
                        end.set(span, None, errors);
                    }
                }
            } else if meta.input.peek(syn::token::Paren) {
                errors.error(
                    span,
                    "expected `end` or `end = \"finished\" | \"failed\" | \"cancelled\" | \"quarantined\"`",
                );
                return skip_value(&meta);
            } else {
                end.set(span, None, errors);
            }
        } else {
            return unknown_key(&meta, HANDLER, HANDLER_KEYS, errors);
        }
        Ok(())
    });
    if let Err(e) = parser.parse2(tokens) {
        errors.push(e);
    }
    HandlerArgs { state: state.get(), start: start.get().map(|s| s.span), end: end.get().map(|e| (e.value, e.span)) }
}

/// `#[aggregator(state = "...")]`.
pub fn parse_aggregator_args(tokens: TokenStream, errors: &mut Errors) -> HandlerArgs {
    let mut state = Attr::new(AGGREGATOR, STATE);
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident(STATE) {
            if let Some(s) = string_value(&meta, AGGREGATOR, errors)? {
                state.set(s.span(), s.value(), errors);
            }
            Ok(())
        } else {
            unknown_key(&meta, AGGREGATOR, AGGREGATOR_KEYS, errors)
        }
    });
    if let Err(e) = parser.parse2(tokens) {
        errors.push(e);
    }
    HandlerArgs { state: state.get(), start: None, end: None }
}

/// Resolves a handler's `end` flag into an [`End`].
pub fn end_of(end: Option<(Option<EndStatus>, Span)>, state: &str) -> Option<End> {
    end.map(|(status, span)| End { status: status.unwrap_or_else(|| EndStatus::from_state_name(state)), span })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn blueprint_args() {
        let mut errors = Errors::new();
        let args = parse_blueprint_args(
            quote!(
                name = "flow",
                api_version = "v1",
                data_stores(counter(total = 0, neg = -1, f = 1.5, s = "a\"b", b = true), cache(), bare)
            ),
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(args.name.unwrap().value, "flow");
        assert_eq!(args.api_version.unwrap().value, "v1");
        assert!(args.api_endpoint.is_none());
        let stores: Vec<(String, String)> = args.data_stores.into_iter().map(|s| (s.name.value, s.initial)).collect();
        assert_eq!(
            stores,
            vec![
                ("counter".into(), r#"{"total":0,"neg":-1,"f":1.5,"s":"a\"b","b":true}"#.into()),
                ("cache".into(), "{}".into()),
                ("bare".into(), "{}".into())
            ]
        );
    }

    #[test]
    fn data_store_json_is_valid() {
        let mut errors = Errors::new();
        let args = parse_blueprint_args(
            quote!(name = "x", data_stores(s(a = 0x10, b = 1e3, c = "\n\t\u{1}", d = -0.25, e = 1_000u64))),
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        let json: serde_json::Value = serde_json::from_str(&args.data_stores[0].initial).unwrap();
        assert_eq!(json, serde_json::json!({"a": 16, "b": 1000.0, "c": "\n\t\u{1}", "d": -0.25, "e": 1000}));
    }

    #[test]
    fn all_key_errors_reported() {
        let mut errors = Errors::new();
        let _ = parse_blueprint_args(quote!(nam = "x", name = "a", name = "b", api_version = 3, foo(x)), &mut errors);
        let msgs: Vec<String> = errors.combined().unwrap().into_iter().map(|e| e.to_string()).collect();
        assert_eq!(
            msgs,
            vec![
                "unknown key `nam` in `#[avto::blueprint(...)]`; did you mean `name`? (valid keys: `name`, `api_version`, `api_endpoint`, `data_stores`, `events`)",
                "duplicate key `name` in `#[avto::blueprint(...)]`",
                "`api_version` must be a string literal: `api_version = \"...\"`",
                "unknown key `foo` in `#[avto::blueprint(...)]` (valid keys: `name`, `api_version`, `api_endpoint`, `data_stores`, `events`)",
            ]
        );
    }

    #[test]
    fn handler_args() {
        let mut errors = Errors::new();
        let a = parse_handler_args(quote!(state = "x", start, end = "failed"), &mut errors);
        assert!(errors.is_empty());
        assert_eq!(a.state.unwrap().value, "x");
        assert!(a.start.is_some());
        assert_eq!(a.end.unwrap().0, Some(EndStatus::Failed));
        let _ = parse_handler_args(quote!(end = "done", start, start), &mut errors);
        let msgs: Vec<String> = errors.combined().unwrap().into_iter().map(|e| e.to_string()).collect();
        assert_eq!(
            msgs,
            vec![
                "unknown end status `done` (expected one of `finished`, `failed`, `cancelled`, `quarantined`)",
                "duplicate key `start` in `#[handler(...)]`"
            ]
        );
    }

    #[test]
    fn end_status_from_name() {
        assert_eq!(EndStatus::from_state_name("failed"), EndStatus::Failed);
        assert_eq!(EndStatus::from_state_name("task_failed"), EndStatus::Failed);
        assert_eq!(EndStatus::from_state_name("failed_x"), EndStatus::Finished);
        assert_eq!(EndStatus::from_state_name("task_cancelled"), EndStatus::Cancelled);
        assert_eq!(EndStatus::from_state_name("done"), EndStatus::Finished);
    }
}
