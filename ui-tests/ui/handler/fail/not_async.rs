// Handlers must be `async fn`.
use avto::prelude::*;

#[avto::blueprint(name = "sync")]
mod flow {
    use super::*;

    #[handler(start)]
    fn start(actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[handler(end)]
    fn finished() {}
}

fn main() {}
