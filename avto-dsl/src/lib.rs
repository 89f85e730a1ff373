//! The blueprint DSL of avto as a plain library: parse -> model -> validate -> expand, plus the
//! Graphviz DOT of a blueprint. `avto-macros` wraps [`expand`] as proc macros; `cargo avto graph`
//! uses [`scan`] to print the same DOT without building the user's crate.
//!
//! | stage | module | what |
//! |---|---|---|
//! | attributes | [`attr`] | key names, one generic setter ([`attr::Attr`]) rejecting duplicates and listing valid keys |
//! | parse | [`parse`] | syn -> [`model::Model`]; strips `#[handler]`/`#[aggregator]`/`#[when]`; scans handler bodies for actions and edges |
//! | validate | [`validate`] | the compile-time checks, small named rules, every error collected ([`errors::Errors`]) |
//! | expand | [`expand`] | tokens from the validated model; on error the module + `compile_error!`s + stubs |
//! | DOT | [`dot`] | deterministic DOT (declaration / source order), inside the `layout-rs` subset |
//! | scan | [`scan`] | every blueprint of a source file, same pipeline, same DOT bytes |
//! | printer | [`printer`] | canonical text of `#[when]` conditions, identical inside and outside proc macros |
//!
//! # Compile-time checks
//!
//! Each is spanned on the offending token, and all errors of a blueprint come in one compile:
//! unknown target state ("did you mean"); no start state; several start states; no end state;
//! unreachable state; state from which no end state can be reached; end handler that calls
//! `transition_to` / `dispatch_task` / `await_human_approval` / `run_blueprint`; two unconditional
//! handlers for one state; one state with handler and aggregator, or two aggregators; conflicting
//! end statuses; aggregator no dispatch fans into; parallel dispatches (several `dispatch_task`
//! calls that can run in one handler run) not all fanning into one aggregator; targets and
//! statuses that are not string literals in an array literal chained on their action; helper
//! attributes outside a blueprint or on non-functions; `#[when]` without `#[handler]`, on an
//! aggregator or twice; handler not `async`, generic, `impl Trait` argument, `const`/`unsafe`/
//! `extern`; two `&mut` arguments; unknown / duplicate attribute keys; bad `name` /
//! `api_version` / `api_endpoint` / state names; unknown data store in `.store("...")`; event
//! type in `send_event("...")` that `events(...)` does not declare;
//! `#[avto::blueprint]` on a non-module or a non-inline module; bad `end = "..."` status; items
//! clashing with generated names. rustc itself reports (on the user's token): arguments that
//! cannot be injected, unsupported return types, non-`Send` handler futures, non-`bool`
//! conditions, `self` receivers and C-variadics.
//!
//! Exclusive branches are understood: `dispatch_task` calls in different arms of an `if`/`match`,
//! or separated by a `return`, are not a parallel fan-out.

pub mod attr;
pub mod doc_graph;
pub mod dot;
pub mod errors;
pub mod expand;
pub mod model;
pub mod parse;
pub mod printer;
pub mod scan;
pub mod task;
pub mod validate;
