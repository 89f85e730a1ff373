use avto::prelude::*;

#[avto::blueprint(name = "receiver")]
mod flow {
    use super::*;

    #[handler(start, end)]
    async fn start(self) {}
}

fn main() {}
