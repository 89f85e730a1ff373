// User items clashing with the generated `NAME` / `DOT` / `blueprint()`.
use avto::prelude::*;

#[avto::blueprint(name = "clash")]
mod flow {
    use super::*;

    pub const NAME: &str = "mine";

    #[handler(start)]
    async fn blueprint(actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[handler(end)]
    async fn finished() {}
}

fn main() {}
