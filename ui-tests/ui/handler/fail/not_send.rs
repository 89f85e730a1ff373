// Handler futures must be `Send`: the error names the handler and the value held across `.await`,
// for a handler without a return type and for one with (they are started differently).
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

    #[handler(state = "finished", end)]
    async fn finished(ctx: &Context) -> Result<(), String> {
        let local = std::rc::Rc::new(ctx.job_id.clone());
        let _ = ctx.data_stores.store("cache").get("k").await;
        let _ = local.len();
        Ok(())
    }
}

fn main() {}
