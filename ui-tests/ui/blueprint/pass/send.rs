// Handler futures are `Send`: values that are `Send` may be held across `.await`, and a
// non-`Send` value dropped before the `.await` is fine.
#![deny(warnings)]
use avto::prelude::*;

#[avto::blueprint(name = "send_flow", data_stores(s))]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(ctx: &Context, actions: &mut Actions) -> Result<(), StorageError> {
        let shared = std::sync::Arc::new(ctx.job_id.clone());
        {
            let local = std::rc::Rc::new(1);
            let _ = *local;
        }
        let _ = ctx.data_stores.store("s").get("k").await;
        let _ = shared.len();
        actions.transition_to("done");
        Ok(())
    }

    #[handler(end)]
    async fn done() {}
}

fn assert_send<T: Send>(_: &T) {}

fn main() {
    let f: avto::__private::HandlerFn = flow::__AVTO_SPEC.handlers[0].call;
    assert_send(&f);
}
