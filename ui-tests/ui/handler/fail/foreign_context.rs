// `&Context` and `&mut Actions` are bound directly (no trait to resolve): a `Context` or `Actions`
// of the user's own is a type mismatch, at the argument's type.
use avto::prelude::*;

pub struct Context {
    pub name: String,
}

#[avto::blueprint(name = "foreign_context")]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(ctx: &super::Context, actions: &mut Actions) {
        let _ = &ctx.name;
        actions.transition_to("finished");
    }

    #[handler(end)]
    async fn finished() {}
}

fn main() {}
