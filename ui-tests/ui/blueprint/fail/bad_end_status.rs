// `end = "..."` must be one of the four terminal statuses ("did you mean").
use avto::prelude::*;

#[avto::blueprint(name = "statuses")]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(actions: &mut Actions) {
        actions.dispatch_task("x").transitions([("success", "done"), ("failure", "other")]);
    }

    #[handler(end = "finised")]
    async fn done() {}

    #[handler(end = "success")]
    async fn other() {}
}

fn main() {}
