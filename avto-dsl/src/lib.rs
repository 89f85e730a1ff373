//! The blueprint DSL of avto, as a plain library: parse -> model -> validate -> expand, plus the
//! Graphviz DOT of a blueprint. `avto-macros` wraps [`expand`] as proc macros; `cargo avto graph`
//! uses [`scan`] to print the same DOT without building the user's crate.

pub mod attr;
pub mod dot;
pub mod errors;
pub mod expand;
pub mod model;
pub mod parse;
pub mod printer;
pub mod scan;
pub mod validate;
