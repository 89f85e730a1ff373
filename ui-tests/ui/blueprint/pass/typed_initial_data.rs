// Typed initial data, other extractors, named lifetimes, and a handler returning `Result<(), E>`.
#![deny(warnings)]
use avto::prelude::*;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Order {
    pub id: u64,
    pub urgent: bool,
}

#[derive(Debug)]
pub struct NotReady;

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not ready")
    }
}

#[avto::blueprint(name = "orders", api_endpoint = "orders")]
mod orders {
    use super::*;

    #[handler(start)]
    async fn receive<'a>(
        InitialData(order): InitialData<Order>,
        client: &'a ClientConfig,
        actions: &mut Actions,
    ) -> Result<(), NotReady> {
        if order.id == 0 {
            return Err(NotReady);
        }
        let priority = if order.urgent || client.plan == "premium" { 10.0 } else { 0.0 };
        actions
            .dispatch_task("process_order")
            .params(json!({ "id": order.id }))
            .priority(priority)
            .dispatch_strategy(DispatchStrategy::LeastConnections)
            .max_cost(0.05)
            .timeout(Duration::from_secs(30))
            .transitions([("success", "done"), ("failure", "task_failed"), ("cancelled", "task_cancelled"), ("rejected", "parked")])
            .event_transitions([("needs_review", "review")]);
        Ok(())
    }

    #[handler]
    async fn review(raw: &serde_json::Value, actions: &mut Actions) -> Result<(), String> {
        if raw.is_null() {
            return Err("no input".to_owned());
        }
        actions.transition_to("done");
        Ok(())
    }

    #[handler(end)]
    async fn done(order: InitialData<Order>) {
        let _ = order.id;
    }

    #[handler(end)]
    async fn task_failed(error: Option<&TaskError>, files: Option<&TaskFiles>) {
        let _ = (error, files);
    }

    #[handler(end)]
    async fn task_cancelled() {}

    #[handler(end = "quarantined")]
    async fn parked() {}
}

fn main() {
    let bp = orders::blueprint();
    assert_eq!(bp.end_status("done"), Some(JobStatus::Finished));
    assert_eq!(bp.end_status("task_failed"), Some(JobStatus::Failed));
    assert_eq!(bp.end_status("task_cancelled"), Some(JobStatus::Cancelled));
    assert_eq!(bp.end_status("parked"), Some(JobStatus::Quarantined));
    assert_eq!(bp.api_version(), None);
    let events: Vec<_> =
        bp.edges().iter().filter(|e| e.kind == avto::blueprint::EdgeKind::Event).map(|e| (e.label, e.to)).collect();
    assert_eq!(events, [("needs_review", "review")]);
}
