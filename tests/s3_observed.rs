//! What the orchestrator tells about S3 (issue #16 items 6, 8, 9): every operation on a job's
//! files (a handler's, the client's uploads and download links, the cleanup at the end) is an
//! `s3_operation` row of the job's history (spec §6.3) and is counted in `/metrics`
//! (`avto_s3_operations_total`, spec §10.2); the job's local directory (`TASK_FILES_DIR`) goes
//! with its files; and a worker whose S3 configuration differs from the orchestrator's is told at
//! registration (spec §3.4, §9.1). Once with a local-directory store, once against s3s-fs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use avto::files::LocalObjectStore;
use avto::history::MemoryHistory;
use avto::prelude::*;
use avto::protocol::sign::MessageKind;
use avto::server::Orchestrator;
use avto_tests::s3s::{bucket, temp_dir, S3Server, ACCESS};
use avto_tests::{test_config_with, ApiClient, RawWorker, Server, ADMIN_TOKEN, CLIENT_TOKEN};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

/// A handler run that writes, reads (one file that is missing), stages a local file in the job's
/// directory and uploads that directory; then, after the approval, one that reads the file the
/// client uploaded.
#[avto::blueprint(name = "files_flow", api_version = "v1", api_endpoint = "jobs/files_flow")]
mod files_flow {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(files: &TaskFiles, actions: &mut Actions) -> Result<(), String> {
        files.write_text("notes.txt", "hello").await.map_err(|e| e.to_string())?;
        let text = files.read_text("notes.txt").await.map_err(|e| e.to_string())?;
        assert!(files.read_text("missing.txt").await.is_err());
        let local = files.path("local/a.txt").await.map_err(|e| e.to_string())?;
        tokio::fs::write(&local, text).await.map_err(|e| e.to_string())?;
        files.upload(local.parent().unwrap(), "up").await.map_err(|e| e.to_string())?;
        actions.update_context("local_dir", files.local_dir().display().to_string());
        actions.await_human_approval().transitions([("approved", "finish")]);
        Ok(())
    }

    #[handler(state = "finish")]
    async fn finish(files: &TaskFiles, actions: &mut Actions) -> Result<(), String> {
        let from_client = files.read_text("client.txt").await.map_err(|e| e.to_string())?;
        actions.update_context("from_client", from_client);
        actions.transition_to("done");
        Ok(())
    }

    #[handler(state = "done", end)]
    async fn done() {}
}

/// A job that touches no file.
#[avto::blueprint(name = "no_files_flow", api_version = "v1", api_endpoint = "jobs/no_files")]
mod no_files_flow {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(actions: &mut Actions) {
        actions.transition_to("done");
    }

    #[handler(state = "done", end)]
    async fn done() {}
}

async fn history(c: &ApiClient, id: &str) -> Vec<Value> {
    let (status, rows) = c.get(&format!("/api/v1/jobs/{id}/history")).await;
    assert_eq!(status, 200, "{rows}");
    rows.as_array().unwrap().clone()
}

/// The rows once the cleanup's has been written (it follows the job's end).
async fn history_after_cleanup(c: &ApiClient, id: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let rows = history(c, id).await;
        if rows.iter().any(|r| r["details"]["operation"] == "cleanup") {
            return rows;
        }
        assert!(tokio::time::Instant::now() < deadline, "no cleanup row: {rows:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `event_type` or `s3_operation:{operation}:{status}`.
fn kind(row: &Value) -> String {
    match row["event_type"].as_str().unwrap() {
        "s3_operation" => format!("s3:{}:{}", row["details"]["operation"].as_str().unwrap(), row["details"]["status"]),
        other => other.to_owned(),
    }
    .replace('"', "")
}

async fn s3_metrics(base: &str) -> BTreeMap<String, f64> {
    let r = reqwest::Client::new().get(format!("{base}/metrics")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text()
        .await
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("avto_s3_operations_total{"))
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.trim_start_matches("avto_s3_operations_total").to_owned(), v.parse().unwrap())
        })
        .collect()
}

