//! The error accumulator of the pipeline (serde's `Ctxt`): every stage pushes spanned errors
//! here and goes on, so one compile reports every mistake of a blueprint.

use std::fmt::Display;

use proc_macro2::{Span, TokenStream};

/// Spanned errors, in the order they were found.
#[derive(Default)]
pub struct Errors {
    errors: Vec<syn::Error>,
}

impl std::fmt::Debug for Errors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.errors.iter().map(|e| e.to_string())).finish()
    }
}

impl Errors {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an error at `span`.
    pub fn error(&mut self, span: Span, msg: impl Display) {
        self.errors.push(syn::Error::new(span, msg));
    }

    /// Records a `syn` error (several combined errors stay several).
    pub fn push(&mut self, error: syn::Error) {
        self.errors.extend(error);
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// Orders the errors by source position, when the spans know it (stable: ties keep their order).
    pub fn sort_by_position(&mut self) {
        let pos = |e: &syn::Error| {
            let s = e.span().start();
            (s.line, s.column)
        };
        if self.errors.iter().all(|e| pos(e).0 > 0) {
            self.errors.sort_by_key(pos);
        }
    }

    /// All errors combined into one `syn::Error`, if there are any.
    pub fn combined(&self) -> Option<syn::Error> {
        let mut iter = self.errors.iter().cloned();
        let mut first = iter.next()?;
        for e in iter {
            first.combine(e);
        }
        Some(first)
    }

    /// One `compile_error!` per error, each spanned on its token.
    pub fn to_compile_errors(&self) -> TokenStream {
        self.combined().map(|e| e.to_compile_error()).unwrap_or_default()
    }

    /// The messages, each with its line and column (when spans know them, i.e. outside a proc macro).
    pub fn messages(&self) -> Vec<String> {
        self.errors
            .iter()
            .map(|e| {
                let start = e.span().start();
                if start.line == 0 {
                    e.to_string()
                } else {
                    format!("{}:{}: {}", start.line, start.column + 1, e)
                }
            })
            .collect()
    }
}

/// The closest candidate to `name` by edit distance, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    let mut best: Option<(usize, &'a str)> = None;
    for c in candidates {
        if c == name {
            continue;
        }
        let d = if c.eq_ignore_ascii_case(name) { 1 } else { edit_distance(name, c) };
        if d <= limit && d < name.chars().count() && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// `; did you mean `x`?` or nothing.
pub fn hint<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    match did_you_mean(name, candidates) {
        Some(c) => format!("; did you mean `{c}`?"),
        None => String::new(),
    }
}

/// Levenshtein distance over chars.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// `` `a`, `b`, `c` ``
pub fn list(items: &[&str]) -> String {
    items.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance() {
        assert_eq!(edit_distance("step_BB", "step_B"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn suggestions() {
        let states = ["start", "step_A", "step_B", "finished"];
        assert_eq!(did_you_mean("step_BB", states), Some("step_B"));
        assert_eq!(did_you_mean("finshed", states), Some("finished"));
        assert_eq!(did_you_mean("zzz", states), None);
        assert_eq!(did_you_mean("STEP_A", states), Some("step_A"));
    }
}
