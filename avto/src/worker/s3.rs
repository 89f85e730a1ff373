//! S3 payload offload (features `worker` + `s3`), as the Python SDK does it (recipe 12b):
//!
//! * before a task runs, every string in its `params` that starts with `s3://` is downloaded to
//!   `TASK_FILES_DIR/{task_id}/{basename}` and replaced by that local path; a URI ending in `/`
//!   is a folder, downloaded with its layout below the prefix (keys that would leave the folder are
//!   refused);
//! * after the handler, every string in the returned data that names an existing file or folder
//!   inside `TASK_FILES_DIR/{task_id}` is uploaded to `s3://{S3_DEFAULT_BUCKET}/{job_id}/{name}`
//!   (folders recursively, their URI ending in `/`) and replaced by the URI; the result's
//!   `data_metadata` says what was uploaded (`uri`, `size`, `etag`; a folder: its total size and
//!   the ETag of its last file) by the key path of the URI in the data (`a.b`, `list[0]`);
//! * the task directory is deleted afterwards, whatever the outcome.
//!
//! The handler itself only sees local paths:
//!
//! ```no_run
//! use avto::worker::{errors, TaskHandle, Worker};
//! use serde_json::{json, Value};
//!
//! # async fn main_() -> Result<(), avto::worker::WorkerError> {
//! // S3_ENDPOINT_URL, S3_ACCESS_KEY, S3_SECRET_KEY, S3_DEFAULT_BUCKET, TASK_FILES_DIR from the environment
//! Worker::from_env()?
//!     .task("process_video_from_s3", |p: Value, _task: TaskHandle| async move {
//!         let input = std::path::PathBuf::from(p["video_path"].as_str().unwrap_or_default());
//!         let output = input.with_file_name(format!("processed_{}", input.file_name().unwrap().to_string_lossy()));
//!         tokio::fs::write(&output, b"processed video data").await.map_err(|e| errors::transient(e.to_string()))?;
//!         Ok::<_, avto::worker::TaskError>(json!({"processed_video_path": output}))  // uploaded, replaced by its s3:// URI
//!     })
//!     .build()?
//!     .run()
//!     .await
//! # }
//! ```
//!
//! Configuration: the orchestrator's `S3_*` names (see [`crate::files::s3::S3Config`]) plus
//! `TASK_FILES_DIR` (default `/tmp/payloads`). [`crate::worker::Worker::from_env`] turns offload
//! on when `S3_ENDPOINT_URL` is set; [`crate::worker::WorkerBuilder::s3`] sets it explicitly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::OnceCell;

use super::{TaskOutcome, WorkerError};
use crate::files::s3::{parse_uri, S3Config, S3ObjectStore};
use crate::files::{check_key, FileError};
use crate::protocol::error_codes;
use crate::protocol::wire::FileMetadata;

/// Default of `TASK_FILES_DIR`.
pub const DEFAULT_TASK_FILES_DIR: &str = "/tmp/payloads";

/// The worker's S3 offload: a client for the S3 service and the local task workspace root.
#[derive(Debug, Clone)]
pub struct PayloadOffload {
    store: S3ObjectStore,
    files_dir: PathBuf,
    bucket_ready: Arc<OnceCell<()>>,
}

impl PayloadOffload {
    /// Offload through `cfg`, with task directories under `task_files_dir`.
    pub fn new(cfg: S3Config, task_files_dir: impl Into<PathBuf>) -> Self {
        PayloadOffload {
            store: S3ObjectStore::new(cfg),
            files_dir: task_files_dir.into(),
            bucket_ready: Arc::new(OnceCell::new()),
        }
    }

    /// From the process environment: `Ok(None)` when `S3_ENDPOINT_URL` and the keys are unset.
    pub fn from_env() -> Result<Option<Self>, WorkerError> {
        Self::from_lookup(&|k| std::env::var(k).ok())
    }

    /// From any variable lookup.
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<Self>, WorkerError> {
        let Some(cfg) = S3Config::from_lookup(get).map_err(WorkerError::Config)? else { return Ok(None) };
        let dir =
            get("TASK_FILES_DIR").filter(|d| !d.trim().is_empty()).unwrap_or_else(|| DEFAULT_TASK_FILES_DIR.into());
        Ok(Some(Self::new(cfg, dir)))
    }

    /// The S3 settings.
    pub fn config(&self) -> &S3Config {
        self.store.config()
    }

    /// The S3 client (e.g. to read results back in tests).
    pub fn store(&self) -> &S3ObjectStore {
        &self.store
    }

    /// `TASK_FILES_DIR`.
    pub fn files_dir(&self) -> &Path {
        &self.files_dir
    }

    /// The workspace of one task (`TASK_FILES_DIR/{task_id}`).
    pub fn task_dir(&self, task_id: &str) -> PathBuf {
        // Task ids are UUIDs; anything else is flattened to one safe path segment.
        let safe: String =
            task_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        self.files_dir.join(if safe.is_empty() { "_".into() } else { safe })
    }