/// The job's run through the API; `presign`: the store makes presigned URLs (S3), so the client
/// also asks for an upload URL and a download link.
async fn file_operations_are_recorded(s: &Server, files_dir: &Path, uri_prefix: &str, presign: bool) {
    let c = s.client();
    let id = c.create("/api/v1/jobs/files_flow", json!({})).await;
    let job = c.wait_for(&id, &["waiting_for_human"], T).await;
    let local_dir = PathBuf::from(job["state_history"]["local_dir"].as_str().unwrap());
    assert_eq!(local_dir, files_dir.join(&id), "TASK_FILES_DIR/{{job_id}}");
    assert_eq!(std::fs::read_to_string(local_dir.join("local/a.txt")).unwrap(), "hello");

    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let files = format!("{}/api/v1/jobs/{id}/files", s.base);
    if presign {
        let r = http.get(format!("{files}/upload?filename=later.txt")).header("X-Client-Token", CLIENT_TOKEN);
        assert_eq!(r.send().await.unwrap().status(), 200);
    }
    let r = http.put(format!("{files}/content/client.txt")).header("X-Client-Token", CLIENT_TOKEN).body("from you");
    assert_eq!(r.send().await.unwrap().status(), 200);
    if presign {
        let r = http.get(format!("{files}/download/client.txt")).header("X-Client-Token", CLIENT_TOKEN);
        assert_eq!(r.send().await.unwrap().status(), 302);
    }
    let (status, body) = c.post(&format!("/api/v1/jobs/{id}/approval"), &json!({"decision": "approved"})).await;
    assert_eq!(status, 200, "{body}");
    let job = c.wait_terminal(&id, T).await;
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["state_history"]["from_client"], "from you");

    let rows = history_after_cleanup(&c, &id).await;
    let kinds: Vec<String> = rows.iter().map(kind).collect();
    let mut want = vec![
        "job_created",
        "state_started",
        "s3:upload:success",
        "s3:download:success",
        "s3:download:error",
        "s3:upload_dir:success",
        "approval_requested",
        "state_finished",
    ];
    if presign {
        want.push("s3:presign:success");
    }
    want.push("s3:upload:success");
    if presign {
        want.push("s3:presign:success");
    }
    want.extend([
        "state_started",
        "s3:download:success",
        "state_finished",
        "state_started",
        "state_finished",
        "job_completed",
        "s3:cleanup:success",
    ]);
    assert_eq!(kinds, want, "{rows:#?}");
    let s3_rows: Vec<&Value> = rows.iter().filter(|r| r["event_type"] == "s3_operation").collect();
    let d = |i: usize| &s3_rows[i]["details"];
    assert_eq!(d(0)["s3_uri"], format!("{uri_prefix}jobs/{id}/notes.txt"));
    assert_eq!(d(0)["size"], 5);
    assert_eq!(d(1)["size"], 5);
    assert!(d(2)["error"].as_str().unwrap().contains("missing.txt"), "{}", d(2));
    assert_eq!(d(3)["s3_uri"], format!("{uri_prefix}jobs/{id}/up/"));
    assert_eq!(d(3)["file_count"], 1);
    assert_eq!(d(3)["local_path"], local_dir.join("local").display().to_string());
    let client_upload =
        s3_rows.iter().find(|r| r["details"]["s3_uri"].as_str().unwrap().ends_with("/client.txt")).unwrap();
    assert_eq!(client_upload["details"]["size"], 8);
    assert_eq!(client_upload["client"], "default", "the row names the job's client: {client_upload}");
    if presign {
        assert_eq!(d(4)["method"], "PUT");
        assert_eq!(d(6)["method"], "GET");
    }
    let cleanup = s3_rows.last().unwrap();
    assert_eq!(cleanup["details"]["s3_uri"], format!("{uri_prefix}jobs/{id}/"));
    assert_eq!(cleanup["details"]["file_count"], 3, "notes.txt, up/a.txt, client.txt");
    assert_eq!(cleanup["status"], "finished");
    assert!(!local_dir.exists(), "the job's local directory goes with its files");

    let m = s3_metrics(&s.base).await;
    let n = |op: &str, status: &str| m.get(&format!("{{operation=\"{op}\",status=\"{status}\"}}")).copied();
    assert_eq!(n("upload", "success"), Some(2.0), "{m:?}");
    assert_eq!(n("download", "success"), Some(2.0), "{m:?}");
    assert_eq!(n("download", "error"), Some(1.0), "{m:?}");
    assert_eq!(n("upload_dir", "success"), Some(1.0), "{m:?}");
    assert_eq!(n("cleanup", "success"), Some(1.0), "{m:?}");
    assert_eq!(n("presign", "success"), presign.then_some(2.0), "{m:?}");
}

