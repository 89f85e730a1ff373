use avto::prelude::*;

#[avto::blueprint(name = "dotdot", api_endpoint = "jobs/../admin")]
mod dotdot {
    use super::*;

    #[handler(start, end)]
    async fn only() {}
}

#[avto::blueprint(name = "empty_segment", api_endpoint = "jobs//x")]
mod empty_segment {
    use super::*;

    #[handler(start, end)]
    async fn only() {}
}

#[avto::blueprint(name = "query", api_endpoint = "jobs/x?debug=1")]
mod query {
    use super::*;

    #[handler(start, end)]
    async fn only() {}
}

#[avto::blueprint(name = "absolute_url", api_endpoint = "https://example.com/jobs")]
mod absolute_url {
    use super::*;

    #[handler(start, end)]
    async fn only() {}
}

fn main() {}
