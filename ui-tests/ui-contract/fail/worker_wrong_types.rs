// A worker implementing a contract must take its params and return its output.
use avto::worker::TaskHandle;
use avto::TaskContract;
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

#[avto::task(contract = Resize)]
async fn wrong_params(p: CropParams, _task: TaskHandle) -> Result<Resized, avto::TaskError> {
    Ok(Resized { width: p.x })
}

#[avto::task(contract = Resize)]
async fn wrong_output(p: ResizeParams, _task: TaskHandle) -> Result<String, avto::TaskError> {
    Ok(p.url)
}

fn main() {}
