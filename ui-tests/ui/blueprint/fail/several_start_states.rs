// A second `start` flag, spanned on it.
use avto::prelude::*;

#[avto::blueprint(name = "two_starts")]
mod flow {
    use super::*;

    #[handler(state = "a", start)]
    async fn a(actions: &mut Actions) {
        actions.transition_to("b");
    }

    #[handler(state = "b", start)]
    async fn b(actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[handler(state = "finished", end)]
    async fn finished() {}
}

fn main() {}
