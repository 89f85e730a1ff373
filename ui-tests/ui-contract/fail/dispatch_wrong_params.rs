// A blueprint dispatching by contract must pass the contract's params type.
use avto::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResizeParams {
    pub url: String,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
pub struct Resized {
    pub width: u32,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
pub struct CropParams {
    pub x: u32,
}

pub struct Resize;

impl TaskContract for Resize {
    const NAME: &'static str = "resize";
    type Params = ResizeParams;
    type Output = Resized;
}

#[avto::blueprint(name = "typed")]
mod typed {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(actions: &mut Actions) {
        actions.dispatch::<Resize>(CropParams { x: 1 }).transitions([("success", "done")]);
    }

    #[handler(state = "done", end)]
    async fn done() {}
}

fn main() {}
