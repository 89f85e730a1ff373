// `#[when]` without `#[handler]`, on an aggregator, twice; helper attributes on non-functions.
use avto::prelude::*;

#[avto::blueprint(name = "misplaced_when")]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(actions: &mut Actions) {
        actions.dispatch_task("a").transitions([("success", "join")]);
        actions.dispatch_task("b").transitions([("success", "join")]);
    }

    #[aggregator]
    #[when(ctx.aggregation_results.len() > 1)]
    async fn join(actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[when(ctx.initial_data["x"] == 1)]
    async fn helper() {}

    #[handler(end)]
    #[when(true)]
    #[when(false)]
    async fn finished() {}

    #[handler]
    struct NotAFunction;
}

fn main() {}
