// End handlers may return `Output<T>` or `Result<Output<T>, E>`: the job's result, with T's
// schema (when T: JsonSchema) as the blueprint's output contract.
use avto::prelude::*;

#[derive(serde::Serialize)]
pub struct Summary {
    pub words: usize,
}

#[avto::blueprint(name = "outputs")]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(ctx: &Context, actions: &mut Actions) {
        if ctx.initial_data.is_null() {
            actions.transition_to("failed");
        } else {
            actions.transition_to("finished");
        }
    }

    #[handler(state = "finished", end)]
    async fn finished(ctx: &Context) -> Result<avto::Output<Summary>, String> {
        let text = ctx.initial_data["text"].as_str().ok_or("no text")?;
        Ok(Output(Summary { words: text.split_whitespace().count() }))
    }

    #[handler(state = "failed", end)]
    async fn failed() -> Output<&'static str> {
        Output("no input")
    }
}

fn main() {
    // `Summary` has no JsonSchema, `&str` has: only `failed` has an output contract.
    let schemas = flow::blueprint().output_schemas();
    assert_eq!(schemas.iter().map(|(s, _)| *s).collect::<Vec<_>>(), ["failed"]);
}
