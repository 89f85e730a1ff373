//! The macro contract, written out by hand: this is what `#[avto::blueprint]` expands a small
//! blueprint into. It keeps the runtime honest about what generated code needs, independent
//! of the macro crate.

use avto::testing::{Reply, TestRun};
use avto::JobStatus;

#[allow(non_upper_case_globals, dead_code)]
mod flow {
    use avto::prelude::*;

    // ---- the user's items (helper attributes stripped) ----
    async fn start(ctx: &Context, actions: &mut Actions) {
        actions
            .dispatch_task("echo")
            .params(ctx.initial_data.clone())
            .transitions([("success", "finished"), ("failure", "failed")]);
    }
    async fn finished() {}
    async fn failed(error: Option<&TaskError>) -> Result<(), String> {
        let _ = error;
        Ok(())
    }

    // ---- generated ----
    pub const NAME: &str = "hand_flow";
    pub const DOT: &str = "digraph \"hand_flow\" {}\n";
    pub fn blueprint() -> ::avto::__private::Blueprint {
        ::avto::__private::Blueprint::from_spec(&__AVTO_SPEC)
    }
    #[doc(hidden)]
    pub static __AVTO_SPEC: ::avto::__private::BlueprintSpec = ::avto::__private::BlueprintSpec {
        name: "hand_flow",
        api_version: ::core::option::Option::Some("v1"),
        api_endpoint: ::core::option::Option::Some("jobs/hand"),
        start: "start",
        states: &[
            ::avto::__private::StateSpec { name: "start", kind: ::avto::__private::StateKind::Normal },
            ::avto::__private::StateSpec {
                name: "finished",
                kind: ::avto::__private::StateKind::End(::avto::__private::JobStatus::Finished),
            },
            ::avto::__private::StateSpec {
                name: "failed",
                kind: ::avto::__private::StateKind::End(::avto::__private::JobStatus::Failed),
            },
        ],
        handlers: &[
            ::avto::__private::HandlerSpec {
                state: "start",
                name: "start",
                condition: ::core::option::Option::None,
                call: __avto_call_start,
                state_types: Vec::new,
            },
            ::avto::__private::HandlerSpec {
                state: "finished",
                name: "finished",
                condition: ::core::option::Option::None,
                call: __avto_call_finished,
                state_types: Vec::new,
            },
            ::avto::__private::HandlerSpec {
                state: "failed",
                name: "failed",
                condition: ::core::option::Option::None,
                call: __avto_call_failed,
                state_types: Vec::new,
            },
        ],
        edges: &[
            ::avto::__private::EdgeSpec {
                from: "start",
                to: "finished",
                label: "success",
                kind: ::avto::__private::EdgeKind::Dispatch,
                handler: "start",
            },
            ::avto::__private::EdgeSpec {
                from: "start",
                to: "failed",
                label: "failure",
                kind: ::avto::__private::EdgeKind::Dispatch,
                handler: "start",
            },
        ],
        data_stores: &[],
        dot: DOT,
        input_schema: || None,
        output_schemas: Vec::new,
        events: None,
        events_schemas: Vec::new,
    };
    ::avto::__private::inventory::submit! { ::avto::__private::Registration(&__AVTO_SPEC) }

    #[doc(hidden)]
    fn __avto_call_start<'a>(inv: &'a mut ::avto::__private::Invocation) -> ::avto::__private::HandlerFuture<'a> {
        let (__avto_ctx, __avto_actions) = inv.split();
        // `&Context` and `&mut Actions` as written are bound directly; any other argument type
        // goes through `FromContext` (see `failed` below) or `FromActions`.
        let __avto_arg0: &Context = __avto_ctx;
        let __avto_arg1: &mut Actions = __avto_actions;
        // No return type: nothing to convert, the handler's future boxed.
        ::avto::__private::run_unit(start(__avto_arg0, __avto_arg1))
    }
    #[doc(hidden)]
    fn __avto_call_finished<'a>(inv: &'a mut ::avto::__private::Invocation) -> ::avto::__private::HandlerFuture<'a> {
        let (_, _) = inv.split();
        ::avto::__private::run_unit(finished())
    }
    #[doc(hidden)]
    fn __avto_call_failed<'a>(inv: &'a mut ::avto::__private::Invocation) -> ::avto::__private::HandlerFuture<'a> {
        let (__avto_ctx, _) = inv.split();
        let __avto_arg0 = match <Option<&TaskError> as ::avto::__private::FromContext<'_>>::from_context(__avto_ctx) {
            Ok(a) => a,
            Err(e) => return ::avto::__private::fail(e),
        };
        // A return type: its result converted (the closure carries the return type's span).
        ::avto::__private::run(::avto::__private::assert_send(failed(__avto_arg0)), |r| {
            ::avto::__private::IntoHandlerResult::into_handler_result(r)
        })
    }
}

#[tokio::test]
async fn success_path() {
    let mut run = TestRun::new(flow::blueprint())
        .initial_data(serde_json::json!({"msg": "hi"}))
        .worker("echo", |t| Reply::success(serde_json::json!({"echo": t.params.clone()})));
    let job = run.run().await;
    assert_eq!(job.status, JobStatus::Finished);
    assert_eq!(job.path, vec!["start", "finished"]);
    assert_eq!(job.result, Some(serde_json::json!({"msg": "hi"})));
}

#[tokio::test]
async fn failure_transition_is_followed_and_error_is_visible() {
    let mut run = TestRun::new(flow::blueprint()).worker("echo", |_| Reply::failure("PERMANENT_ERROR", "broken"));
    let job = run.run().await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.current_state, "failed");
    assert_eq!(job.last_error.as_ref().unwrap().code, "PERMANENT_ERROR");
}

#[tokio::test]
async fn transient_errors_retry_with_new_task_ids() {
    let mut attempts = Vec::new();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let mut run = TestRun::new(flow::blueprint()).worker("echo", move |t| {
        seen2.lock().unwrap().push(t.task_id.clone());
        if t.attempt < 2 {
            Reply::failure("TRANSIENT_ERROR", "flaky")
        } else {
            Reply::success(serde_json::json!({"ok": true}))
        }
    });
    let job = run.run().await;
    attempts.extend(seen.lock().unwrap().iter().cloned());
    assert_eq!(job.status, JobStatus::Finished);
    assert_eq!(attempts.len(), 3);
    attempts.dedup();
    assert_eq!(attempts.len(), 3, "every attempt has a new task id");
}

#[test]
fn registered_through_inventory() {
    assert!(avto::Blueprint::registered().iter().any(|b| b.name() == "hand_flow"));
}

#[test]
fn handler_futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let mut inv_fn = flow::__AVTO_SPEC.handlers[0].call;
    let _ = &mut inv_fn;
    // HandlerFuture is `Pin<Box<dyn Future + Send>>` by type; this compiles only if so.
    fn check(f: ::avto::__private::HandlerFn) -> ::avto::__private::HandlerFn {
        f
    }
    is_send(&check(inv_fn));
}
