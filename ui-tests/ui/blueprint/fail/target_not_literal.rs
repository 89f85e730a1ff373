// Transition targets and statuses must be string literals in an array literal, chained on their action.
use avto::prelude::*;

const NEXT: &str = "finished";

#[avto::blueprint(name = "dynamic")]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        let next = if ctx.initial_data.is_null() { "failed" } else { NEXT };
        actions.transition_to(next);
    }

    #[handler]
    async fn work(actions: &mut Actions) {
        let pairs = [("success", "finished")];
        actions.dispatch_task("a").transitions(pairs);
        actions.dispatch_task("b").transitions(vec![("success", "finished")]);
        actions.dispatch_task("c").transitions([("success", NEXT), (String::new().as_str(), "failed")]);
        let builder = actions.await_human_approval();
        builder.transitions([("approved", "finished")]);
    }

    #[handler(end)]
    async fn finished() {}

    #[handler(end)]
    async fn failed() {}
}

fn main() {}
