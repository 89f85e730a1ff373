//! S3 task files against a real S3-protocol server: s3s-fs, started by each test from
//! `$AVTO_S3S_FS` (installed by `.ci/s3.sh`; the tests fail, never skip, without it; the harness
//! is `avto_tests::s3s`).
//!
//! Covered: `TaskFiles` over `S3ObjectStore` (text, bytes, JSON, list, delete, folders both ways,
//! multipart streaming, presigned URLs, cleanup), the client file endpoints (presigned upload,
//! streaming upload, download redirect, 501 without S3, ownership 404, bad names 400, size limit
//! 413), recipe 12a end to end over HTTP (fast path in the orchestrator, deep path through a Rust
//! worker with S3 offload), the job files' cleanup when a job ends (and `S3_AUTO_CLEANUP=false`),
//! and recipe 12b with the Rust worker SDK downloading `s3://` params and uploading its results.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use avto::files::s3::{S3Config, S3ObjectStore, PART_SIZE};
use avto::files::{FileError, ObjectStore, PresignMethod, TaskFiles};
use avto::server::config::Config;
use avto::worker::s3::PayloadOffload;
use avto::worker::{ShutdownHandle, TaskHandle, TaskOutcome, WorkerBuilder, WorkerError};
use avto_tests::s3s::{body_of, bucket, started_store, temp_dir, S3Server, ACCESS};
use avto_tests::{test_config_with, ApiClient, RustWorker, Server, CLIENT_TOKEN};
use futures::StreamExt;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// TaskFiles over S3

