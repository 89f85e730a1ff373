//! The blueprint DSL: parse -> model -> validate -> expand (+ DOT).
pub mod expand;
