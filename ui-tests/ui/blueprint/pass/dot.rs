// The DOT constant, byte for byte.
use avto::prelude::*;

#[avto::blueprint(name = "dot_flow")]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(actions: &mut Actions) {
        actions.transition_to("work");
    }

    #[handler]
    #[when(ctx.initial_data["fast"] == true)]
    async fn work(actions: &mut Actions) {
        actions.dispatch_task("a").transitions([("success", "join"), ("failure", "failed")]);
        actions.dispatch_task("b").transitions([("success", "join"), ("failure", "failed")]);
    }

    #[handler(state = "work")]
    async fn slow(actions: &mut Actions) {
        actions.await_human_approval().transitions([("approved", "done"), ("rejected", "failed")]);
    }

    #[aggregator]
    async fn join(actions: &mut Actions) {
        actions.transition_to("done");
    }

    #[handler(end)]
    async fn done() {}

    #[handler(end)]
    async fn failed() {}
}

const EXPECTED: &str = r#"digraph "dot_flow" {
  node [shape=box, style=rounded];
  "__start" [shape=point, label=""];
  "__start" -> "start";
  "start";
  "work";
  "join" [style="rounded,dashed"];
  "done" [peripheries=2, label="done\n(finished)"];
  "failed" [peripheries=2, label="failed\n(failed)"];
  "start" -> "work";
  "work" -> "join" [label="when ctx.initial_data[\"fast\"] == true: success"];
  "work" -> "failed" [label="when ctx.initial_data[\"fast\"] == true: failure"];
  "work" -> "done" [label="approved"];
  "work" -> "failed" [label="rejected"];
  "join" -> "done";
}
"#;

fn main() {
    assert_eq!(flow::DOT, EXPECTED);
    assert_eq!(flow::blueprint().dot(), EXPECTED);
    // Edges keep duplicates (one per call site); the DOT removes exact duplicates.
    assert_eq!(flow::blueprint().edges().len(), 8);
}
