//! `avto::client::Client`'s file methods against an orchestrator with an S3 file store (s3s-fs).

use std::time::Duration;

use avto::client::StatusCode;
use avto::testing::TestServer;
use avto_tests::blueprints::approval_flow;
use avto_tests::s3s::{body_of, bucket, S3Server};
use serde_json::json;

#[tokio::test]
async fn upload_url_upload_download() {
    let s3 = S3Server::start();
    let b = bucket("client");
    let mut builder = TestServer::builder().blueprint(approval_flow::blueprint());
    for (k, v) in s3.env(&b) {
        builder = builder.env(k, v);
    }
    let s = builder.start().await.expect("the test server starts");
    let c = s.client();
    let unknown = uuid::Uuid::new_v4().to_string();
    let id = c.create("jobs/approval", json!({})).await.unwrap();

    // through the orchestrator
    let data = body_of(50_000, 3);
    let up = c.upload(&id, "inputs/data.bin", data.clone()).await.unwrap();
    assert_eq!(up.s3_uri, format!("s3://{b}/jobs/{id}/inputs/data.bin"));
    assert_eq!(up.size, data.len() as u64);
    let url = c.download_url(&id, "inputs/data.bin").await.unwrap();
    assert!(url.starts_with(&s3.endpoint) && url.contains("X-Amz-Expires=60"), "{url}");
    assert!(c.download(&id, "inputs/data.bin").await.unwrap() == data);

    // straight to S3 with a presigned URL
    let presigned = c.upload_url(&id, "direct.txt", Some(Duration::from_secs(120))).await.unwrap();
    assert_eq!((presigned.method.as_str(), presigned.expires_in), ("PUT", 120));
    let put = reqwest::Client::new().put(&presigned.url).body("hello").send().await.unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    assert_eq!(c.download(&id, "direct.txt").await.unwrap(), b"hello");

    // a file that is not there; a name that is not allowed; another client's job
    assert_eq!(c.download(&id, "missing.txt").await.unwrap_err().status(), Some(StatusCode::NOT_FOUND));
    let e = c.upload(&id, "a\\b", "x").await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST), "{e}");
    assert!(c.upload(&unknown, "a.txt", "x").await.unwrap_err().is_not_found());
}
