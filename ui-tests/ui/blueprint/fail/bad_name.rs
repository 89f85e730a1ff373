// Bad blueprint `name` / `api_version` / state names; missing or non-string `name`.
use avto::prelude::*;

#[avto::blueprint(name = "my flow!", api_version = "v1.0")]
mod flow {
    use super::*;

    #[handler(state = "start here", start)]
    async fn start(actions: &mut Actions) {
        actions.transition_to("__done");
    }

    #[handler(state = "__done", end)]
    async fn done() {}
}

#[avto::blueprint(name = "")]
mod empty_name {
    #[handler(start, end)]
    async fn only() {}
}

#[avto::blueprint(api_version = "v1")]
mod no_name {
    #[handler(start, end)]
    async fn only() {}
}

#[avto::blueprint(name = 42)]
mod not_a_string {
    #[handler(start, end)]
    async fn only() {}
}

fn main() {}
