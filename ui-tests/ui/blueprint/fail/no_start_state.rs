// A blueprint needs a start state.
use avto::prelude::*;

#[avto::blueprint(name = "no_start")]
mod flow {
    use super::*;

    #[handler(state = "start")]
    async fn start(actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[handler(state = "finished", end)]
    async fn finished() {}
}

fn main() {}
