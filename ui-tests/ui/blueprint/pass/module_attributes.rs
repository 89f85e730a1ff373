// Attributes and docs of the module and its items survive; raw identifiers; a handler and an
// aggregator whose state defaults to the function name; nested blocks, closures and macros.
#![deny(warnings, missing_docs)]
//! A crate.
use avto::prelude::*;

/// The flow.
#[avto::blueprint(name = "attrs", api_version = "v2")]
#[allow(clippy::needless_return)]
pub mod flow {
    //! Inner docs of the flow.
    #![allow(unused_mut)]
    use super::*;

    /// The start.
    #[handler(start)]
    #[inline]
    pub async fn r#type(ctx: &Context, mut actions: &mut Actions) {
        let _ = &mut actions;
        let go = |a: &mut Actions| {
            a.dispatch_task("x").transitions([("success", "match"), ("failure", "done")]);
        };
        if ctx.initial_data.is_null() {
            vec![actions.transition_to("done")];
            return;
        }
        go(actions);
    }

    #[handler(state = "match")]
    async fn matcher(actions: &mut Actions) {
        {
            loop {
                actions.transition_to("done");
                break;
            }
        }
    }

    #[handler(end)]
    async fn done() {}
}

fn main() {
    let bp = flow::blueprint();
    assert_eq!(bp.start_state(), "type");
    assert_eq!(bp.spec().handlers[0].name, "type");
    assert!(bp.state("match").is_some());
}
