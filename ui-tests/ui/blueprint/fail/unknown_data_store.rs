// `.store("...")` of an undeclared data store; non-literal data store values.
use avto::prelude::*;

#[avto::blueprint(name = "stores", data_stores(request_counter(total_requests = 0), cache()))]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(ctx: &Context, stores: &DataStores, actions: &mut Actions) {
        let _ = ctx.data_stores.store("request_countr").get("total_requests").await;
        let _ = stores.store("sessions").get("x").await;
        actions.transition_to("finished");
    }

    #[handler(end)]
    async fn finished() {}
}

#[avto::blueprint(name = "no_stores")]
mod none_declared {
    use super::*;

    #[handler(start, end)]
    async fn only(stores: &DataStores) {
        let _ = stores.store("cache").get("x").await;
    }
}

#[avto::blueprint(name = "bad_values", data_stores(s(a = [1, 2], b = some_const, c = -"x")))]
mod bad_values {
    #[handler(start, end)]
    async fn only() {}
}

fn main() {}
