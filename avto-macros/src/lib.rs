//! Attribute macros of avto. Use them through the `avto` crate (`#[avto::blueprint]`).
use proc_macro::TokenStream;

/// Turns an inline module of handlers into a compile-time checked blueprint.
#[proc_macro_attribute]
pub fn blueprint(attr: TokenStream, item: TokenStream) -> TokenStream {
    avto_dsl::expand::blueprint(attr.into(), item.into()).into()
}

/// Marks a state handler. Only valid inside a `#[avto::blueprint]` module.
#[proc_macro_attribute]
pub fn handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    avto_dsl::expand::stray_helper("handler", attr.into(), item.into()).into()
}

/// Marks the fan-in handler of a parallel dispatch. Only valid inside a `#[avto::blueprint]` module.
#[proc_macro_attribute]
pub fn aggregator(attr: TokenStream, item: TokenStream) -> TokenStream {
    avto_dsl::expand::stray_helper("aggregator", attr.into(), item.into()).into()
}

/// Guards a handler with a condition over `ctx: &Context`. Only valid inside a `#[avto::blueprint]` module.
#[proc_macro_attribute]
pub fn when(attr: TokenStream, item: TokenStream) -> TokenStream {
    avto_dsl::expand::stray_helper("when", attr.into(), item.into()).into()
}

/// Declares a worker task function for `avto::worker::run()` (feature `worker`):
/// `#[avto::task("skill_name")] async fn f(params: P, task: TaskHandle) -> TaskOutcome`.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    avto_dsl::task::task(attr.into(), item.into()).into()
}
