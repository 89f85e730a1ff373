// An `#[aggregator]` that no `dispatch_task` success transition leads to.
use avto::prelude::*;

#[avto::blueprint(name = "lonely")]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(actions: &mut Actions) {
        actions.transition_to("agg");
    }

    #[aggregator]
    async fn agg(actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[handler(end)]
    async fn finished() {}
}

fn main() {}
