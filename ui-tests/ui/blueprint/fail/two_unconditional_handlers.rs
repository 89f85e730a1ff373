// Two handlers of one state without `#[when]`.
use avto::prelude::*;

#[avto::blueprint(name = "twins")]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(actions: &mut Actions) {
        actions.transition_to("process");
    }

    #[handler(state = "process")]
    async fn process_a(actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[handler(state = "process")]
    async fn process_b(actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[handler(state = "finished", end)]
    async fn finished() {}
}

fn main() {}
