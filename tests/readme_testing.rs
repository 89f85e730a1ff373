//! The README's "Testing your blueprints" examples, run: the same code as its two blocks (the
//! doctests only compile them), and a check that the README still shows exactly this code.

// --- README block "In-process: `TestRun`" (with its hidden lines) ---
use avto::prelude::*;
#[avto::blueprint(name = "flow", api_endpoint = "jobs/flow")]
mod flow {
    use super::*;
    #[handler(state = "start", start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        actions.dispatch_task("simple_task").params(ctx.initial_data.clone()).transitions([("success", "finished")]);
    }
    #[handler(state = "finished", end)]
    async fn finished() {}
}
use avto::testing::{Reply, TestRun};

#[tokio::test]
async fn simple_task_routes_to_finished() {
    let mut run = TestRun::new(flow::blueprint())
        .initial_data(serde_json::json!({"x": 1}))
        .worker("simple_task", |task| Reply::success(serde_json::json!({"seen": task.params["x"]})));
    let job = run.run().await;
    assert_eq!(job.status, avto::JobStatus::Finished);
}

// --- README block "Over HTTP: `TestServer`" ---
mod readme {
    use std::time::Duration;

    use avto::prelude::*;
    use avto::testing::TestServer;
    use avto::worker::{TaskHandle, TaskOutcome};

    #[avto::blueprint(name = "resize_flow", api_version = "v1", api_endpoint = "jobs/resize")]
    mod resize_flow {
        use super::*;

        #[handler(state = "start", start)]
        async fn start(ctx: &Context, actions: &mut Actions) {
            actions.dispatch_task("resize").params(ctx.initial_data.clone()).transitions([("success", "done")]);
        }

        #[handler(state = "done", end)]
        async fn done(ctx: &Context) -> Output<serde_json::Value> {
            Output(json!({"width": ctx.history("width")}))
        }
    }

    #[tokio::test]
    async fn resizes_over_http() {
        let server = TestServer::builder()
            .blueprint(resize_flow::blueprint())
            .worker("resize", |p: serde_json::Value, _task: TaskHandle| async move {
                TaskOutcome::success(json!({"width": p["width"].as_u64().unwrap_or(0) / 2}))
            })
            .start()
            .await
            .unwrap();
        let client = server.client();
        let id = client.create("jobs/resize", json!({"width": 640})).await.unwrap();
        let job = client.wait(&id, Duration::from_secs(10)).await.unwrap();
        assert_eq!(job.status, JobStatus::Finished);
        assert_eq!(job.result, Some(json!({"width": 320})));
        server.stop().await.unwrap();
    }
}

/// The code lines of the README's block under `heading` (hidden `# ` lines shown, the hidden
/// `mod`/`cfg`/`fn main` wrapper left out), trimmed.
fn readme_block(heading: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let at = readme.find(heading).unwrap_or_else(|| panic!("README has {heading}"));
    let block = &readme[at..];
    let start = block.find("```rust").unwrap();
    let block = &block[start..];
    let body = &block[block.find('\n').unwrap() + 1..block[3..].find("```").unwrap() + 3];
    body.lines()
        .map(|l| l.strip_prefix("# ").or_else(|| l.strip_prefix('#').filter(|r| r.is_empty())).unwrap_or(l).trim())
        .filter(|l| {
            !l.is_empty() && !l.starts_with("#[cfg(") && *l != "mod readme {" && *l != "fn main() {}" && *l != "}"
            // closing braces are not compared (nesting differs)
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_readme_shows_this_code() {
    let me = include_str!("readme_testing.rs");
    let mine: Vec<&str> = me.lines().map(str::trim).filter(|l| !l.is_empty() && *l != "}").collect();
    for heading in ["### In-process: `TestRun`", "### Over HTTP: `TestServer`"] {
        let lines = readme_block(heading);
        assert!(lines.len() > 10, "{heading}: {lines:?}");
        // Every README line appears here, in the same order.
        let mut from = 0;
        for line in &lines {
            match mine[from..].iter().position(|m| m == line) {
                Some(i) => from += i + 1,
                None => panic!("README {heading}: `{line}` is not (in this order) in tests/readme_testing.rs"),
            }
        }
    }
}
