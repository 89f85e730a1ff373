// Several dispatches in one handler must all fan into one aggregator.
use avto::prelude::*;

#[avto::blueprint(name = "fan_out")]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(actions: &mut Actions) {
        actions.dispatch_task("a").transitions([("success", "join"), ("failure", "failed")]);
        actions.dispatch_task("b").transitions([("success", "other_join"), ("failure", "failed")]);
        actions.dispatch_task("c").transitions([("success", "finished")]);
        actions.dispatch_task("d");
    }

    #[aggregator]
    async fn join(actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[aggregator]
    async fn other_join(actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[handler(end)]
    async fn finished() {}

    #[handler(end)]
    async fn failed() {}
}

fn main() {}
