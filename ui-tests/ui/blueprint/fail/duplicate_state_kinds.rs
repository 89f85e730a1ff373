// One state handled by an aggregator and a handler, two aggregators, conflicting end statuses.
use avto::prelude::*;

#[avto::blueprint(name = "mixed")]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(actions: &mut Actions) {
        actions.dispatch_task("a").transitions([("success", "join")]);
        actions.dispatch_task("b").transitions([("success", "join")]);
    }

    #[aggregator(state = "join")]
    async fn join(actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[aggregator(state = "join")]
    async fn join_again(actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[handler(state = "join")]
    async fn join_handler(actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "finished", end = "failed")]
    #[when(ctx.initial_data["failed"] == true)]
    async fn finished_badly() {}
}

fn main() {}
