//! avto as one dynamic library, for faster incremental **debug** builds.
//!
//! A program that uses avto links avto's runtime and everything under it (tokio, axum,
//! serde_json, jsonschema, ...) into its executable. In a debug build that link is most of the
//! time an edit costs: the linker pulls in every code unit of avto's rlib and of its large
//! dependencies on every build, whatever the edit. Linked through this crate instead, they sit
//! in one shared object (`libavto_dylib.so`, built once), and the program's link only resolves
//! against it. The compile benchmark (`bench --compile-states ... --compile-dylib`, see
//! BENCHMARKS.md) measures the difference.
//!
//! Opt in during development only, behind a feature of your own, the way Bevy's
//! `dynamic_linking` works:
//!
//! ```toml
//! [dependencies]
//! avto = "0.1"
//! avto-dylib = { version = "0.1", optional = true }
//!
//! [features]
//! dev-dylib = ["dep:avto-dylib"]
//! ```
//!
//! and one line anywhere in the binary crate (Rust links a dependency only once it is named):
//!
//! ```ignore
//! #[cfg(feature = "dev-dylib")]
//! use avto_dylib as _;
//! ```
//!
//! then `cargo run --features dev-dylib`. Nothing else changes: the program keeps using `avto::`
//! paths, its `avto` features apply (Cargo builds one avto with the union of every dependent's
//! features, and this library holds that build), and blueprints register as usual. Rust sees that
//! avto is inside the shared object and does not link it a second time.
//!
//! What it costs: the executable then needs `libavto_dylib.so` and the toolchain's `libstd-*.so`
//! at run time. `cargo run` and `cargo test` set the library path for both; to start the binary by
//! other means, point `LD_LIBRARY_PATH` at `target/debug/deps` and at
//! `$(rustc --print target-libdir)`. Release builds should not enable it: a static executable is
//! what you deploy, and the optimizer sees across crates.

pub use avto;
