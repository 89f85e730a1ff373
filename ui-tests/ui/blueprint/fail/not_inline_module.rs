// `#[avto::blueprint]` on `mod x;` (rustc adds its own two errors about file modules in macro input).
#[avto::blueprint(name = "elsewhere")]
mod elsewhere;

fn main() {}
