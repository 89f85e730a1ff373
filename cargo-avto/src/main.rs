//! `cargo avto graph`: see `cargo avto --help` and the `cargo_avto` library.
fn main() {
    std::process::exit(cargo_avto::cli::main());
}
