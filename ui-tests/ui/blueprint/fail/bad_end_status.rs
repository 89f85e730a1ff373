use avto::prelude::*;

#[avto::blueprint(name = "statuses")]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(actions: &mut Actions) {
        actions.transition_to("done");
    }

    #[handler(end = "finised")]
    async fn done() {}

    #[handler(end = "success")]
    async fn other() {}
}

fn main() {}
