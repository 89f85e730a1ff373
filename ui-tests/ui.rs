#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/*/pass/*.rs");
    t.compile_fail("ui/*/fail/*.rs");
}

/// Task contracts (`cargo test -p avto-ui-tests --test ui contracts` runs only these): a
/// blueprint or a worker using another type than its `TaskContract` says does not compile.
#[test]
fn contracts() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui-contract/fail/*.rs");
}
