// `send_event("...")` of an event type the blueprint does not declare; a bad `events(...)` list.
use avto::prelude::*;
use serde_json::json;

#[derive(serde::Serialize)]
struct Warmed {
    n: u32,
}

#[avto::blueprint(name = "events", events(warmed = Warmed, note = serde_json::Value))]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(actions: &mut Actions) {
        actions.send_event("warmd", Warmed { n: 1 });
        actions.send_event("progress", json!({"progress": 0.5})).send_event("note", json!(1));
        actions.send_event("closed", json!({})).transition_to("finished");
    }

    #[handler(end)]
    async fn finished() {}
}

#[avto::blueprint(name = "no_type", events(warmed))]
mod no_type {
    #[handler(start, end)]
    async fn only() {}
}

#[avto::blueprint(name = "twice", events(warmed = u32, warmed = u64))]
mod twice {
    #[handler(start, end)]
    async fn only() {}
}

fn main() {}
