//! The demo blueprints of the API document (`GET /_public/openapi.json`): what
//! `examples/api_demo.rs` serves for the Schemathesis run of `.ci/schemathesis.sh`, and what
//! `tests/openapi.rs` checks the document with. `order` has an input contract (nested types, so
//! its schema has `$defs`; an optional member, so a `"default": null`), `review` parks every job
//! in `waiting_for_human` (approvals), `echo` takes any object.

use avto::prelude::*;
use avto::InitialData;
use serde::Deserialize;

/// One line of an order.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct Line {
    /// The article.
    pub sku: String,
    /// How many (at least 1).
    #[schemars(range(min = 1))]
    pub qty: u32,
}

/// The initial data of `order`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct Order {
    /// Who orders.
    pub customer: String,
    /// What (at least one line).
    #[schemars(length(min = 1))]
    pub lines: Vec<Line>,
    /// A note for the warehouse.
    #[serde(default)]
    pub note: Option<String>,
}

/// An order, checked against its contract at creation, then dispatched to a `pick` worker.
#[avto::blueprint(name = "order", api_version = "v1", api_endpoint = "jobs/order")]
pub mod order {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(InitialData(order): InitialData<Order>, actions: &mut Actions) {
        let lines = order.lines.len();
        actions
            .dispatch_task("pick")
            .params(serde_json::json!({"customer": order.customer, "lines": lines}))
            .transitions([("success", "finished"), ("failure", "failed")]);
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "failed", end = "failed")]
    async fn failed() {}
}

/// Every job waits for a human decision.
#[avto::blueprint(name = "review", api_version = "v1", api_endpoint = "jobs/review")]
pub mod review {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(actions: &mut Actions) {
        actions.await_human_approval().transitions([("approved", "finished"), ("rejected", "rejected")]);
    }

    #[handler(state = "finished", end)]
    async fn finished() {}

    #[handler(state = "rejected", end = "failed")]
    async fn rejected() {}
}

/// Any object, dispatched to an `echo` worker.
#[avto::blueprint(name = "echo", api_version = "v1", api_endpoint = "jobs/echo")]
pub mod echo {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        actions.dispatch_task("echo").params(ctx.initial_data.clone()).transitions([("success", "finished")]);
    }

    #[handler(state = "finished", end)]
    async fn finished() {}
}

/// The three demo blueprints.
pub fn all() -> Vec<avto::Blueprint> {
    vec![order::blueprint(), review::blueprint(), echo::blueprint()]
}
