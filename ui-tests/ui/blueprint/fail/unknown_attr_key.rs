// Unknown attribute keys list the valid ones ("did you mean").
use avto::prelude::*;

#[avto::blueprint(nam = "typo", name = "keys", api_endpoint = "jobs/keys", timeout = 30)]
mod flow {
    use super::*;

    #[handler(stat = "start", start, final)]
    async fn start(actions: &mut Actions) {
        actions.dispatch_task("a").transitions([("success", "join")]);
        actions.dispatch_task("b").transitions([("success", "join")]);
    }

    #[aggregator(state = "join", start)]
    async fn join(actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[handler(end)]
    async fn finished() {}
}

fn main() {}
