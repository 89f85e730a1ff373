// At most one `&mut` argument (`&mut Actions`).
use avto::prelude::*;

#[avto::blueprint(name = "two_mut")]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(first: &mut Actions, second: &mut Actions) {
        first.transition_to("finished");
        let _ = second;
    }

    #[handler(end)]
    async fn finished() {}
}

fn main() {}
