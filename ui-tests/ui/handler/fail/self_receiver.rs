// A `self` receiver (rustc rejects it in a module; the macro adds nothing).
use avto::prelude::*;

#[avto::blueprint(name = "receiver")]
mod flow {
    use super::*;

    // rustc rejects `self` in a free function on its own (and the macro generates nothing that
    // would call it), so this is the only error.
    #[handler(start)]
    async fn start(self, actions: &mut Actions) {
        actions.transition_to("finished");
    }

    #[handler(end)]
    async fn finished() {}
}

fn main() {}
