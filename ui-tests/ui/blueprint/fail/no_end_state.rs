// A blueprint needs an end state.
use avto::prelude::*;

#[avto::blueprint(name = "endless")]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(actions: &mut Actions) {
        actions.transition_to("work");
    }

    #[handler]
    async fn work(actions: &mut Actions) {
        actions.transition_to("start");
    }
}

fn main() {}
