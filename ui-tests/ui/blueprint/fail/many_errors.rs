// Independent mistakes in one blueprint are all reported in one compile, in source order.
use avto::prelude::*;

#[avto::blueprint(name = "many", api_endpoint = "jobs/many/")]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(actions: &mut Actions) {
        actions.transition_to("step_BB");
    }

    #[handler(stat = "step_B")]
    async fn step_b(actions: &mut Actions) {
        actions.dispatch_task("x").transitions([("success", "finished"), ("success", "failed")]);
    }

    #[handler(start)]
    fn step_c(ctx: &Context, actions: &mut Actions) {
        let _ = ctx;
        actions.transition_to("finished");
    }

    #[handler(end)]
    async fn finished(actions: &mut Actions) {
        actions.transition_to("start");
    }

    #[handler(end)]
    async fn failed(bad: std::time::Instant) {
        let _ = bad;
    }
}

fn main() {}
