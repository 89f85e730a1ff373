// Handler futures must be `Send`: the error names the handler and the value held across `.await`.
use avto::prelude::*;

#[avto::blueprint(name = "not_send", data_stores(cache))]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        let local = std::rc::Rc::new(ctx.job_id.clone());
        let _ = ctx.data_stores.store("cache").get("k").await;
        let _ = local.len();
        actions.transition_to("finished");
    }

    #[handler(end)]
    async fn finished() {}
}

fn main() {}
