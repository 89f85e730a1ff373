// Only end handlers return an `Output`: it is the job's result, made when the job ends.
use avto::prelude::*;

#[avto::blueprint(name = "early_output")]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(actions: &mut Actions) -> Output<u32> {
        actions.transition_to("finished");
        Output(1)
    }

    #[handler(state = "finished", end)]
    async fn finished() -> Output<u32> {
        Output(2)
    }
}

fn main() {}
