//! PLACEHOLDER: being written (see the helper task).
use proc_macro2::TokenStream;
pub fn blueprint(_attr: TokenStream, item: TokenStream) -> TokenStream {
    item
}
pub fn stray_helper(name: &str, _attr: TokenStream, item: TokenStream) -> TokenStream {
    let msg = format!("`#[{name}]` must be inside a `#[avto::blueprint]` module");
    let mut out = quote::quote! { ::core::compile_error!(#msg); };
    out.extend(item);
    out
}
