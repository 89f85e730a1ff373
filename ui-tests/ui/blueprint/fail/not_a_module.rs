// `#[avto::blueprint]` on something other than a module.
use avto::prelude::*;

#[avto::blueprint(name = "a_function")]
async fn start(actions: &mut Actions) {
    actions.transition_to("finished");
}

/// A struct.
#[avto::blueprint(name = "a_struct")]
pub struct Flow;

fn main() {}
