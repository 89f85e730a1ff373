// Unknown target states ("did you mean", or the list of states).
use avto::prelude::*;

#[avto::blueprint(name = "simple_linear_flow")]
mod simple_flow {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(actions: &mut Actions) {
        actions.transition_to("step_A");
    }

    #[handler(state = "step_A")]
    async fn step_a(actions: &mut Actions) {
        actions.dispatch_task("simple_task").transitions([("success", "step_BB"), ("failure", "faild")]);
    }

    #[handler(state = "step_B")]
    async fn step_b(ctx: &Context, actions: &mut Actions) {
        if ctx.initial_data.is_null() {
            actions.transition_to("finish");
        } else {
            actions.transition_to("other");
        }
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "failed", end)]
    async fn failed() {}

    #[handler(state = "other")]
    async fn other(actions: &mut Actions) {
        actions.transition_to("zzz_unknown");
    }
}

fn main() {}