#[tokio::test]
async fn task_files_on_s3() {
    let s3 = S3Server::start();
    let b = bucket("files");
    let store = started_store(&s3, &b).await;
    store.init().await.expect("init is idempotent (the bucket exists now)");
    let files = TaskFiles::new("job-1", store.clone());

    // text, bytes, JSON
    files.write_text("notes/a.txt", "hello").await.unwrap();
    files.write_bytes("blob.bin", vec![0u8, 1, 2, 255]).await.unwrap();
    files.write_json("config.json", &json!({"mode": "fast", "n": 3})).await.unwrap();
    assert_eq!(files.read_text("notes/a.txt").await.unwrap(), "hello");
    assert_eq!(files.read_bytes("blob.bin").await.unwrap(), vec![0u8, 1, 2, 255]);
    let cfg: Value = files.read_json("config.json").await.unwrap();
    assert_eq!(cfg, json!({"mode": "fast", "n": 3}));
    // the keys live under jobs/{job_id}/ in the default bucket, and URIs name them
    assert_eq!(store.list_in(&b, "jobs/job-1/").await.unwrap().len(), 3);
    assert_eq!(files.uri("config.json").unwrap(), format!("s3://{b}/jobs/job-1/config.json"));
    let by_uri: Value = files.read_json(&format!("s3://{b}/jobs/job-1/config.json")).await.unwrap();
    assert_eq!(by_uri["mode"], "fast");
    assert_eq!(files.list().await.unwrap(), ["blob.bin", "config.json", "notes/a.txt"]);

    // errors: missing file, bad JSON, bad names
    assert!(matches!(files.read_text("missing.txt").await, Err(FileError::NotFound(_))));
    assert!(matches!(files.read_json::<Value>("notes/a.txt").await, Err(FileError::Json { .. })));
    for bad in ["../x", "/etc/passwd", "", "a//b", "a/./b"] {
        assert!(matches!(files.read_text(bad).await, Err(FileError::InvalidName(_))), "{bad:?}");
    }

    // delete
    files.delete("blob.bin").await.unwrap();
    files.delete("blob.bin").await.expect("deleting a missing file is fine");
    assert_eq!(files.list().await.unwrap(), ["config.json", "notes/a.txt"]);

    // folders: upload a local tree, download it elsewhere, same content
    let src = temp_dir("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::write(src.join("one.txt"), "1").unwrap();
    std::fs::write(src.join("sub/two.txt"), "22").unwrap();
    std::fs::write(src.join("sub/deeper/three.bin"), body_of(70_000, 3)).unwrap();
    let uploaded = files.upload(&src, "dataset").await.unwrap();
    assert_eq!(uploaded, ["dataset/one.txt", "dataset/sub/deeper/three.bin", "dataset/sub/two.txt"]);
    let dest = temp_dir("dest");
    let written = files.download("dataset/", &dest).await.unwrap();
    assert_eq!(written.len(), 3);
    assert_eq!(std::fs::read_to_string(dest.join("one.txt")).unwrap(), "1");
    assert_eq!(std::fs::read_to_string(dest.join("sub/two.txt")).unwrap(), "22");
    assert_eq!(std::fs::read(dest.join("sub/deeper/three.bin")).unwrap(), body_of(70_000, 3));
    assert!(matches!(files.upload(&src.join("nope"), "x").await, Err(FileError::NotFound(_))));
    // one file each way
    assert_eq!(files.upload_file(&src.join("one.txt"), "single.txt").await.unwrap(), 1);
    assert_eq!(files.download_file("single.txt", &dest.join("copy/single.txt")).await.unwrap(), 1);
    assert_eq!(std::fs::read_to_string(dest.join("copy/single.txt")).unwrap(), "1");

    // a streamed write larger than a part goes up as a multipart upload
    let big = body_of(2 * PART_SIZE + 12_345, 7);
    let chunks: Vec<Result<Vec<u8>, FileError>> = big.chunks(1 << 20).map(|c| Ok(c.to_vec())).collect();
    let n = files.write_stream("big.bin", futures::stream::iter(chunks).boxed(), u64::MAX).await.unwrap();
    assert_eq!(n, big.len() as u64);
    assert!(files.read_bytes("big.bin").await.unwrap() == big, "multipart upload round-trips");
    // ... and a stream past its limit is refused, leaving nothing behind
    let chunks: Vec<Result<Vec<u8>, FileError>> = big.chunks(1 << 20).map(|c| Ok(c.to_vec())).collect();
    let limit = PART_SIZE as u64 + 10;
    let r = files.write_stream("too-big.bin", futures::stream::iter(chunks).boxed(), limit).await;
    assert!(matches!(r, Err(FileError::TooLarge { limit: l }) if l == limit), "{r:?}");
    assert!(!files.list().await.unwrap().contains(&"too-big.bin".to_owned()));

    // presigned URLs work without credentials
    let http = reqwest::Client::new();
    let put = files.presigned_url("presigned.txt", PresignMethod::Put, Duration::from_secs(120)).await.unwrap();
    let r = http.put(&put).body("via presigned PUT").send().await.unwrap();
    assert!(r.status().is_success(), "presigned PUT: {} {}", r.status(), r.text().await.unwrap_or_default());
    assert_eq!(files.read_text("presigned.txt").await.unwrap(), "via presigned PUT");
    let get = files.presigned_url("presigned.txt", PresignMethod::Get, Duration::from_secs(60)).await.unwrap();
    assert_eq!(http.get(&get).send().await.unwrap().text().await.unwrap(), "via presigned PUT");
    let unsigned = format!("{}/{b}/jobs/job-1/presigned.txt", s3.endpoint);
    assert_eq!(http.get(&unsigned).send().await.unwrap().status(), 403, "the bucket is not public");

    // cleanup removes the job's files and nothing else
    let other = TaskFiles::new("job-2", store.clone());
    other.write_text("keep.txt", "mine").await.unwrap();
    let removed = files.cleanup().await.unwrap();
    assert_eq!(removed, 8, "config.json, notes/a.txt, 3 in dataset/, single.txt, big.bin, presigned.txt");
    assert!(files.list().await.unwrap().is_empty());
    assert_eq!(other.read_text("keep.txt").await.unwrap(), "mine");

    let _ = std::fs::remove_dir_all(src);
    let _ = std::fs::remove_dir_all(dest);
}

#[tokio::test]
async fn wrong_credentials_and_partial_config_are_errors() {
    let s3 = S3Server::start();
    let store = S3ObjectStore::new(S3Config::new(&s3.endpoint, ACCESS, "wrong-secret").bucket("avto-creds"));
    let e = store.init().await.expect_err("a wrong secret is refused");
    assert!(e.to_string().contains("S3"), "{e}");

    // Partly configured S3 stops the orchestrator at start-up, naming what is missing.
    let vars = [("S3_ENDPOINT_URL", s3.endpoint.as_str()), ("S3_ACCESS_KEY", ACCESS)];
    let e = Config::from_lookup(&|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())).unwrap_err();
    assert!(e.to_string().contains("S3_SECRET_KEY") && e.to_string().contains("partly configured"), "{e}");
    let e =
        PayloadOffload::from_lookup(&|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())).unwrap_err();
    assert!(matches!(e, WorkerError::Config(m) if m.contains("S3_SECRET_KEY")));
}

