// A `#[when]` condition must be a `bool` expression over `ctx`.
use avto::prelude::*;

#[avto::blueprint(name = "conditions")]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(actions: &mut Actions) {
        actions.transition_to("route");
    }

    #[handler(state = "route")]
    #[when(ctx.initial_data["language"])]
    async fn english(actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[handler(state = "route")]
    #[when(context.initial_data["language"] == "de")]
    async fn german(actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[handler(state = "route")]
    #[when()]
    async fn empty(actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[handler(end)]
    async fn finished() {}
}

fn main() {}
