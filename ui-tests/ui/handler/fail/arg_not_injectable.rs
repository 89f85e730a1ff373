// Argument types that cannot be injected: the error is on the argument type.
use avto::prelude::*;

pub struct Database;

#[avto::blueprint(name = "injection")]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start(ctx: &Context, db: &Database, actions: &mut Actions, count: u32) {
        let _ = (ctx, db, count);
        actions.transition_to("finished");
    }

    #[handler(end)]
    async fn finished(ctx: &mut Context) {
        let _ = ctx;
    }
}

fn main() {}