// ---------------------------------------------------------------------------------------------
// the orchestrator with S3

async fn s3_server(s3: &S3Server, bucket: &str, extra: &[(&str, &str)]) -> Server {
    let mut vars = s3.env(bucket);
    vars.extend_from_slice(extra);
    let cfg = test_config_with(&vars);
    assert!(cfg.s3.is_some(), "S3 is configured from the environment");
    Server::with_config(avto_examples::all(), cfg).await
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn put_content(base: &str, token: &str, job: &str, name: &str, body: Vec<u8>) -> (u16, Value) {
    let r = reqwest::Client::new()
        .put(format!("{base}/api/v1/jobs/{job}/files/content/{name}"))
        .header("X-Client-Token", token)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn wait_files_gone(store: &S3ObjectStore, bucket: &str, job: &str) {
    let prefix = format!("jobs/{job}/");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = store.list_in(bucket, &prefix).await.unwrap();
        if left.is_empty() {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "job files not cleaned up: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Recipe 12a, fast path, over HTTP: create, upload config.json through the streaming endpoint,
/// signal, the handler reads it and writes result.txt; the files go when the job ends.
#[tokio::test]
async fn recipe_12a_fast_path_and_cleanup() {
    let s3 = S3Server::start();
    let b = bucket("r12a");
    let server = s3_server(&s3, &b, &[]).await;
    let c = server.client();
    let store = S3ObjectStore::new(s3.config(&b));

    let id = c.create("/api/v1/jobs/s3_ops", json!({})).await;
    let job = c.wait_for(&id, &["waiting_for_human"], T).await;
    assert_eq!(job["current_state"], "awaiting_upload");
    // The bucket was created at start-up.
    assert!(store.list_in(&b, "").await.is_ok());

    let (status, body) =
        put_content(&server.base, CLIENT_TOKEN, &id, "config.json", br#"{"mode":"fast"}"#.to_vec()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "uploaded");
    assert_eq!(body["s3_uri"], format!("s3://{b}/jobs/{id}/config.json"));

    // While the job waits, its files are there; capture result.txt before the job ends by
    // watching the terminal state, then check the cleanup.
    let files = TaskFiles::new(id.clone(), Arc::new(store.clone()));
    assert_eq!(files.list().await.unwrap(), ["config.json"]);
    let (status, body) = c.post(&format!("/api/v1/jobs/{id}/approval"), &json!({"decision": "uploaded"})).await;
    assert_eq!(status, 200, "{body}");
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(job["status"], "finished", "{job}");
    let path: Vec<&str> = job["path"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(path.contains(&"fast_processing"), "fast path taken: {path:?}");
    wait_files_gone(&store, &b, &id).await;

    // A job without config.json ends in config_missing (failed), files or not.
    let id2 = c.create("/api/v1/jobs/s3_ops", json!({})).await;
    c.wait_for(&id2, &["waiting_for_human"], T).await;
    c.post(&format!("/api/v1/jobs/{id2}/approval"), &json!({"decision": "uploaded"})).await;
    let job = c.wait_terminal(&id2, T).await;
    assert_eq!((job["status"].as_str(), job["current_state"].as_str()), (Some("failed"), Some("config_missing")));
    server.stop().await;
}

/// With `S3_AUTO_CLEANUP=false` the files outlive the job (and the handler's result.txt is there).
#[tokio::test]
async fn files_stay_without_auto_cleanup() {
    let s3 = S3Server::start();
    let b = bucket("keep");
    let server = s3_server(&s3, &b, &[("S3_AUTO_CLEANUP", "false")]).await;
    let c = server.client();
    let store = S3ObjectStore::new(s3.config(&b));
    let id = c.create("/api/v1/jobs/s3_ops", json!({})).await;
    c.wait_for(&id, &["waiting_for_human"], T).await;
    let (status, _) = put_content(&server.base, CLIENT_TOKEN, &id, "config.json", br#"{"mode":"fast"}"#.to_vec()).await;
    assert_eq!(status, 200);
    c.post(&format!("/api/v1/jobs/{id}/approval"), &json!({"decision": "uploaded"})).await;
    assert_eq!(c.wait_terminal(&id, T).await["status"], "finished");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let files = TaskFiles::new(id.clone(), Arc::new(store));
    assert_eq!(files.list().await.unwrap(), ["config.json", "result.txt"]);
    assert_eq!(files.read_text("result.txt").await.unwrap(), "Done fast.");
    server.stop().await;
}

/// The three client endpoints: presigned upload URL, streaming upload, download redirect; their
/// validation, ownership and size limit.
#[tokio::test]
async fn client_file_endpoints() {
    let s3 = S3Server::start();
    let b = bucket("api");
    let dir = temp_dir("clients");
    let clients = dir.join("clients.toml");
    std::fs::write(&clients, "[intruder]\ntoken = \"intruder-token\"\n").unwrap();
    let limit = (3 * PART_SIZE).to_string();
    let server = s3_server(
        &s3,
        &b,
        &[("CLIENTS_CONFIG_PATH", clients.to_str().unwrap()), ("S3_MAX_UPLOAD_BYTES", limit.as_str())],
    )
    .await;
    let c = server.client();
    let store = S3ObjectStore::new(s3.config(&b));
    let id = c.create("/api/v1/jobs/s3_ops", json!({})).await;
    let files = TaskFiles::new(id.clone(), Arc::new(store.clone()));

    // presigned PUT
    let (status, body) =
        c.get(&format!("/api/v1/jobs/{id}/files/upload?filename=inputs/data.bin&expires_in=120")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["method"].as_str(), body["expires_in"].as_i64()), (Some("PUT"), Some(120)));
    let url = body["url"].as_str().unwrap();
    assert!(url.starts_with(&s3.endpoint) && url.contains(&format!("/{b}/jobs/{id}/inputs/data.bin?")), "{url}");
    let data = body_of(100_000, 1);
    let r = reqwest::Client::new().put(url).body(data.clone()).send().await.unwrap();
    assert!(r.status().is_success(), "PUT to the presigned URL: {}", r.status());
    assert!(files.read_bytes("inputs/data.bin").await.unwrap() == data);
    let (status, body) = c.get(&format!("/api/v1/jobs/{id}/files/upload?filename=x.txt")).await;
    assert_eq!((status, body["expires_in"].as_i64()), (200, Some(3600)), "default validity");

    // streaming upload, larger than one part (multipart through the orchestrator)
    let big = body_of(PART_SIZE + PART_SIZE / 2, 9);
    let (status, body) = put_content(&server.base, CLIENT_TOKEN, &id, "big/video.mp4", big.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "uploaded", "s3_uri": format!("s3://{b}/jobs/{id}/big/video.mp4"), "size": big.len()})
    );
    assert!(files.read_bytes("big/video.mp4").await.unwrap() == big);
    // over S3_MAX_UPLOAD_BYTES: 413, nothing stored
    let (status, body) = put_content(&server.base, CLIENT_TOKEN, &id, "huge.bin", vec![0u8; 3 * PART_SIZE + 1]).await;
    assert_eq!(status, 413, "{body}");
    assert!(body["error"].as_str().unwrap().contains("S3_MAX_UPLOAD_BYTES"));
    assert!(!files.list().await.unwrap().contains(&"huge.bin".to_owned()));

    // download: 302 to a presigned GET valid for 60 s
    let http = no_redirects();
    let r = http
        .get(format!("{}/api/v1/jobs/{id}/files/download/inputs/data.bin", server.base))
        .header("X-Client-Token", CLIENT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.contains("X-Amz-Expires=60"), "{location}");
    let got = reqwest::get(&location).await.unwrap();
    assert_eq!(got.status(), 200);
    assert!(got.bytes().await.unwrap().as_ref() == data.as_slice());

    // bad file names: 400 (percent-encoded so the client sends them as they are)
    let enc = ["..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "a%2F..%2F..%2Fb", "a%2F%2Fb", "a%5Cb"];
    for name in enc {
        let (status, body) = put_content(&server.base, CLIENT_TOKEN, &id, name, b"x".to_vec()).await;
        assert_eq!(status, 400, "PUT {name}: {body}");
        let (status, body) = c.get(&format!("/api/v1/jobs/{id}/files/upload?filename={name}")).await;
        assert_eq!(status, 400, "upload URL {name}: {body}");
        let (status, _) = c.get(&format!("/api/v1/jobs/{id}/files/download/{name}")).await;
        assert_eq!(status, 400, "download {name}");
    }
    let (status, body) = c.get(&format!("/api/v1/jobs/{id}/files/upload?filename=")).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("filename is required")));
    let (status, _) = c.get(&format!("/api/v1/jobs/{id}/files/upload")).await;
    assert_eq!(status, 400);
    let (status, body) = c.get(&format!("/api/v1/jobs/{id}/files/upload?filename=a.txt&expires_in=soon")).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("expires_in must be an integer")));
    let (status, _) = c.get(&format!("/api/v1/jobs/{id}/files/upload?filename=a.txt&expires_in=0")).await;
    assert_eq!(status, 400);

    // ownership: another client's job and unknown jobs are 404, nothing is written
    let intruder = c.with_token("intruder-token");
    let (status, _) = intruder.get(&format!("/api/v1/jobs/{id}/files/upload?filename=evil.txt")).await;
    assert_eq!(status, 404);
    let (status, _) = put_content(&server.base, "intruder-token", &id, "evil.txt", b"x".to_vec()).await;
    assert_eq!(status, 404);
    let r = http
        .get(format!("{}/api/v1/jobs/{id}/files/download/inputs/data.bin", server.base))
        .header("X-Client-Token", "intruder-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let unknown = uuid::Uuid::new_v4();
    let (status, _) = c.get(&format!("/api/v1/jobs/{unknown}/files/upload?filename=a.txt")).await;
    assert_eq!(status, 404);
    assert!(!files.list().await.unwrap().contains(&"evil.txt".to_owned()));
    let (status, _) = c.get(&format!("/api/v1/jobs/{id}/files/upload?filename=a.txt")).await;
    assert_eq!(status, 200);
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/jobs/{id}/files/upload?filename=a.txt", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no token");

    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Without S3 every file endpoint answers 501 `{"error": "S3 support is not enabled"}` (after
/// the ownership check), and the recipe's handler sees no `TaskFiles`.
#[tokio::test]
async fn file_endpoints_answer_501_without_s3() {
    let server = Server::start(avto_examples::all()).await;
    let c = server.client();
    let id = c.create("/api/v1/jobs/s3_ops", json!({})).await;
    let want = json!({"error": "S3 support is not enabled"});
    let (status, body) = c.get(&format!("/api/v1/jobs/{id}/files/upload?filename=a.txt")).await;
    assert_eq!((status, &body), (501, &want));
    let (status, body) = put_content(&server.base, CLIENT_TOKEN, &id, "a.txt", b"x".to_vec()).await;
    assert_eq!((status, &body), (501, &want));
    let r = no_redirects()
        .get(format!("{}/api/v1/jobs/{id}/files/download/a.txt", server.base))
        .header("X-Client-Token", CLIENT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 501);
    assert_eq!(r.json::<Value>().await.unwrap(), want);
    let (status, _) = c.get(&format!("/api/v1/jobs/{}/files/upload?filename=a.txt", uuid::Uuid::new_v4())).await;
    assert_eq!(status, 404, "ownership first");

    c.wait_for(&id, &["waiting_for_human"], T).await;
    c.post(&format!("/api/v1/jobs/{id}/approval"), &json!({"decision": "uploaded"})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(
        (job["status"].as_str(), job["error_message"].as_str()),
        (Some("failed"), Some("file storage is not configured"))
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// the Rust worker SDK with S3 offload

struct TestWorker {
    stop: ShutdownHandle,
    join: tokio::task::JoinHandle<Result<(), WorkerError>>,
}

impl TestWorker {
    fn start(builder: WorkerBuilder) -> TestWorker {
        let worker = builder.build().expect("the worker builds");
        let stop = worker.shutdown_handle();
        let join = tokio::spawn(worker.run_until(std::future::pending()));
        TestWorker { stop, join }
    }

    async fn stop(self) {
        self.stop.shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(20), self.join).await;
    }
}

fn worker_builder(base: &str, id: &str, offload: PayloadOffload) -> WorkerBuilder {
    RustWorker::builder(id).orchestrator_url(base).s3(Some(offload))
}

/// Waits until `worker_id` is registered and live; returns its record from `GET /api/v1/workers`.
async fn wait_worker(c: &ApiClient, worker_id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let (status, body) = c.admin(reqwest::Method::GET, "/api/v1/workers", None).await;
        assert_eq!(status, 200, "workers: {body}");
        if let Some(w) = body.as_array().and_then(|l| l.iter().find(|w| w["worker_id"] == worker_id)) {
            return w.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "worker {worker_id} did not register");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every string of a JSON value.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

fn dir_is_empty(p: &Path) -> bool {
    std::fs::read_dir(p).map(|mut d| d.next().is_none()).unwrap_or(true)
}

/// Recipe 12b: the client names an object it put in S3; the worker's SDK downloads it to a local
/// path, the handler writes its output next to it and returns that path, the SDK uploads it to
/// `s3://{bucket}/{job_id}/processed_movie.mp4` and the job's result carries the URI. Folders
/// go both ways, and the task directory is gone afterwards.
#[tokio::test]
async fn recipe_12b_worker_downloads_params_and_uploads_results() {
    let s3 = S3Server::start();
    let b = bucket("r12b");
    let server = s3_server(&s3, &b, &[]).await;
    let c = server.client();
    let store = S3ObjectStore::new(s3.config(&b));
    let video = body_of(PART_SIZE + 1000, 5);
    store.put_in(&b, "raw_videos/movie.mp4", video.clone()).await.unwrap();

    let task_files = temp_dir("task-files");
    let offload = PayloadOffload::new(s3.config(&b), &task_files);
    let hash = offload.config().config_hash();
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen2 = seen.clone();
    let worker = TestWorker::start(worker_builder(&server.base, "s3-video-worker", offload).task(
        "process_video_from_s3",
        move |p: Value, task: TaskHandle| {
            let seen = seen2.clone();
            async move {
                let local = PathBuf::from(p["video_path"].as_str().unwrap_or_default());
                seen.lock().unwrap().push(local.display().to_string());
                // The handle sees the local paths too.
                assert_eq!(task.params_raw()["video_path"], p["video_path"]);
                let Ok(bytes) = tokio::fs::read(&local).await else {
                    return TaskOutcome::failure("INVALID_INPUT_ERROR", "Input file not found");
                };
                let out = local.with_file_name(format!("processed_{}", local.file_name().unwrap().to_string_lossy()));
                let mut processed = bytes.clone();
                processed.reverse();
                tokio::fs::write(&out, &processed).await.unwrap();
                // a folder of thumbnails, and a path outside the task directory that must stay as is
                let thumbs = local.with_file_name("thumbs");
                tokio::fs::create_dir_all(thumbs.join("small")).await.unwrap();
                tokio::fs::write(thumbs.join("t1.jpg"), b"t1").await.unwrap();
                tokio::fs::write(thumbs.join("small/t2.jpg"), b"t2").await.unwrap();
                TaskOutcome::success(json!({
                    "processed_video_path": out,
                    "thumbnails": thumbs,
                    "size": bytes.len(),
                    "outside": "/etc/hostname",
                }))
            }
        },
    ));
    let rec = wait_worker(&c, "s3-video-worker").await;
    assert_eq!(rec["capabilities"]["s3_config_hash"], hash, "the worker reports its S3 config hash");

    let id = c.create("/api/v1/jobs/s3_video", json!({"s3_uri": format!("s3://{b}/raw_videos/movie.mp4")})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(job["status"], "finished", "{job}");

    // the handler got a local path in TASK_FILES_DIR/{task_id}/
    let local = seen.lock().unwrap()[0].clone();
    assert!(local.starts_with(task_files.to_str().unwrap()) && local.ends_with("/movie.mp4"), "{local}");
    // the result names the uploaded files
    let mut all = Vec::new();
    strings(&job, &mut all);
    let processed_uri = format!("s3://{b}/{id}/processed_movie.mp4");
    let thumbs_uri = format!("s3://{b}/{id}/thumbs/");
    assert!(all.contains(&processed_uri), "{processed_uri} in {job}");
    assert!(all.contains(&thumbs_uri), "{thumbs_uri} in {job}");
    assert!(all.contains(&"/etc/hostname".to_owned()), "paths outside the task directory are left alone");
    // and the job keeps what the worker's result said it uploaded (`data_metadata`)
    let meta = &job["data_metadata"];
    assert_eq!(meta["processed_video_path"]["uri"], processed_uri.as_str(), "{job}");
    assert_eq!(meta["processed_video_path"]["size"], video.len(), "{job}");
    assert_eq!(
        (meta["thumbnails"]["uri"].as_str(), meta["thumbnails"]["size"].as_u64()),
        (Some(thumbs_uri.as_str()), Some(4))
    );
    assert!(meta.get("outside").is_none(), "{job}");
    let mut expected = video.clone();
    expected.reverse();
    assert!(store.get_in(&b, &format!("{id}/processed_movie.mp4")).await.unwrap() == expected);
    assert_eq!(
        store.list_in(&b, &format!("{id}/thumbs/")).await.unwrap(),
        [format!("{id}/thumbs/small/t2.jpg"), format!("{id}/thumbs/t1.jpg")]
    );
    // and the task directory is gone
    assert!(
        dir_is_empty(&task_files),
        "task directory left behind: {:?}",
        std::fs::read_dir(&task_files).unwrap().collect::<Vec<_>>()
    );

    // A missing input object fails the task with INVALID_INPUT_ERROR (the job fails).
    let id = c.create("/api/v1/jobs/s3_video", json!({"s3_uri": format!("s3://{b}/raw_videos/missing.mp4")})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert!(job.to_string().contains("not found in S3"), "{job}");
    assert!(dir_is_empty(&task_files));

    worker.stop().await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(task_files);
}

/// Recipe 12a, deep path: the handler passes `files.uri("config.json")` to a Rust worker, whose
/// SDK downloads it; the worker's report is uploaded and its URI lands in the
/// job; the job's own files are cleaned up at the end.
#[tokio::test]
async fn recipe_12a_deep_path_with_a_rust_worker() {
    let s3 = S3Server::start();
    let b = bucket("deep");
    let server = s3_server(&s3, &b, &[]).await;
    let c = server.client();
    let store = S3ObjectStore::new(s3.config(&b));
    let task_files = temp_dir("deep-files");
    let worker = TestWorker::start(
        worker_builder(&server.base, "deep-worker", PayloadOffload::new(s3.config(&b), &task_files)).task(
            "deep_analysis",
            |p: Value, _task: TaskHandle| async move {
                let config = PathBuf::from(p["config"].as_str().unwrap_or_default());
                let Ok(text) = tokio::fs::read_to_string(&config).await else {
                    return TaskOutcome::failure("INVALID_INPUT_ERROR", format!("no config at {}", config.display()));
                };
                let cfg: Value = serde_json::from_str(&text).unwrap();
                let report = config.with_file_name("report.txt");
                tokio::fs::write(&report, format!("deep analysis, depth {}", cfg["depth"])).await.unwrap();
                TaskOutcome::success(json!({"report": report, "mode": cfg["mode"]}))
            },
        ),
    );
    wait_worker(&c, "deep-worker").await;

    let id = c.create("/api/v1/jobs/s3_ops", json!({})).await;
    c.wait_for(&id, &["waiting_for_human"], T).await;
    // this time through the presigned URL
    let (status, body) = c.get(&format!("/api/v1/jobs/{id}/files/upload?filename=config.json")).await;
    assert_eq!(status, 200, "{body}");
    let r = reqwest::Client::new()
        .put(body["url"].as_str().unwrap())
        .body(r#"{"mode": "deep", "depth": 7}"#)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    c.post(&format!("/api/v1/jobs/{id}/approval"), &json!({"decision": "uploaded"})).await;
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(job["status"], "finished", "{job}");
    let path: Vec<&str> = job["path"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(path.contains(&"deep_processing"), "{path:?}");
    let report_uri = format!("s3://{b}/{id}/report.txt");
    let mut all = Vec::new();
    strings(&job, &mut all);
    assert!(all.contains(&report_uri), "{report_uri} in {job}");
    assert_eq!(store.get_in(&b, &format!("{id}/report.txt")).await.unwrap(), b"deep analysis, depth 7");
    // The job's own folder (config.json) is cleaned up; the worker's outputs stay.
    wait_files_gone(&store, &b, &id).await;
    assert!(dir_is_empty(&task_files));

    worker.stop().await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(task_files);
}

/// The offload steps on their own: folder URIs (with their layout), files from other buckets,
/// the same URI twice, a missing object; then a returned folder and file are uploaded.
#[tokio::test]
async fn offload_stages_folders_and_publishes_outputs() {
    let s3 = S3Server::start();
    let b = bucket("stage");
    let other = bucket("other");
    let store = started_store(&s3, &b).await;
    store.ensure_bucket(&other).await.unwrap();
    store.put_in(&b, "datasets/set1/a.csv", b"a".to_vec()).await.unwrap();
    store.put_in(&b, "datasets/set1/nested/b.csv", b"bb".to_vec()).await.unwrap();
    store.put_in(&b, "datasets/set10/not-in-set1.csv", b"x".to_vec()).await.unwrap();
    store.put_in(&other, "models/m.bin", b"model".to_vec()).await.unwrap();

    let dir = temp_dir("stage");
    let offload = PayloadOffload::new(s3.config(&b), &dir);
    let mut params = json!({
        "dataset": format!("s3://{b}/datasets/set1/"),
        "model": [format!("s3://{other}/models/m.bin"), {"again": format!("s3://{other}/models/m.bin")}],
        "note": "not a uri",
    });
    offload.stage("task-1", &mut params).await.expect("staged");
    let task_dir = dir.join("task-1");
    assert_eq!(params["dataset"], task_dir.join("set1").display().to_string());
    assert_eq!(params["model"][0], task_dir.join("m.bin").display().to_string());
    assert_eq!(params["model"][1]["again"], params["model"][0]);
    assert_eq!(params["note"], "not a uri");
    assert_eq!(std::fs::read_to_string(task_dir.join("set1/a.csv")).unwrap(), "a");
    assert_eq!(std::fs::read_to_string(task_dir.join("set1/nested/b.csv")).unwrap(), "bb");
    assert!(!task_dir.join("set1/not-in-set1.csv").exists(), "set10 is not inside set1/");
    assert_eq!(std::fs::read(task_dir.join("m.bin")).unwrap(), b"model");

    let mut missing = json!({"x": format!("s3://{b}/nope.bin")});
    let failed = offload.stage("task-2", &mut missing).await.expect_err("missing object");
    assert_eq!(failed.error_info().unwrap().code, "INVALID_INPUT_ERROR");
    let mut bad = json!({"x": format!("s3://{b}/dir/..")});
    let failed = offload.stage("task-3", &mut bad).await.expect_err("unsafe name");
    assert_eq!(failed.error_info().unwrap().code, "INVALID_INPUT_ERROR");

    // outputs: a folder and a file of the task directory; other paths stay
    std::fs::create_dir_all(task_dir.join("out/deep")).unwrap();
    std::fs::write(task_dir.join("out/deep/r.txt"), "r").unwrap();
    let mut outcome = TaskOutcome::success(json!({
        "folder": task_dir.join("out"),
        "file": task_dir.join("m.bin"),
        "list": [task_dir.join("m.bin")],
        "missing": task_dir.join("never-written.txt"),
        "escape": format!("{}/../task-1-other", task_dir.display()),
        "relative": "m.bin",
    }));
    offload.publish("job-9", "task-1", &mut outcome).await;
    let data = outcome.data().clone();
    assert_eq!(data["folder"], format!("s3://{b}/job-9/out/"));
    assert_eq!(data["file"], format!("s3://{b}/job-9/m.bin"));
    assert_eq!(data["list"][0], data["file"]);
    assert_eq!(data["missing"], task_dir.join("never-written.txt").display().to_string());
    assert_eq!(data["relative"], "m.bin");
    // What was uploaded, by the key path of its URI (the result's `data_metadata`).
    let meta = outcome.data_metadata();
    assert_eq!(meta.keys().collect::<Vec<_>>(), ["file", "folder", "list[0]"], "{meta:?}");
    assert_eq!((meta["file"].uri.as_str(), meta["file"].size), (data["file"].as_str().unwrap(), 5));
    assert!(meta["file"].etag.as_deref().is_some_and(|e| !e.is_empty() && !e.contains('"')), "{meta:?}");
    assert_eq!(meta["list[0]"], meta["file"]);
    assert_eq!((meta["folder"].uri.as_str(), meta["folder"].size), (data["folder"].as_str().unwrap(), 1));
    assert_eq!(store.get_in(&b, "job-9/out/deep/r.txt").await.unwrap(), b"r");
    assert_eq!(store.get_in(&b, "job-9/m.bin").await.unwrap(), b"model");

    offload.clear("task-1").await;
    assert!(!task_dir.exists());
    let _ = std::fs::remove_dir_all(dir);
}