fn server_vars(files_dir: &Path) -> Vec<(&'static str, String)> {
    vec![("TASK_FILES_DIR", files_dir.display().to_string())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_operations_are_history_rows_with_a_local_store() {
    let root = temp_dir("store");
    let files_dir = temp_dir("jobs");
    let vars = server_vars(&files_dir);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = Server::with_builder(
        Orchestrator::builder()
            .blueprints([files_flow::blueprint(), no_files_flow::blueprint()])
            .config(test_config_with(&vars))
            .object_store(Arc::new(LocalObjectStore::new(&root)))
            .history(Arc::new(MemoryHistory::new())),
    )
    .await;
    file_operations_are_recorded(&s, &files_dir, &format!("file://{}/", root.display()), false).await;

    // The end of a job without files costs a listing (counted) but writes no row.
    let c = s.client();
    let id = c.create("/api/v1/jobs/no_files", json!({})).await;
    assert_eq!(c.wait_terminal(&id, T).await["status"], "finished");
    let deadline = tokio::time::Instant::now() + T;
    while s3_metrics(&s.base).await.get("{operation=\"cleanup\",status=\"success\"}") != Some(&2.0) {
        assert!(tokio::time::Instant::now() < deadline, "the second cleanup was not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(s.core.history().unwrap().flush(T).await);
    let kinds: Vec<String> = history(&c, &id).await.iter().map(kind).collect();
    assert_eq!(
        kinds,
        ["job_created", "state_started", "state_finished", "state_started", "state_finished", "job_completed"]
    );
    let _ = std::fs::remove_dir_all(root);
    let _ = std::fs::remove_dir_all(files_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_operations_on_s3_are_history_rows() {
    let s3 = S3Server::start();
    let b = bucket("observed");
    let files_dir = temp_dir("jobs");
    let mut vars: Vec<(&str, String)> = s3.env(&b).into_iter().map(|(k, v)| (k, v.to_owned())).collect();
    vars.extend(server_vars(&files_dir));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = Server::with_builder(
        Orchestrator::builder()
            .blueprint(files_flow::blueprint())
            .config(test_config_with(&vars))
            .history(Arc::new(MemoryHistory::new())),
    )
    .await;
    file_operations_are_recorded(&s, &files_dir, &format!("s3://{b}/"), true).await;
    let _ = std::fs::remove_dir_all(files_dir);
}

/// Spec §3.4 / §9.1 (item 93): a worker whose `capabilities.s3_config_hash` is not the
/// orchestrator's (sha256 of `endpoint|access_key|bucket`, 16 hex) is registered and told in the
/// answer's `warning`, which both SDKs log; the same hash, or none, gets no warning.
#[tokio::test]
async fn a_different_s3_configuration_is_told_at_registration() {
    let s3 = S3Server::start();
    let b = bucket("hash");
    let s = Server::with_config([files_flow::blueprint()], test_config_with(&s3.env(&b))).await;
    let ours = avto::protocol::s3_config_hash(Some(&s3.endpoint), Some(ACCESS), Some(&b)).unwrap();
    let other_bucket = avto::protocol::s3_config_hash(Some(&s3.endpoint), Some(ACCESS), Some("elsewhere")).unwrap();
    let register = |id: &'static str, hash: Option<&str>| {
        let w = RawWorker::new(&s.base, id, &["x"]);
        let mut caps = json!({"cost_per_skill": {}, "extra": {}});
        if let Some(h) = hash {
            caps["s3_config_hash"] = json!(h);
        }
        let body =
            w.signed(json!({"worker_id": id, "worker_type": "raw", "capabilities": caps}), MessageKind::Registration);
        async move { w.send(reqwest::Method::POST, "/_worker/workers/register", Some(&body)).await }
    };
    let (status, answer) = register("same-s3", Some(&ours)).await;
    assert_eq!((status, answer.get("warning")), (200, None), "{answer}");
    let (status, answer) = register("no-s3", None).await;
    assert_eq!((status, answer.get("warning")), (200, None), "{answer}");
    let (status, answer) = register("other-s3", Some(&other_bucket)).await;
    assert_eq!(status, 200, "a different S3 configuration does not refuse the worker: {answer}");
    assert_eq!(answer["status"], "registered");
    let warning = answer["warning"].as_str().unwrap_or_else(|| panic!("no warning: {answer}"));
    assert!(warning.starts_with("S3 configuration mismatch"), "{warning}");
    assert!(warning.contains(&other_bucket) && warning.contains(&ours), "{warning}");
    s.client().wait_workers(&["same-s3", "no-s3", "other-s3"]).await;
}
