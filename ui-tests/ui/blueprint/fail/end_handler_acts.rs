// End handlers must not transition, dispatch, ask for approval or run a blueprint.
use avto::prelude::*;

#[avto::blueprint(name = "busy_end")]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(actions: &mut Actions) {
        actions.dispatch_task("work").transitions([("success", "finished"), ("failure", "failed")]);
    }

    #[handler(state = "finished", end)]
    async fn finished(actions: &mut Actions) {
        actions.transition_to("start");
    }

    #[handler(state = "failed", end)]
    async fn failed(actions: &mut Actions) {
        actions.dispatch_task("notify").transitions([("success", "finished")]);
        actions.await_human_approval();
        actions.run_blueprint("cleanup");
    }
}

fn main() {}
