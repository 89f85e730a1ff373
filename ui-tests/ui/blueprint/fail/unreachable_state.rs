// States that cannot be reached from the start state.
use avto::prelude::*;

#[avto::blueprint(name = "orphans")]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[handler(state = "orphan")]
    async fn orphan(actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "failed", end)]
    async fn failed() {}
}

fn main() {}
