//! [`TaskFiles`]: a job's files under `jobs/{job_id}/` in an object store.
//!
//! Handlers ask for `task_files: Option<&TaskFiles>` (or `&TaskFiles` when files are required).
//! The object store is pluggable ([`ObjectStore`]); avto ships a local-directory store, and the
//! S3 store (aws-sdk-s3) behind the `s3` feature ([`s3::S3ObjectStore`]).

#[cfg(feature = "s3")]
pub mod s3;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Errors of file operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    #[error("file `{0}` not found")]
    NotFound(String),
    #[error("invalid file name `{0}`: use a relative path without `..`")]
    InvalidName(String),
    /// The store failed. `message` is the reason as shown (including the cause's text); `source`
    /// is the underlying error, when there is one (for S3 an `aws_sdk_s3` error, boxed so avto's
    /// public types do not name the AWS SDK's; downcast it to look inside).
    #[error("object store error: {message}")]
    Store {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("`{name}` is not valid JSON: {source}")]
    Json { name: String, source: serde_json::Error },
    #[error("`{0}` is not valid UTF-8")]
    Utf8(String),
    /// The store cannot do this (e.g. presigned URLs of a local directory).
    #[error("{0}")]
    Unsupported(String),
    /// A streamed upload went past its limit.
    #[error("the upload is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// Invalid store configuration (e.g. S3 partly configured).
    #[error("file storage configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What a presigned URL lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PresignMethod {
    Get,
    Put,
}

/// A body arriving in chunks (streamed uploads).
pub type ByteChunks<'a> = BoxStream<'a, Result<Vec<u8>, FileError>>;

/// A flat key -> bytes store (S3 bucket, local directory, ...).
///
/// Only `put`, `get`, `list` and `delete` are required; the others have defaults built on them
/// (which buffer whole files), and stores override them to stream or to presign.
pub trait ObjectStore: Send + Sync + 'static {
    fn put<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> BoxFuture<'a, Result<(), FileError>>;
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Vec<u8>, FileError>>;
    /// Keys under `prefix`, sorted.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, FileError>>;
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), FileError>>;

    /// Prepares the store at start-up (the S3 store creates its bucket if missing).
    fn init(&self) -> BoxFuture<'_, Result<(), FileError>> {
        Box::pin(async { Ok(()) })
    }
    /// A URI naming `key` (`s3://{bucket}/{key}` for S3).
    fn uri(&self, key: &str) -> String {
        key.to_owned()
    }
    /// A URL that allows `method` on `key` without credentials for `expires_in`.
    fn presign<'a>(
        &'a self,
        key: &'a str,
        method: PresignMethod,
        expires_in: Duration,
    ) -> BoxFuture<'a, Result<String, FileError>> {
        let _ = (key, method, expires_in);
        Box::pin(async { Err(FileError::Unsupported("this file store has no presigned URLs".into())) })
    }
    /// Stores a body arriving in chunks; more than `limit` bytes is [`FileError::TooLarge`].
    /// Returns the size.
    fn put_stream<'a>(
        &'a self,
        key: &'a str,
        chunks: ByteChunks<'a>,
        limit: u64,
    ) -> BoxFuture<'a, Result<u64, FileError>> {
        Box::pin(async move {
            let mut chunks = chunks;
            let mut buf = Vec::new();
            while let Some(c) = chunks.next().await {
                buf.extend_from_slice(&c?);
                if buf.len() as u64 > limit {
                    return Err(FileError::TooLarge { limit });
                }
            }
            let n = buf.len() as u64;
            self.put(key, buf).await?;
            Ok(n)
        })
    }
    /// Copies `key` into the local file `path` (parent directories created). Returns the size.
    fn get_to_file<'a>(&'a self, key: &'a str, path: &'a Path) -> BoxFuture<'a, Result<u64, FileError>> {
        Box::pin(async move {
            let bytes = self.get(key).await?;
            if let Some(dir) = path.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            tokio::fs::write(path, &bytes).await?;
            Ok(bytes.len() as u64)
        })
    }
    /// Stores the local file `path` under `key`. Returns the size.
    fn put_file<'a>(&'a self, key: &'a str, path: &'a Path) -> BoxFuture<'a, Result<u64, FileError>> {
        Box::pin(async move {
            let bytes = tokio::fs::read(path).await?;
            let n = bytes.len() as u64;
            self.put(key, bytes).await?;
            Ok(n)
        })
    }
}

