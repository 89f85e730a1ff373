//! A deterministic printer for token streams (the source text of `#[when(...)]` conditions).
//!
//! `TokenStream::to_string()` differs between rustc (inside a proc macro) and proc-macro2's
//! fallback (in `cargo avto graph`, which parses files with syn), so DOT labels built with it
//! would differ between the two. This printer looks only at token kinds and texts:
//! identifiers, `Literal::to_string()` (the literal's source text in both worlds), punctuation
//! regrouped into Rust operators, and delimited groups. Whitespace in the source never matters.

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};

/// Prints `tokens` as compact, canonical Rust source, e.g. `ctx.initial_data["language"] == "en"`.
pub fn print(tokens: &TokenStream) -> String {
    let mut out = String::new();
    print_items(&items(tokens.clone()), &mut out);
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Item {
    Ident(String),
    Literal(String),
    Lifetime(String),
    Op(String),
    Group(Delimiter, Vec<Item>),
}

/// Multi-character operators, longest first (split greedily out of runs of joint punctuation).
const OPS: &[&str] = &[
    "<<=", ">>=", "...", "..=", "::", "==", "!=", "<=", ">=", "&&", "||", "+=", "-=", "*=", "/=", "%=", "^=", "&=",
    "|=", "<<", ">>", "->", "=>", "..",
];

fn items(tokens: TokenStream) -> Vec<Item> {
    let mut out = Vec::new();
    // Punctuation of the current run, joined while the previous punct is `Joint`.
    let mut run = String::new();
    let mut iter = tokens.into_iter().peekable();
    while let Some(tt) = iter.next() {
        match tt {
            TokenTree::Punct(p) => {
                let ch = p.as_char();
                if ch == '\'' {
                    if let Some(TokenTree::Ident(_)) = iter.peek() {
                        if !run.is_empty() {
                            split_ops(&run, &mut out);
                            run.clear();
                        }
                        if let Some(TokenTree::Ident(id)) = iter.next() {
                            out.push(Item::Lifetime(format!("'{id}")));
                        }
                        continue;
                    }
                }
                run.push(ch);
                if p.spacing() == Spacing::Alone {
                    split_ops(&run, &mut out);
                    run.clear();
                }
            }
            other => {
                if !run.is_empty() {
                    split_ops(&run, &mut out);
                    run.clear();
                }
                match other {
                    TokenTree::Ident(id) => out.push(Item::Ident(id.to_string())),
                    TokenTree::Literal(lit) => out.push(Item::Literal(lit.to_string())),
                    TokenTree::Group(g) => {
                        let inner = items(g.stream());
                        if g.delimiter() == Delimiter::None {
                            out.extend(inner);
                        } else {
                            out.push(Item::Group(g.delimiter(), inner));
                        }
                    }
                    TokenTree::Punct(_) => {}
                }
            }
        }
    }
    if !run.is_empty() {
        split_ops(&run, &mut out);
    }
    out
}

fn split_ops(run: &str, out: &mut Vec<Item>) {
    let mut rest = run;
    while !rest.is_empty() {
        let op = OPS.iter().find(|op| rest.starts_with(*op)).copied().unwrap_or_else(|| {
            let len = rest.chars().next().map_or(1, char::len_utf8);
            &rest[..len]
        });
        out.push(Item::Op(op.to_owned()));
        rest = &rest[op.len()..];
    }
}

const KEYWORDS: &[&str] = &[
    "as", "async", "await", "box", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern", "fn", "for",
    "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "static", "struct",
    "trait", "type", "unsafe", "use", "where", "while", "yield",
];

fn is_keyword(item: &Item) -> bool {
    matches!(item, Item::Ident(s) if KEYWORDS.contains(&s.as_str()))
}

/// An operator in prefix position (`!x`, `-1`, `*r`, `&v`, `&&v`).
fn is_prefix(op: &str, prev: Option<&Item>) -> bool {
    matches!(op, "!" | "-" | "*" | "&" | "&&")
        && match prev {
            None => true,
            Some(Item::Op(_)) => true,
            Some(p) => is_keyword(p),
        }
}

fn print_items(items: &[Item], out: &mut String) {
    let mut prev: Option<&Item> = None;
    // Whether the previous item was a prefix operator (no space after it).
    let mut prev_prefix = false;
    for item in items {
        if let Some(p) = prev {
            if space_between(p, prev_prefix, item) {
                out.push(' ');
            }
        }
        let this_prefix = matches!(item, Item::Op(op) if is_prefix(op, prev));
        match item {
            Item::Ident(s) | Item::Literal(s) | Item::Lifetime(s) | Item::Op(s) => out.push_str(s),
            Item::Group(delim, inner) => {
                let (open, close) = match delim {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::Brace => ("{", "}"),
                    Delimiter::None => ("", ""),
                };
                out.push_str(open);
                if *delim == Delimiter::Brace && !inner.is_empty() {
                    out.push(' ');
                    print_items(inner, out);
                    out.push(' ');
                } else {
                    print_items(inner, out);
                }
                out.push_str(close);
            }
        }
        prev_prefix = this_prefix;
        prev = Some(item);
    }
}

fn space_between(prev: &Item, prev_prefix: bool, next: &Item) -> bool {
    if prev_prefix {
        return false;
    }
    if let Item::Op(op) = next {
        if matches!(op.as_str(), "." | "," | ";" | "?" | "::" | ".." | "..=") {
            return false;
        }
        // A macro call: `vec!`, `matches!`.
        if op == "!" && matches!(prev, Item::Ident(_)) && !is_keyword(prev) {
            return false;
        }
    }
    if let Item::Op(op) = prev {
        if matches!(op.as_str(), "." | "::" | ".." | "..=") {
            return false;
        }
    }
    if let Item::Group(delim, _) = next {
        if matches!(delim, Delimiter::Parenthesis | Delimiter::Bracket) {
            // Calls and indexing: `f(x)`, `a[0]`, `m!(..)`, `(f)(x)`.
            return match prev {
                Item::Ident(_) => is_keyword(prev),
                Item::Group(..) | Item::Literal(_) => false,
                Item::Op(op) => op != "!",
                Item::Lifetime(_) => true,
            };
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn p(src: &str) -> String {
        print(&src.parse::<TokenStream>().unwrap())
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(p(r#"ctx.initial_data["language"] == "en""#), r#"ctx.initial_data["language"] == "en""#);
        assert_eq!(p(r#"ctx . initial_data [ "language" ]=="en""#), r#"ctx.initial_data["language"] == "en""#);
        assert_eq!(p("!ctx.path.is_empty() && ctx.x>-1"), "!ctx.path.is_empty() && ctx.x > -1");
        assert_eq!(p("ctx.x==-1"), "ctx.x == -1");
        assert_eq!(p("a - b * -c"), "a - b * -c");
        assert_eq!(
            p("matches!(ctx.client.plan.as_str(), \"premium\" | \"gold\")"),
            "matches!(ctx.client.plan.as_str(), \"premium\" | \"gold\")"
        );
        assert_eq!(p("ctx.history(\"n\").as_u64().unwrap_or(0) >= 3"), "ctx.history(\"n\").as_u64().unwrap_or(0) >= 3");
        assert_eq!(p("&ctx.x == &y"), "&ctx.x == &y");
        assert_eq!(p("std::env::var(\"X\").is_ok()"), "std::env::var(\"X\").is_ok()");
        assert_eq!(p("if a { b } else { c }"), "if a { b } else { c }");
        assert_eq!(p("x.iter().any(|v| v == 1)"), "x.iter().any(| v | v == 1)");
        assert_eq!(p("(0..10).contains(&n)"), "(0..10).contains(&n)");
        assert_eq!(p("r#type == 'a'"), "r#type == 'a'");
        assert_eq!(p("f::<'a, u8>(x)"), "f::< 'a, u8 > (x)");
    }

    #[test]
    fn independent_of_quote_spacing() {
        // quote! produces Alone spacing at the end of operators; parsed source may produce Joint.
        let a = print(&quote!(ctx.x == -1 && !ctx.y));
        assert_eq!(a, p("ctx.x==-1&&!ctx.y"));
    }
}
