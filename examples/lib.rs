//! The blueprint side of every Avtomatika cookbook recipe, in avto's DSL.
//!
//! Each module is one recipe (or a family); `examples/cookbook.rs` serves them all, the tests in
//! `tests/` drive them over HTTP with real workers, and `cargo avto graph` renders them.

#[path = "demo/api_demo.rs"]
pub mod api_demo;
#[path = "recipes/r01_linear.rs"]
pub mod r01_linear;
#[path = "recipes/r02_approval.rs"]
pub mod r02_approval;
#[path = "recipes/r03_parallel.rs"]
pub mod r03_parallel;
#[path = "recipes/r05_when.rs"]
pub mod r05_when;
#[path = "recipes/r06_r07_r08_dispatch.rs"]
pub mod r06_r07_r08_dispatch;
#[path = "recipes/r09_data_stores.rs"]
pub mod r09_data_stores;
#[path = "recipes/r10_cancel.rs"]
pub mod r10_cancel;
#[path = "recipes/r12_files.rs"]
pub mod r12_files;
#[path = "recipes/r13_retry.rs"]
pub mod r13_retry;
#[path = "recipes/r14_nested.rs"]
pub mod r14_nested;
#[path = "recipes/r15_r17_r18_r19.rs"]
pub mod r15_r17_r18_r19;

/// Every recipe blueprint.
pub fn all() -> Vec<avto::Blueprint> {
    vec![
        r01_linear::simple_flow::blueprint(),
        r02_approval::moderation::blueprint(),
        r03_parallel::parallel::blueprint(),
        r05_when::multilingual::blueprint(),
        r06_r07_r08_dispatch::critical::blueprint(),
        r06_r07_r08_dispatch::priority::blueprint(),
        r06_r07_r08_dispatch::cost_optimized::blueprint(),
        r09_data_stores::analytics::blueprint(),
        r10_cancel::cancellable::blueprint(),
        r12_files::s3_ops::blueprint(),
        r12_files::s3_video::blueprint(),
        r13_retry::error_handling::blueprint(),
        r14_nested::text_processor::blueprint(),
        r14_nested::main_flow::blueprint(),
        r15_r17_r18_r19::conditional::blueprint(),
        r15_r17_r18_r19::premium::blueprint(),
        r15_r17_r18_r19::validation::blueprint(),
        r15_r17_r18_r19::gpu::blueprint(),
    ]
}