    /// Downloads every `s3://` string of `params` into the task directory and replaces it by the
    /// local path. A failure is the task's outcome (`INVALID_INPUT_ERROR` for a missing object or
    /// an unsafe key, `TRANSIENT_ERROR` otherwise).
    pub async fn stage(&self, task_id: &str, params: &mut Value) -> Result<(), TaskOutcome> {
        let dir = self.task_dir(task_id);
        let mut uris = Vec::new();
        collect_strings(params, &mut |s| s.starts_with("s3://"), &mut uris);
        if uris.is_empty() {
            return Ok(());
        }
        let mut local: HashMap<String, String> = HashMap::new();
        for uri in uris {
            if local.contains_key(&uri) {
                continue;
            }
            let path = self.download(&uri, &dir).await.map_err(|e| input_failure(&uri, e))?;
            tracing::debug!(%uri, path = %path.display(), "s3 input downloaded");
            local.insert(uri, path.to_string_lossy().into_owned());
        }
        replace_strings(params, &|s| local.get(s).cloned());
        Ok(())
    }

    async fn download(&self, uri: &str, dir: &Path) -> Result<PathBuf, FileError> {
        let (bucket, key) = parse_uri(uri).ok_or_else(|| FileError::InvalidName(uri.to_owned()))?;
        if let Some(prefix) = key.strip_suffix('/') {
            let name = prefix.rsplit('/').next().unwrap_or("");
            check_key(name)?;
            let target = dir.join(name);
            tokio::fs::create_dir_all(&target).await?;
            for obj in self.store.list_in(bucket, key).await? {
                let rel = &obj[key.len()..];
                if rel.is_empty() || rel.ends_with('/') {
                    continue; // folder markers
                }
                check_key(rel)?; // no `..`, no absolute paths: stays inside the folder
                self.store.download_to(bucket, &obj, &target.join(rel)).await?;
            }
            Ok(target)
        } else {
            let name = key.rsplit('/').next().unwrap_or("");
            check_key(name)?;
            let target = dir.join(name);
            self.store.download_to(bucket, key, &target).await?;
            Ok(target)
        }
    }

    /// Uploads every existing file or folder of the task directory named in the outcome's data to
    /// `s3://{bucket}/{job_id}/...`, replaces the path by the URI and records the upload in the
    /// outcome's [`TaskOutcome::data_metadata`]. An upload failure turns the outcome into a
    /// `TRANSIENT_ERROR` failure (the task can be retried).
    pub async fn publish(&self, job_id: &str, task_id: &str, outcome: &mut TaskOutcome) {
        let Ok(dir) = tokio::fs::canonicalize(self.task_dir(task_id)).await else { return };
        let mut candidates = Vec::new();
        collect_paths(&outcome.data, String::new(), &mut candidates);
        let mut uploaded: HashMap<String, FileMetadata> = HashMap::new();
        for (key_path, path) in candidates {
            if let Some(meta) = uploaded.get(&path) {
                outcome.data_metadata.insert(key_path, meta.clone());
                continue;
            }
            let Ok(real) = tokio::fs::canonicalize(&path).await else { continue };
            if !real.starts_with(&dir) || real == dir {
                continue;
            }
            match self.upload(job_id, &real).await {
                Ok(meta) => {
                    tracing::debug!(path = %path, uri = %meta.uri, "task output uploaded");
                    outcome.data_metadata.insert(key_path, meta.clone());
                    uploaded.insert(path, meta);
                }
                Err(e) => {
                    *outcome = TaskOutcome::failure(
                        error_codes::TRANSIENT_ERROR,
                        format!("could not upload the task output {path} to S3: {e}"),
                    );
                    return;
                }
            }
        }
        replace_strings(&mut outcome.data, &|s| uploaded.get(s).map(|m| m.uri.clone()));
    }

    async fn upload(&self, job_id: &str, path: &Path) -> Result<FileMetadata, FileError> {
        let bucket = self.store.bucket().to_owned();
        self.bucket_ready.get_or_try_init(|| self.store.ensure_bucket(&bucket)).await?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let file = |uri: String, size: u64, etag: Option<String>| FileMetadata {
            uri,
            size: i64::try_from(size).unwrap_or(i64::MAX),
            etag,
            metadata: None,
        };
        if tokio::fs::metadata(path).await?.is_dir() {
            let (mut total, mut last_etag) = (0u64, None);
            let mut stack = vec![path.to_path_buf()];
            while let Some(d) = stack.pop() {
                let mut rd = tokio::fs::read_dir(&d).await?;
                while let Some(entry) = rd.next_entry().await? {
                    let p = entry.path();
                    if entry.file_type().await?.is_dir() {
                        stack.push(p);
                    } else if let Ok(rel) = p.strip_prefix(path) {
                        let key = format!("{job_id}/{name}/{}", rel.to_string_lossy().replace('\\', "/"));
                        let (size, etag) = self.store.upload_file(&bucket, &key, &p).await?;
                        total = total.saturating_add(size);
                        last_etag = etag.or(last_etag);
                    }
                }
            }
            Ok(file(format!("s3://{bucket}/{job_id}/{name}/"), total, last_etag))
        } else {
            let key = format!("{job_id}/{name}");
            let (size, etag) = self.store.upload_file(&bucket, &key, path).await?;
            Ok(file(format!("s3://{bucket}/{key}"), size, etag))
        }
    }

