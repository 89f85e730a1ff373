// Handlers return `()` or `Result<(), E: Display>`: the error is on the return type.
use avto::prelude::*;

#[avto::blueprint(name = "returns")]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(actions: &mut Actions) -> u32 {
        actions.transition_to("finished");
        0
    }

    #[handler(end)]
    async fn finished() -> Result<(), ()> {
        Ok(())
    }
}

fn main() {}
