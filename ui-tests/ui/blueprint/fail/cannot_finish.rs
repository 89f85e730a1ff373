// States from which no end state can be reached (a loop, a dead end).
use avto::prelude::*;

#[avto::blueprint(name = "loops")]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        if ctx.initial_data["loop"] == true {
            actions.transition_to("loop_a");
        } else if ctx.initial_data["stuck"] == true {
            actions.transition_to("stuck");
        } else {
            actions.transition_to("finished");
        }
    }

    #[handler]
    async fn loop_a(actions: &mut Actions) {
        actions.transition_to("loop_b");
    }

    #[handler]
    async fn loop_b(actions: &mut Actions) {
        actions.transition_to("loop_a");
    }

    #[handler]
    async fn stuck(ctx: &Context) {
        let _ = ctx;
    }

    #[handler(end)]
    async fn finished() {}
}

fn main() {}
