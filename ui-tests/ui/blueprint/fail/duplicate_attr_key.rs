// Every attribute key at most once (blueprint, data stores, handler).
use avto::prelude::*;

#[avto::blueprint(name = "dups", name = "dups_again", data_stores(a(n = 1, n = 2), a()))]
mod flow {
    use super::*;

    #[handler(state = "start", state = "begin", start, start)]
    async fn start(actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[handler(end, end = "failed")]
    async fn finished() {}
}

fn main() {}