    /// Deletes the task directory.
    pub async fn clear(&self, task_id: &str) {
        match tokio::fs::remove_dir_all(self.task_dir(task_id)).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(task_id, error = %e, "could not delete the task directory"),
        }
    }
}

fn input_failure(uri: &str, e: FileError) -> TaskOutcome {
    match e {
        FileError::NotFound(_) => {
            TaskOutcome::failure(error_codes::INVALID_INPUT_ERROR, format!("input file {uri} not found in S3"))
        }
        FileError::InvalidName(name) => TaskOutcome::failure(
            error_codes::INVALID_INPUT_ERROR,
            format!("refusing to download {uri}: unsafe object name `{name}`"),
        ),
        other => {
            TaskOutcome::failure(error_codes::TRANSIENT_ERROR, format!("could not download {uri} from S3: {other}"))
        }
    }
}

fn collect_strings(v: &Value, keep: &mut dyn FnMut(&str) -> bool, out: &mut Vec<String>) {
    match v {
        Value::String(s) if keep(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| collect_strings(x, keep, out)),
        Value::Object(m) => m.values().for_each(|x| collect_strings(x, keep, out)),
        _ => {}
    }
}

/// The absolute paths among the strings of `v`, with their key paths as the Python SDK writes
/// them (`a.b` for object members, `a[0]` for list items).
fn collect_paths(v: &Value, at: String, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) if Path::new(s).is_absolute() => out.push((at, s.clone())),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| collect_paths(x, format!("{at}[{i}]"), out)),
        Value::Object(m) => m
            .iter()
            .for_each(|(k, x)| collect_paths(x, if at.is_empty() { k.clone() } else { format!("{at}.{k}") }, out)),
        _ => {}
    }
}

fn replace_strings(v: &mut Value, with: &dyn Fn(&str) -> Option<String>) {
    match v {
        Value::String(s) => {
            if let Some(n) = with(s) {
                *s = n;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| replace_strings(x, with)),
        Value::Object(m) => m.values_mut().for_each(|x| replace_strings(x, with)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn walks_nested_params() {
        let mut v =
            json!({"a": "s3://b/k/x.mp4", "list": ["s3://b/dir/", 1, {"deep": "s3://b/k/x.mp4"}], "other": "text"});
        let mut found = Vec::new();
        collect_strings(&v, &mut |s| s.starts_with("s3://"), &mut found);
        assert_eq!(found, ["s3://b/k/x.mp4", "s3://b/dir/", "s3://b/k/x.mp4"]);
        replace_strings(&mut v, &|s| (s == "s3://b/k/x.mp4").then(|| "/tmp/x.mp4".to_owned()));
        assert_eq!(v, json!({"a": "/tmp/x.mp4", "list": ["s3://b/dir/", 1, {"deep": "/tmp/x.mp4"}], "other": "text"}));
    }

    #[test]
    fn key_paths_as_the_python_sdk_writes_them() {
        let v = json!({"a": "/tmp/x", "b": {"c": ["rel", "/tmp/y", ["/tmp/z"]]}, "n": 1});
        let mut found = Vec::new();
        collect_paths(&v, String::new(), &mut found);
        let found: Vec<(&str, &str)> = found.iter().map(|(k, p)| (k.as_str(), p.as_str())).collect();
        assert_eq!(found, [("a", "/tmp/x"), ("b.c[1]", "/tmp/y"), ("b.c[2][0]", "/tmp/z")]);
    }

    #[test]
    fn task_dirs_stay_inside_the_files_dir() {
        let o = PayloadOffload::new(S3Config::new("http://127.0.0.1:1", "a", "s"), "/tmp/payloads");
        assert_eq!(o.task_dir("3f1c-aa"), PathBuf::from("/tmp/payloads/3f1c-aa"));
        assert_eq!(o.task_dir("../etc"), PathBuf::from("/tmp/payloads/___etc"));
        assert_eq!(o.task_dir(""), PathBuf::from("/tmp/payloads/_"));
    }

    #[test]
    fn config_from_lookup() {
        assert!(PayloadOffload::from_lookup(&|_| None).unwrap().is_none());
        let vars = |k: &str| match k {
            "S3_ENDPOINT_URL" => Some("http://127.0.0.1:9000".to_owned()),
            "S3_ACCESS_KEY_ID" => Some("a".to_owned()),
            "S3_SECRET_ACCESS_KEY" => Some("s".to_owned()),
            "TASK_FILES_DIR" => Some("/var/tmp/tasks".to_owned()),
            _ => None,
        };
        let o = PayloadOffload::from_lookup(&vars).unwrap().unwrap();
        assert_eq!(o.files_dir(), Path::new("/var/tmp/tasks"));
        assert_eq!(o.config().bucket, crate::files::s3::DEFAULT_BUCKET);
        let partial = |k: &str| (k == "S3_ENDPOINT_URL").then(|| "http://x".to_owned());
        assert!(matches!(PayloadOffload::from_lookup(&partial), Err(WorkerError::Config(m)) if m.contains("partly")));
    }
}
