// Cookbook recipe 9: data stores with initial values.
#![deny(warnings)]
use avto::prelude::*;

#[avto::blueprint(
    name = "analytics_flow",
    api_version = "v1",
    api_endpoint = "jobs/analytics",
    data_stores(request_counter(total_requests = 0, ratio = -1.5, label = "requests", on = true), cache(), scratch)
)]
mod analytics {
    use super::*;

    #[handler(state = "start", start)]
    async fn count_request(ctx: &Context, actions: &mut Actions) -> Result<(), StorageError> {
        let new_count = ctx.data_stores.store("request_counter").incr("total_requests", 1).await?;
        actions.update_context("request_number", new_count);
        actions.transition_to("finished");
        Ok(())
    }

    #[handler(state = "finished", end)]
    async fn show_result(stores: &DataStores) -> Result<(), StorageError> {
        stores.store("cache").set("last", true).await
    }
}

fn main() {
    let spec = analytics::blueprint().spec();
    let stores: Vec<_> = spec.data_stores.iter().map(|d| (d.name, d.initial)).collect();
    assert_eq!(
        stores,
        [
            ("request_counter", r#"{"total_requests":0,"ratio":-1.5,"label":"requests","on":true}"#),
            ("cache", "{}"),
            ("scratch", "{}")
        ]
    );
    for (_, initial) in stores {
        let _: serde_json::Value = serde_json::from_str(initial).unwrap();
    }
}
