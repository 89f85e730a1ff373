// `#[handler]`, `#[aggregator]`, `#[when]` outside a `#[avto::blueprint]` module.
use avto::prelude::*;

#[handler(state = "start", start)]
async fn start(actions: &mut Actions) {
    actions.transition_to("finished");
}

#[aggregator]
async fn join() {}

#[avto::when(ctx.initial_data["x"] == 1)]
async fn guarded() {}

struct Worker;

impl Worker {
    #[handler]
    async fn method(&self) {}
}

fn main() {}