/// An [`ObjectStore`] in a local directory (keys are relative paths).
#[derive(Debug, Clone)]
pub struct LocalObjectStore {
    root: PathBuf,
}

impl LocalObjectStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalObjectStore { root: root.into() }
    }
}

/// Longest key: S3's limit (longer keys are S3's `KeyTooLongError`).
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest segment of a key (between slashes): what local file systems allow in a file name.
pub const MAX_KEY_SEGMENT_BYTES: usize = 255;

/// Checks a key or file name: relative, no `.`/`..` segments, no backslashes or NULs, not empty,
/// at most [`MAX_KEY_BYTES`] in all and [`MAX_KEY_SEGMENT_BYTES`] per segment.
pub fn check_key(key: &str) -> Result<(), FileError> {
    let bad = key.is_empty()
        || key.len() > MAX_KEY_BYTES
        || key.starts_with('/')
        || key.split('/').any(|seg| seg.is_empty() || seg == ".." || seg == "." || seg.len() > MAX_KEY_SEGMENT_BYTES)
        || key.contains('\\')
        || key.contains('\0');
    if bad {
        Err(FileError::InvalidName(key.to_owned()))
    } else {
        Ok(())
    }
}

impl ObjectStore for LocalObjectStore {
    fn put<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> BoxFuture<'a, Result<(), FileError>> {
        Box::pin(async move {
            check_key(key)?;
            let path = self.root.join(key);
            if let Some(dir) = path.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            tokio::fs::write(path, bytes).await?;
            Ok(())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Vec<u8>, FileError>> {
        Box::pin(async move {
            check_key(key)?;
            match tokio::fs::read(self.root.join(key)).await {
                Ok(b) => Ok(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(FileError::NotFound(key.to_owned())),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, FileError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            // Walk only the directory the prefix names (`jobs/{id}/` -> `root/jobs/{id}`).
            let start = match prefix.rsplit_once('/') {
                Some((dir, _)) if check_key(dir).is_ok() => self.root.join(dir),
                _ => self.root.clone(),
            };
            let mut stack = vec![start];
            while let Some(dir) = stack.pop() {
                let mut rd = match tokio::fs::read_dir(&dir).await {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                };
                while let Some(entry) = rd.next_entry().await? {
                    let p = entry.path();
                    if entry.file_type().await?.is_dir() {
                        stack.push(p);
                    } else if let Ok(rel) = p.strip_prefix(&self.root) {
                        let key = rel.to_string_lossy().replace('\\', "/");
                        if key.starts_with(prefix) {
                            out.push(key);
                        }
                    }
                }
            }
            out.sort();
            Ok(out)
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), FileError>> {
        Box::pin(async move {
            check_key(key)?;
            match tokio::fs::remove_file(self.root.join(key)).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn uri(&self, key: &str) -> String {
        format!("file://{}", self.root.join(key).display())
    }
}

/// What a job's file operation was: what [`FileObserver`]s see. The orchestrator writes each as
/// an `s3_operation` row of the job's history and counts it in `/metrics`
/// (`avto_s3_operations_total{operation,status}`, `avto_s3_operation_duration_seconds{operation}`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FileOperation {
    pub job_id: String,
    pub operation: FileOp,
    /// The object, or for a directory, folder or the job's cleanup the prefix (ending in `/`),
    /// as a URI (`s3://{bucket}/{key}` on S3).
    pub uri: String,
    /// The local file or directory, for downloads and uploads of local files.
    pub local_path: Option<PathBuf>,
    /// Bytes moved (one file).
    pub size: Option<u64>,
    /// Files moved or deleted (directories, folders, the cleanup).
    pub file_count: Option<usize>,
    /// What a presigned URL allows.
    pub method: Option<PresignMethod>,
    pub duration: Duration,
    /// Why it failed (`None`: it succeeded).
    pub error: Option<String>,
}

/// The kind of a [`FileOperation`] (the `operation` of its history row and of its metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileOp {
    /// One object written: [`TaskFiles::write_bytes`] and the other writes, [`TaskFiles::upload_file`],
    /// [`TaskFiles::write_stream`] (the client's streaming upload).
    Upload,
    /// A local directory uploaded ([`TaskFiles::upload`]).
    UploadDir,
    /// One object read: [`TaskFiles::read_bytes`] and the other reads, [`TaskFiles::download_file`].
    Download,
    /// A folder downloaded ([`TaskFiles::download`]).
    DownloadDir,
    /// A presigned URL made ([`TaskFiles::presigned_url`]; the client's upload URL and download redirect).
    Presign,
    /// One object deleted ([`TaskFiles::delete`]).
    Delete,
    /// Every file of the job deleted, the local directory too ([`TaskFiles::cleanup`]).
    Cleanup,
}

impl FileOp {
    /// `upload`, `upload_dir`, `download`, `download_dir` (Avtomatika's words), `presign`,
    /// `delete`, `cleanup`.
    pub fn as_str(self) -> &'static str {
        match self {
            FileOp::Upload => "upload",
            FileOp::UploadDir => "upload_dir",
            FileOp::Download => "download",
            FileOp::DownloadDir => "download_dir",
            FileOp::Presign => "presign",
            FileOp::Delete => "delete",
            FileOp::Cleanup => "cleanup",
        }
    }
}

impl PresignMethod {
    /// `GET` or `PUT`.
    pub fn as_str(self) -> &'static str {
        match self {
            PresignMethod::Get => "GET",
            PresignMethod::Put => "PUT",
        }
    }
}

/// Sees every operation of a [`TaskFiles`] when it ends (succeeded or failed). The orchestrator
/// gives one to the files of each job (history rows, metrics).
pub trait FileObserver: Send + Sync + 'static {
    fn observe(&self, op: &FileOperation);
}

/// What an operation tells besides its kind and target.
#[derive(Default)]
struct Moved {
    local_path: Option<PathBuf>,
    size: Option<u64>,
    file_count: Option<usize>,
    method: Option<PresignMethod>,
}

/// The default root of the jobs' local directories (`TASK_FILES_DIR`): `avtomatika-payloads`
/// in the system's temporary directory (`/tmp/avtomatika-payloads`, as in Avtomatika).
pub fn default_task_files_dir() -> PathBuf {
    std::env::temp_dir().join("avtomatika-payloads")
}

/// The files of one job: keys `jobs/{job_id}/{name}` in the configured object store, and a local
/// working directory `{TASK_FILES_DIR}/{job_id}/` ([`TaskFiles::path`]).
#[derive(Clone)]
pub struct TaskFiles {
    job_id: String,
    store: Arc<dyn ObjectStore>,
    local_root: PathBuf,
    observer: Option<Arc<dyn FileObserver>>,
}

impl std::fmt::Debug for TaskFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskFiles").field("job_id", &self.job_id).field("local_root", &self.local_root).finish()
    }
}

impl TaskFiles {
    /// The files of `job_id`, with local directories under [`default_task_files_dir`].
    pub fn new(job_id: impl Into<String>, store: Arc<dyn ObjectStore>) -> Self {
        TaskFiles { job_id: job_id.into(), store, local_root: default_task_files_dir(), observer: None }
    }

    /// Local directories under `root` (`TASK_FILES_DIR`): this job's is `{root}/{job_id}/`.
    pub fn with_local_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.local_root = root.into();
        self
    }

    /// Reports every operation to `observer` when it ends.
    pub fn with_observer(mut self, observer: Arc<dyn FileObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The job's local working directory (`{TASK_FILES_DIR}/{job_id}`; created by [`TaskFiles::path`]).
    pub fn local_dir(&self) -> PathBuf {
        self.local_root.join(&self.job_id)
    }

    /// A local path for `name` in the job's working directory (the directories are created); for
    /// an `s3://` URI its last segment. [`TaskFiles::cleanup`] removes the directory with the
    /// job's objects.
    pub async fn path(&self, name: &str) -> Result<PathBuf, FileError> {
        let name = match name.strip_prefix("s3://") {
            Some(uri) => uri.trim_end_matches('/').rsplit('/').next().unwrap_or_default(),
            None => name,
        };
        check_key(name)?;
        let path = self.local_dir().join(name);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        Ok(path)
    }

    /// Runs `op` and reports it (kind `kind`, target URI `uri`) to the observer.
    async fn observed<T>(
        &self,
        kind: FileOp,
        uri: impl FnOnce() -> String,
        op: impl std::future::Future<Output = Result<T, FileError>>,
        moved: impl FnOnce(&T) -> Moved,
    ) -> Result<T, FileError> {
        let Some(observer) = &self.observer else { return op.await };
        let started = std::time::Instant::now();
        let result = op.await;
        let (m, error) = match &result {
            Ok(v) => (moved(v), None),
            Err(e) => (Moved::default(), Some(e.to_string())),
        };
        observer.observe(&FileOperation {
            job_id: self.job_id.clone(),
            operation: kind,
            uri: uri(),
            local_path: m.local_path,
            size: m.size,
            file_count: m.file_count,
            method: m.method,
            duration: started.elapsed(),
            error,
        });
        result
    }

    /// The URI of `name` for a report (the name itself when it is no valid key).
    fn uri_of(&self, name: &str) -> String {
        self.uri(name).unwrap_or_else(|_| name.to_owned())
    }

    /// The job these files belong to.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The key prefix of this job's files (`jobs/{job_id}/`).
    pub fn prefix(&self) -> String {
        format!("jobs/{}/", self.job_id)
    }

    /// The store key of `name`: a name relative to the job prefix, or an `s3://bucket/key` URI
    /// (whose key is used as is, in the store's bucket, as Avtomatika does).
    pub fn key(&self, name: &str) -> Result<String, FileError> {
        if let Some(rest) = name.strip_prefix("s3://") {
            let key = rest.split_once('/').map(|(_, k)| k).unwrap_or("");
            check_key(key.trim_end_matches('/'))?;
            return Ok(key.to_owned());
        }
        check_key(name)?;
        Ok(format!("{}{}", self.prefix(), name))
    }

    /// The URI of `name` (`s3://{bucket}/jobs/{job_id}/{name}` on S3), e.g. to pass a file to a worker.
    pub fn uri(&self, name: &str) -> Result<String, FileError> {
        Ok(self.store.uri(&self.key(name)?))
    }

    /// A presigned URL for `name` valid for `expires_in` (S3 only).
    pub async fn presigned_url(
        &self,
        name: &str,
        method: PresignMethod,
        expires_in: Duration,
    ) -> Result<String, FileError> {
        let op = async { self.store.presign(&self.key(name)?, method, expires_in).await };
        self.observed(
            FileOp::Presign,
            || self.uri_of(name),
            op,
            |_| Moved { method: Some(method), ..Default::default() },
        )
        .await
    }

    pub async fn read_bytes(&self, name: &str) -> Result<Vec<u8>, FileError> {
        let op = async { self.store.get(&self.key(name)?).await };
        self.observed(
            FileOp::Download,
            || self.uri_of(name),
            op,
            |b: &Vec<u8>| Moved { size: Some(b.len() as u64), ..Default::default() },
        )
        .await
    }
    pub async fn read_text(&self, name: &str) -> Result<String, FileError> {
        String::from_utf8(self.read_bytes(name).await?).map_err(|_| FileError::Utf8(name.to_owned()))
    }
    pub async fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<T, FileError> {
        let bytes = self.read_bytes(name).await?;
        serde_json::from_slice(&bytes).map_err(|source| FileError::Json { name: name.to_owned(), source })
    }
    pub async fn write_bytes(&self, name: &str, bytes: impl Into<Vec<u8>>) -> Result<(), FileError> {
        let bytes = bytes.into();
        let size = Some(bytes.len() as u64);
        let op = async { self.store.put(&self.key(name)?, bytes).await };
        self.observed(FileOp::Upload, || self.uri_of(name), op, |_| Moved { size, ..Default::default() }).await
    }
    pub async fn write_text(&self, name: &str, text: &str) -> Result<(), FileError> {
        self.write_bytes(name, text.as_bytes().to_vec()).await
    }
    pub async fn write_json(&self, name: &str, value: &impl Serialize) -> Result<(), FileError> {
        let bytes = serde_json::to_vec(value).map_err(|source| FileError::Json { name: name.to_owned(), source })?;
        self.write_bytes(name, bytes).await
    }
    /// Stores a body arriving in chunks under `name` (the client streaming upload); returns its size.
    pub async fn write_stream(&self, name: &str, chunks: ByteChunks<'_>, limit: u64) -> Result<u64, FileError> {
        let op = async { self.store.put_stream(&self.key(name)?, chunks, limit).await };
        self.observed(FileOp::Upload, || self.uri_of(name), op, |n| Moved { size: Some(*n), ..Default::default() })
            .await
    }
    /// Names of this job's files (relative to the job prefix), sorted.
    pub async fn list(&self) -> Result<Vec<String>, FileError> {
        let prefix = self.prefix();
        Ok(self.store.list(&prefix).await?.into_iter().map(|k| k[prefix.len()..].to_owned()).collect())
    }
    pub async fn delete(&self, name: &str) -> Result<(), FileError> {
        let op = async { self.store.delete(&self.key(name)?).await };
        self.observed(FileOp::Delete, || self.uri_of(name), op, |_| Moved::default()).await
    }
    /// Deletes every file of the job and its local directory (what `S3_AUTO_CLEANUP` does when
    /// the job ends); returns how many files were deleted from the store.
    pub async fn cleanup(&self) -> Result<usize, FileError> {
        let op = async {
            let keys = self.store.list(&self.prefix()).await?;
            let n = keys.len();
            let store = self.store.clone();
            let mut deletions = futures::stream::iter(keys)
                .map(move |k| {
                    let store = store.clone();
                    async move { store.delete(&k).await }
                })
                .buffer_unordered(16);
            while let Some(r) = deletions.next().await {
                r?;
            }
            match tokio::fs::remove_dir_all(self.local_dir()).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
            Ok(n)
        };
        self.observed(
            FileOp::Cleanup,
            || self.store.uri(&self.prefix()),
            op,
            |n| Moved { file_count: Some(*n), ..Default::default() },
        )
        .await
    }
    /// Downloads every file under `folder/` (a name or an `s3://` URI) into the local directory
    /// `dest`, keeping relative paths; files stream to disk. Returns the local paths, sorted.
    pub async fn download(&self, folder: &str, dest: &Path) -> Result<Vec<PathBuf>, FileError> {
        let folder_uri = || format!("{}/", self.uri_of(folder.trim_end_matches('/')));
        let op = async {
            let prefix = format!("{}/", self.key(folder.trim_end_matches('/'))?);
            let mut written = Vec::new();
            for key in self.store.list(&prefix).await? {
                let rel = &key[prefix.len()..];
                check_key(rel)?;
                let path = dest.join(rel);
                self.store.get_to_file(&key, &path).await?;
                written.push(path);
            }
            Ok(written)
        };
        self.observed(FileOp::DownloadDir, folder_uri, op, |w: &Vec<PathBuf>| Moved {
            local_path: Some(dest.to_path_buf()),
            file_count: Some(w.len()),
            ..Default::default()
        })
        .await
    }
    /// Downloads one file to the local path `dest`; returns its size.
    pub async fn download_file(&self, name: &str, dest: &Path) -> Result<u64, FileError> {
        let op = async { self.store.get_to_file(&self.key(name)?, dest).await };
        self.observed(
            FileOp::Download,
            || self.uri_of(name),
            op,
            |n| Moved { local_path: Some(dest.to_path_buf()), size: Some(*n), ..Default::default() },
        )
        .await
    }
    /// Uploads every file under the local directory `src` to `folder/`, keeping relative paths;
    /// files stream from disk. Returns the uploaded names, sorted.
    pub async fn upload(&self, src: &Path, folder: &str) -> Result<Vec<String>, FileError> {
        let folder = folder.trim_end_matches('/');
        let op = async {
            let mut uploaded = Vec::new();
            let mut stack = vec![src.to_path_buf()];
            while let Some(dir) = stack.pop() {
                let mut rd = match tokio::fs::read_dir(&dir).await {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(FileError::NotFound(dir.display().to_string()))
                    }
                    Err(e) => return Err(e.into()),
                };
                while let Some(entry) = rd.next_entry().await? {
                    let p = entry.path();
                    if entry.file_type().await?.is_dir() {
                        stack.push(p);
                        continue;
                    }
                    let rel = p.strip_prefix(src).map_err(|_| FileError::InvalidName(p.display().to_string()))?;
                    let name = format!("{folder}/{}", rel.to_string_lossy().replace('\\', "/"));
                    self.store.put_file(&self.key(&name)?, &p).await?;
                    uploaded.push(name);
                }
            }
            uploaded.sort();
            Ok(uploaded)
        };
        self.observed(
            FileOp::UploadDir,
            || format!("{}/", self.uri_of(folder)),
            op,
            |u: &Vec<String>| Moved {
                local_path: Some(src.to_path_buf()),
                file_count: Some(u.len()),
                ..Default::default()
            },
        )
        .await
    }
    /// Uploads one local file as `name`; returns its size.
    pub async fn upload_file(&self, src: &Path, name: &str) -> Result<u64, FileError> {
        let op = async { self.store.put_file(&self.key(name)?, src).await };
        self.observed(
            FileOp::Upload,
            || self.uri_of(name),
            op,
            |n| Moved { local_path: Some(src.to_path_buf()), size: Some(*n), ..Default::default() },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        for ok in ["a.txt", "dir/b.json", "x/y/z"] {
            assert!(check_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/abs", "../up", "a/../b", "a//b", "./a", "a/", "a\\b", "a\0b"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        let files = TaskFiles::new("j1", Arc::new(LocalObjectStore::new("/nonexistent")));
        assert_eq!(files.key("in/a.txt").unwrap(), "jobs/j1/in/a.txt");
        assert_eq!(files.key("s3://any-bucket/jobs/j2/x.txt").unwrap(), "jobs/j2/x.txt");
        assert!(files.key("s3://b/../x").is_err());
    }

    #[tokio::test]
    async fn local_store_lists_by_prefix_and_cleans_up() {
        let root = std::env::temp_dir().join(format!("avto-local-store-{}", uuid::Uuid::new_v4()));
        let store: Arc<dyn ObjectStore> = Arc::new(LocalObjectStore::new(&root));
        let (a, b) = (TaskFiles::new("a", store.clone()), TaskFiles::new("ab", store.clone()));
        a.write_text("x.txt", "1").await.unwrap();
        a.write_text("sub/y.txt", "2").await.unwrap();
        b.write_text("z.txt", "3").await.unwrap();
        assert_eq!(a.list().await.unwrap(), ["sub/y.txt", "x.txt"]);
        assert_eq!(store.list("jobs/a").await.unwrap(), ["jobs/a/sub/y.txt", "jobs/a/x.txt", "jobs/ab/z.txt"]);
        assert_eq!(a.uri("x.txt").unwrap(), format!("file://{}", root.join("jobs/a/x.txt").display()));
        assert!(matches!(
            a.presigned_url("x.txt", PresignMethod::Get, Duration::from_secs(1)).await,
            Err(FileError::Unsupported(_))
        ));
        assert_eq!(a.cleanup().await.unwrap(), 2);
        assert!(a.list().await.unwrap().is_empty());
        assert_eq!(b.read_text("z.txt").await.unwrap(), "3");
        let _ = std::fs::remove_dir_all(root);
    }
}
