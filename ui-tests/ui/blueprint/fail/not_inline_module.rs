#[avto::blueprint(name = "elsewhere")]
mod elsewhere;

fn main() {}
