// Generic handlers, `impl Trait` arguments, `extern` ABIs.
use avto::prelude::*;

#[avto::blueprint(name = "signatures")]
mod flow {
    use super::*;

    #[handler(start)]
    async fn start<T: Default>(actions: &mut Actions) {
        let _ = T::default();
        actions.transition_to("middle");
    }

    #[handler]
    async fn middle<const N: usize>(actions: &mut Actions, f: impl Fn() -> u8) {
        let _ = f();
        actions.transition_to("finished");
    }

    #[handler(end)]
    async extern "C" fn finished() {}
}

fn main() {}
