//! [`TaskFiles`]: a job's files under `jobs/{job_id}/` in an object store.
//!
//! Handlers ask for `task_files: Option<&TaskFiles>` (or `&TaskFiles` when files are required).
//! The object store is pluggable ([`ObjectStore`]); avto ships a local-directory store, and the
//! S3 store (aws-sdk-s3) behind the `s3` feature.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Errors of file operations.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("file `{0}` not found")]
    NotFound(String),
    #[error("invalid file name `{0}`: use a relative path without `..`")]
    InvalidName(String),
    #[error("object store error: {0}")]
    Store(String),
    #[error("`{name}` is not valid JSON: {source}")]
    Json { name: String, source: serde_json::Error },
    #[error("`{0}` is not valid UTF-8")]
    Utf8(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A flat key -> bytes store (S3 bucket, local directory, ...).
pub trait ObjectStore: Send + Sync + 'static {
    fn put<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> BoxFuture<'a, Result<(), FileError>>;
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Vec<u8>, FileError>>;
    /// Keys under `prefix`, sorted.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, FileError>>;
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), FileError>>;
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

fn check_key(key: &str) -> Result<(), FileError> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.split('/').any(|seg| seg == ".." || seg == ".")
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
            let mut stack = vec![self.root.clone()];
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
}

/// The files of one job: keys `jobs/{job_id}/{name}` in the configured object store.
#[derive(Clone)]
pub struct TaskFiles {
    job_id: String,
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for TaskFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskFiles").field("job_id", &self.job_id).finish()
    }
}

impl TaskFiles {
    pub fn new(job_id: impl Into<String>, store: Arc<dyn ObjectStore>) -> Self {
        TaskFiles { job_id: job_id.into(), store }
    }

    /// The key prefix of this job's files (`jobs/{job_id}/`).
    pub fn prefix(&self) -> String {
        format!("jobs/{}/", self.job_id)
    }

    fn key(&self, name: &str) -> Result<String, FileError> {
        check_key(name)?;
        Ok(format!("{}{}", self.prefix(), name))
    }

    pub async fn read_bytes(&self, name: &str) -> Result<Vec<u8>, FileError> {
        self.store.get(&self.key(name)?).await
    }
    pub async fn read_text(&self, name: &str) -> Result<String, FileError> {
        String::from_utf8(self.read_bytes(name).await?).map_err(|_| FileError::Utf8(name.to_owned()))
    }
    pub async fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<T, FileError> {
        let bytes = self.read_bytes(name).await?;
        serde_json::from_slice(&bytes).map_err(|source| FileError::Json { name: name.to_owned(), source })
    }
    pub async fn write_bytes(&self, name: &str, bytes: impl Into<Vec<u8>>) -> Result<(), FileError> {
        self.store.put(&self.key(name)?, bytes.into()).await
    }
    pub async fn write_text(&self, name: &str, text: &str) -> Result<(), FileError> {
        self.write_bytes(name, text.as_bytes().to_vec()).await
    }
    pub async fn write_json(&self, name: &str, value: &impl Serialize) -> Result<(), FileError> {
        let bytes = serde_json::to_vec(value).map_err(|source| FileError::Json { name: name.to_owned(), source })?;
        self.write_bytes(name, bytes).await
    }
    /// Names of this job's files (relative to the job prefix), sorted.
    pub async fn list(&self) -> Result<Vec<String>, FileError> {
        let prefix = self.prefix();
        Ok(self.store.list(&prefix).await?.into_iter().map(|k| k[prefix.len()..].to_owned()).collect())
    }
    pub async fn delete(&self, name: &str) -> Result<(), FileError> {
        self.store.delete(&self.key(name)?).await
    }
    /// Downloads every file under `folder/` into the local directory `dest`, keeping relative paths.
    pub async fn download(&self, folder: &str, dest: &Path) -> Result<Vec<PathBuf>, FileError> {
        let folder = folder.trim_end_matches('/');
        let mut written = Vec::new();
        for name in self.list().await? {
            let Some(rel) = name.strip_prefix(folder).and_then(|r| r.strip_prefix('/')) else {
                continue;
            };
            check_key(rel)?;
            let path = dest.join(rel);
            if let Some(dir) = path.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            tokio::fs::write(&path, self.read_bytes(&name).await?).await?;
            written.push(path);
        }
        Ok(written)
    }
    /// Uploads every file under the local directory `src` to `folder/`, keeping relative paths.
    pub async fn upload(&self, src: &Path, folder: &str) -> Result<Vec<String>, FileError> {
        let folder = folder.trim_end_matches('/');
        let mut uploaded = Vec::new();
        let mut stack = vec![src.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let mut rd = tokio::fs::read_dir(&dir).await?;
            while let Some(entry) = rd.next_entry().await? {
                let p = entry.path();
                if entry.file_type().await?.is_dir() {
                    stack.push(p);
                    continue;
                }
                let rel = p.strip_prefix(src).map_err(|_| FileError::InvalidName(p.display().to_string()))?;
                let name = format!("{folder}/{}", rel.to_string_lossy().replace('\\', "/"));
                self.write_bytes(&name, tokio::fs::read(&p).await?).await?;
                uploaded.push(name);
            }
        }
        uploaded.sort();
        Ok(uploaded)
    }
}
