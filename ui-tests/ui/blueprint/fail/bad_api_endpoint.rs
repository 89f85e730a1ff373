// `api_endpoint` must be a relative URL path of `[A-Za-z0-9_-]+` segments.
#[avto::blueprint(name = "dotdot", api_endpoint = "jobs/../admin")]
mod dotdot {
    #[handler(start, end)]
    async fn only() {}
}

#[avto::blueprint(name = "empty_segment", api_endpoint = "jobs//x")]
mod empty_segment {
    #[handler(start, end)]
    async fn only() {}
}

#[avto::blueprint(name = "query", api_endpoint = "jobs/x?debug=1")]
mod query {
    #[handler(start, end)]
    async fn only() {}
}

#[avto::blueprint(name = "absolute_url", api_endpoint = "https://example.com/jobs")]
mod absolute_url {
    #[handler(start, end)]
    async fn only() {}
}

fn main() {}
