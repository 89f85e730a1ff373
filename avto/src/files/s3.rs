//! The S3 object store (feature `s3`, aws-sdk-s3): [`S3ObjectStore`] keeps task files in one bucket
//! (`S3_DEFAULT_BUCKET`), addressed path-style so MinIO, s3s, Ceph and AWS all work.
//!
//! Configuration ([`S3Config::from_env`]) uses Avtomatika's variable names: `S3_ENDPOINT_URL`,
//! `S3_ACCESS_KEY` (or `S3_ACCESS_KEY_ID`), `S3_SECRET_KEY` (or `S3_SECRET_ACCESS_KEY`), `S3_REGION`
//! (default `us-east-1`), `S3_DEFAULT_BUCKET` (or `S3_BUCKET_NAME`, default `avtomatika-payloads`) and
//! `S3_MAX_CONCURRENCY` (default 100). S3 is on when endpoint and both keys are set; setting only
//! some of them is an error, so a typo never silently turns files off.
//!
//! Every call holds a permit of a semaphore of `S3_MAX_CONCURRENCY`. Large bodies stream: uploads
//! from a stream go up as a multipart upload in parts of [`PART_SIZE`], files are sent from disk and
//! downloads are written to disk chunk by chunk.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use super::{ByteChunks, FileError, ObjectStore, PresignMethod};

/// Default bucket (`S3_DEFAULT_BUCKET`), as in Avtomatika.
pub const DEFAULT_BUCKET: &str = "avtomatika-payloads";
/// Size of the parts of a multipart upload (and so the most a streamed upload buffers).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Longest validity of a presigned URL that S3 accepts (7 days).
pub const MAX_PRESIGN_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Connection settings of an S3 (or S3-protocol) service.
#[derive(Clone, PartialEq)]
pub struct S3Config {
    /// `S3_ENDPOINT_URL`, e.g. `http://127.0.0.1:9000` or `https://s3.eu-west-1.amazonaws.com`.
    pub endpoint_url: String,
    pub access_key: String,
    pub secret_key: String,
    /// `S3_REGION` (default `us-east-1`).
    pub region: String,
    /// `S3_DEFAULT_BUCKET` (default `avtomatika-payloads`).
    pub bucket: String,
    /// `S3_MAX_CONCURRENCY` (default 100): S3 calls in flight at once.
    pub max_concurrency: usize,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint_url", &self.endpoint_url)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("max_concurrency", &self.max_concurrency)
            .finish()
    }
}

impl S3Config {
    /// Settings with the default region, bucket and concurrency.
    pub fn new(endpoint_url: impl Into<String>, access_key: impl Into<String>, secret_key: impl Into<String>) -> Self {
        S3Config {
            endpoint_url: endpoint_url.into(),
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            region: "us-east-1".into(),
            bucket: DEFAULT_BUCKET.into(),
            max_concurrency: 100,
        }
    }

    /// Another bucket.
    pub fn bucket(mut self, bucket: impl Into<String>) -> Self {
        self.bucket = bucket.into();
        self
    }

    /// From the process environment: `Ok(None)` when S3 is not configured at all.
    pub fn from_env() -> Result<Option<Self>, FileError> {
        Self::from_lookup(&|k| std::env::var(k).ok()).map_err(FileError::Config)
    }

    /// From any variable lookup; `Err` names what is missing or invalid.
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let var =
            |names: &[&str]| names.iter().find_map(|n| get(n).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()));
        let endpoint = var(&["S3_ENDPOINT_URL"]);
        let access = var(&["S3_ACCESS_KEY", "S3_ACCESS_KEY_ID"]);
        let secret = var(&["S3_SECRET_KEY", "S3_SECRET_ACCESS_KEY"]);
        let (endpoint, access, secret) = match (endpoint, access, secret) {
            (None, None, None) => return Ok(None),
            (Some(e), Some(a), Some(s)) => (e, a, s),
            (e, a, s) => {
                let missing: Vec<&str> = [
                    (e.is_none(), "S3_ENDPOINT_URL"),
                    (a.is_none(), "S3_ACCESS_KEY (or S3_ACCESS_KEY_ID)"),
                    (s.is_none(), "S3_SECRET_KEY (or S3_SECRET_ACCESS_KEY)"),
                ]
                .into_iter()
                .filter_map(|(m, n)| m.then_some(n))
                .collect();
                return Err(format!(
                    "S3 is partly configured: S3_ENDPOINT_URL, S3_ACCESS_KEY and S3_SECRET_KEY must be set together \
                     (missing: {}); unset them all to run without S3",
                    missing.join(", ")
                ));
            }
        };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(format!("S3_ENDPOINT_URL={endpoint:?}: expected an http:// or https:// URL"));
        }
        let mut c = S3Config::new(endpoint.trim_end_matches('/'), access, secret);
        if let Some(r) = var(&["S3_REGION"]) {
            c.region = r;
        }
        if let Some(b) = var(&["S3_DEFAULT_BUCKET", "S3_BUCKET_NAME"]) {
            check_bucket_name(&b)?;
            c.bucket = b;
        }
        if let Some(n) = var(&["S3_MAX_CONCURRENCY"]) {
            c.max_concurrency = match n.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => return Err(format!("S3_MAX_CONCURRENCY={n:?}: expected a positive integer")),
            };
        }
        Ok(Some(c))
    }

    /// Avtomatika's `s3_config_hash`: the first 16 hex chars of sha256(`endpoint|access_key|bucket`).
    pub fn config_hash(&self) -> String {
        crate::protocol::s3_config_hash(Some(&self.endpoint_url), Some(&self.access_key), Some(&self.bucket))
            .unwrap_or_default()
    }
}

/// S3 bucket naming rules (3-63 chars of lowercase letters, digits, `.` and `-`).
fn check_bucket_name(b: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&b.len())
        && b.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!("S3_DEFAULT_BUCKET={b:?}: not a valid bucket name (3-63 of a-z, 0-9, '.', '-')"))
    }
}

/// Splits `s3://bucket/key` into `(bucket, key)`; the key may be empty or end with `/`.
pub fn parse_uri(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then_some((bucket, key))
}

/// An S3 bucket as an [`ObjectStore`]; the methods taking a `bucket` reach any bucket of the same
/// service (the worker SDK downloads `s3://` URIs naming other buckets with them).
#[derive(Clone)]
pub struct S3ObjectStore {
    client: aws_sdk_s3::Client,
    cfg: Arc<S3Config>,
    limit: Arc<Semaphore>,
}

impl std::fmt::Debug for S3ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3ObjectStore").field("config", &self.cfg).finish()
    }
}

/// A failed S3 call: the service's code and message (or the whole chain of a transport error) in
/// the text, the SDK's error as the source.
fn err<E>(op: &str, target: &str, e: SdkError<E>) -> FileError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = match &e {
        SdkError::ServiceError(s) => {
            let inner = s.err();
            format!("{}: {}", inner.code().unwrap_or("error"), inner.message().unwrap_or("no message"))
        }
        other => {
            let mut msg = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            msg
        }
    };
    store_error(format!("S3 {op} {target}: {detail}"), e)
}

/// `FileError::Store` with `message` as its text and `source` as its cause.
fn store_error(message: String, source: impl std::error::Error + Send + Sync + 'static) -> FileError {
    FileError::Store { message, source: Some(Box::new(source)) }
}

fn is_not_found<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    match e {
        SdkError::ServiceError(s) => {
            s.raw().status().as_u16() == 404 || matches!(s.err().code(), Some("NoSuchKey" | "NotFound"))
        }
        _ => false,
    }
}

impl S3ObjectStore {
    /// A client for `cfg` (no network traffic until the first call; see [`ObjectStore::init`]).
    pub fn new(cfg: S3Config) -> Self {
        use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
        let http =
            aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(cfg.endpoint_url.clone())
            .region(Region::new(cfg.region.clone()))
            .credentials_provider(Credentials::new(cfg.access_key.clone(), cfg.secret_key.clone(), None, None, "avto"))
            .force_path_style(true)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .http_client(http)
            .build();
        let limit = Arc::new(Semaphore::new(cfg.max_concurrency.max(1)));
        S3ObjectStore { client: aws_sdk_s3::Client::from_conf(conf), cfg: Arc::new(cfg), limit }
    }

    /// The settings.
    pub fn config(&self) -> &S3Config {
        &self.cfg
    }

    /// The default bucket.
    pub fn bucket(&self) -> &str {
        &self.cfg.bucket
    }

    /// The underlying aws-sdk-s3 client.
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    async fn permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.limit.acquire().await.expect("the S3 semaphore is never closed")
    }

    /// Creates `bucket` unless it exists.
    pub async fn ensure_bucket(&self, bucket: &str) -> Result<(), FileError> {
        let _p = self.permit().await;
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(err("HeadBucket", bucket, e)),
        }
        match self.client.create_bucket().bucket(bucket).send().await {
            Ok(_) => {
                tracing::info!(bucket, endpoint = %self.cfg.endpoint_url, "S3 bucket created");
                Ok(())
            }
            Err(SdkError::ServiceError(s))
                if matches!(s.err().code(), Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")) =>
            {
                Ok(())
            }
            Err(e) => Err(err("CreateBucket", bucket, e)),
        }
    }

    /// Writes `bytes` to `bucket/key`.
    pub async fn put_in(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<(), FileError> {
        let _p = self.permit().await;
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| err("PutObject", &format!("s3://{bucket}/{key}"), e))?;
        Ok(())
    }

    /// Reads `bucket/key` into memory.
    pub async fn get_in(&self, bucket: &str, key: &str) -> Result<Vec<u8>, FileError> {
        let _p = self.permit().await;
        let out = match self.client.get_object().bucket(bucket).key(key).send().await {
            Ok(o) => o,
            Err(e) if is_not_found(&e) => return Err(FileError::NotFound(format!("s3://{bucket}/{key}"))),
            Err(e) => return Err(err("GetObject", &format!("s3://{bucket}/{key}"), e)),
        };
        let body = out.body.collect().await.map_err(|e| store_error(format!("S3 GetObject {key}: {e}"), e))?;
        Ok(body.into_bytes().to_vec())
    }

    /// Streams `bucket/key` into the local file `path` (parent directories created); returns its size.
    pub async fn download_to(&self, bucket: &str, key: &str, path: &Path) -> Result<u64, FileError> {
        let _p = self.permit().await;
        let target = format!("s3://{bucket}/{key}");
        let out = match self.client.get_object().bucket(bucket).key(key).send().await {
            Ok(o) => o,
            Err(e) if is_not_found(&e) => return Err(FileError::NotFound(target)),
            Err(e) => return Err(err("GetObject", &target, e)),
        };
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let mut file = tokio::fs::File::create(path).await?;
        let mut body = out.body;
        let mut size = 0u64;
        while let Some(chunk) =
            body.try_next().await.map_err(|e| store_error(format!("S3 GetObject {target}: {e}"), e))?
        {
            file.write_all(&chunk).await?;
            size += chunk.len() as u64;
        }
        file.flush().await?;
        Ok(size)
    }

    /// Sends the local file `path` to `bucket/key`, streaming it from disk; returns its size.
    pub async fn upload_from(&self, bucket: &str, key: &str, path: &Path) -> Result<u64, FileError> {
        Ok(self.upload_file(bucket, key, path).await?.0)
    }

    /// [`S3ObjectStore::upload_from`], returning the size and the ETag S3 gave the object
    /// (without its quotes), when it gave one.
    pub async fn upload_file(&self, bucket: &str, key: &str, path: &Path) -> Result<(u64, Option<String>), FileError> {
        let size = tokio::fs::metadata(path).await?.len();
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| store_error(format!("cannot read {}: {e}", path.display()), e))?;
        let _p = self.permit().await;
        let out = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_length(size as i64)
            .body(body)
            .send()
            .await
            .map_err(|e| err("PutObject", &format!("s3://{bucket}/{key}"), e))?;
        Ok((size, out.e_tag().map(|t| t.trim_matches('"').to_owned()).filter(|t| !t.is_empty())))
    }

    /// Keys under `prefix` in `bucket`, sorted.
    pub async fn list_in(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, FileError> {
        let _p = self.permit().await;
        let mut keys = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| err("ListObjectsV2", &format!("s3://{bucket}/{prefix}"), e))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
        }
        keys.sort();
        Ok(keys)
    }

    /// Deletes `bucket/key` (a missing key is not an error).
    pub async fn delete_in(&self, bucket: &str, key: &str) -> Result<(), FileError> {
        let _p = self.permit().await;
        match self.client.delete_object().bucket(bucket).key(key).send().await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(err("DeleteObject", &format!("s3://{bucket}/{key}"), e)),
        }
    }

    /// Streams `chunks` to `bucket/key`: one PutObject when it fits in a part, else a multipart
    /// upload (aborted on any error). At most [`PART_SIZE`] bytes are buffered; more than `limit`
    /// bytes in total is [`FileError::TooLarge`].
    pub async fn upload_stream_in(
        &self,
        bucket: &str,
        key: &str,
        mut chunks: ByteChunks<'_>,
        limit: u64,
    ) -> Result<u64, FileError> {
        let mut buf: Vec<u8> = Vec::new();
        let mut total = 0u64;
        // Fill the first part; a small body goes up in one PutObject.
        while buf.len() < PART_SIZE {
            match chunks.next().await {
                Some(c) => {
                    let c = c?;
                    total += c.len() as u64;
                    if total > limit {
                        return Err(FileError::TooLarge { limit });
                    }
                    buf.extend_from_slice(&c);
                }
                None => {
                    self.put_in(bucket, key, buf).await?;
                    return Ok(total);
                }
            }
        }
        let target = format!("s3://{bucket}/{key}");
        let upload_id = {
            let _p = self.permit().await;
            self.client
                .create_multipart_upload()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| err("CreateMultipartUpload", &target, e))?
                .upload_id()
                .ok_or_else(|| FileError::Store {
                    message: format!("S3 CreateMultipartUpload {target}: no upload id"),
                    source: None,
                })?
                .to_owned()
        };
        let result = async {
            let mut parts = Vec::new();
            let mut eof = false;
            loop {
                while !eof && buf.len() < PART_SIZE {
                    match chunks.next().await {
                        Some(c) => {
                            let c = c?;
                            total += c.len() as u64;
                            if total > limit {
                                return Err(FileError::TooLarge { limit });
                            }
                            buf.extend_from_slice(&c);
                        }
                        None => eof = true,
                    }
                }
                if buf.is_empty() {
                    break;
                }
                let rest = if buf.len() > PART_SIZE { buf.split_off(PART_SIZE) } else { Vec::new() };
                let part = std::mem::replace(&mut buf, rest);
                let number = parts.len() as i32 + 1;
                let _p = self.permit().await;
                let out = self
                    .client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(ByteStream::from(part))
                    .send()
                    .await
                    .map_err(|e| err("UploadPart", &target, e))?;
                parts.push(
                    CompletedPart::builder().part_number(number).set_e_tag(out.e_tag().map(str::to_owned)).build(),
                );
            }
            let _p = self.permit().await;
            self.client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await
                .map_err(|e| err("CompleteMultipartUpload", &target, e))?;
            Ok(total)
        }
        .await;
        if result.is_err() {
            let _p = self.permit().await;
            let _ = self.client.abort_multipart_upload().bucket(bucket).key(key).upload_id(&upload_id).send().await;
        }
        result
    }

    /// A presigned URL for `bucket/key`.
    pub async fn presign_in(
        &self,
        bucket: &str,
        key: &str,
        method: PresignMethod,
        expires_in: Duration,
    ) -> Result<String, FileError> {
        let conf = PresigningConfig::expires_in(expires_in.min(MAX_PRESIGN_EXPIRY))
            .map_err(|e| store_error(format!("presigning: {e}"), e))?;
        let target = format!("s3://{bucket}/{key}");
        let failed = |e: Box<dyn std::error::Error + Send + Sync>| FileError::Store {
            message: format!("S3 presign {target}: {e}"),
            source: Some(e),
        };
        let req = match method {
            PresignMethod::Get => {
                self.client.get_object().bucket(bucket).key(key).presigned(conf).await.map_err(|e| failed(e.into()))?
            }
            PresignMethod::Put => {
                self.client.put_object().bucket(bucket).key(key).presigned(conf).await.map_err(|e| failed(e.into()))?
            }
        };
        Ok(req.uri().to_owned())
    }
}

impl ObjectStore for S3ObjectStore {
    fn put<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> BoxFuture<'a, Result<(), FileError>> {
        Box::pin(self.put_in(&self.cfg.bucket, key, bytes))
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Vec<u8>, FileError>> {
        Box::pin(self.get_in(&self.cfg.bucket, key))
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, FileError>> {
        Box::pin(self.list_in(&self.cfg.bucket, prefix))
    }
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), FileError>> {
        Box::pin(self.delete_in(&self.cfg.bucket, key))
    }
    fn init(&self) -> BoxFuture<'_, Result<(), FileError>> {
        Box::pin(self.ensure_bucket(&self.cfg.bucket))
    }
    fn uri(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.cfg.bucket)
    }
    fn presign<'a>(
        &'a self,
        key: &'a str,
        method: PresignMethod,
        expires_in: Duration,
    ) -> BoxFuture<'a, Result<String, FileError>> {
        Box::pin(self.presign_in(&self.cfg.bucket, key, method, expires_in))
    }
    fn put_stream<'a>(
        &'a self,
        key: &'a str,
        chunks: ByteChunks<'a>,
        limit: u64,
    ) -> BoxFuture<'a, Result<u64, FileError>> {
        Box::pin(self.upload_stream_in(&self.cfg.bucket, key, chunks, limit))
    }
    fn get_to_file<'a>(&'a self, key: &'a str, path: &'a Path) -> BoxFuture<'a, Result<u64, FileError>> {
        Box::pin(self.download_to(&self.cfg.bucket, key, path))
    }
    fn put_file<'a>(&'a self, key: &'a str, path: &'a Path) -> BoxFuture<'a, Result<u64, FileError>> {
        Box::pin(self.upload_from(&self.cfg.bucket, key, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> Result<Option<S3Config>, String> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        S3Config::from_lookup(&|k| m.get(k).cloned())
    }

    #[test]
    fn config_from_env_names() {
        assert_eq!(lookup(&[]).unwrap(), None);
        let c =
            lookup(&[("S3_ENDPOINT_URL", "http://127.0.0.1:9000/"), ("S3_ACCESS_KEY", "a"), ("S3_SECRET_KEY", "s")])
                .unwrap()
                .unwrap();
        assert_eq!(
            (c.endpoint_url.as_str(), c.region.as_str(), c.bucket.as_str(), c.max_concurrency),
            ("http://127.0.0.1:9000", "us-east-1", DEFAULT_BUCKET, 100)
        );
        // The names of the worker SDK's recipe work too.
        let c = lookup(&[
            ("S3_ENDPOINT_URL", "https://s3.example"),
            ("S3_ACCESS_KEY_ID", "a"),
            ("S3_SECRET_ACCESS_KEY", "s"),
            ("S3_BUCKET_NAME", "my-processing-bucket"),
            ("S3_REGION", "eu-west-1"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.access_key.as_str(), c.bucket.as_str(), c.region.as_str()),
            ("a", "my-processing-bucket", "eu-west-1")
        );
        assert!(!format!("{c:?}").contains("\"s\""), "the secret is not in Debug output");
    }

    #[test]
    fn partial_or_invalid_config_is_an_error() {
        let e = lookup(&[("S3_ENDPOINT_URL", "http://x")]).unwrap_err();
        assert!(e.contains("partly configured") && e.contains("S3_ACCESS_KEY") && e.contains("S3_SECRET_KEY"), "{e}");
        let e = lookup(&[("S3_ACCESS_KEY", "a"), ("S3_SECRET_KEY", "s")]).unwrap_err();
        assert!(e.contains("missing: S3_ENDPOINT_URL"), "{e}");
        let full = [("S3_ENDPOINT_URL", "http://x"), ("S3_ACCESS_KEY", "a"), ("S3_SECRET_KEY", "s")];
        let e = lookup(&[full[0], full[1], full[2], ("S3_DEFAULT_BUCKET", "Bad_Bucket")]).unwrap_err();
        assert!(e.contains("not a valid bucket name"), "{e}");
        let e = lookup(&[("S3_ENDPOINT_URL", "minio:9000"), full[1], full[2]]).unwrap_err();
        assert!(e.contains("http://"), "{e}");
        let e = lookup(&[full[0], full[1], full[2], ("S3_MAX_CONCURRENCY", "0")]).unwrap_err();
        assert!(e.contains("S3_MAX_CONCURRENCY"), "{e}");
    }

    #[test]
    fn uris() {
        assert_eq!(parse_uri("s3://b/k/x.txt"), Some(("b", "k/x.txt")));
        assert_eq!(parse_uri("s3://b/dir/"), Some(("b", "dir/")));
        assert_eq!(parse_uri("s3://b"), Some(("b", "")));
        assert_eq!(parse_uri("s3:///k"), None);
        assert_eq!(parse_uri("http://b/k"), None);
        let c = S3Config::new("http://127.0.0.1:9000", "ak", "sk");
        assert_eq!(c.config_hash().len(), 16);
    }

    /// A failed S3 call keeps the SDK's error as its source, with the text it had when the error
    /// was flattened into a String (for a transport error: the error and its chain).
    #[tokio::test]
    async fn store_errors_keep_the_sdk_error_as_their_source() {
        use aws_sdk_s3::operation::put_object::PutObjectError;
        use std::error::Error as _;

        // Nothing listens on port 1.
        let store = S3ObjectStore::new(S3Config::new("http://127.0.0.1:1", "ak", "sk"));
        let e = store.put_in("b", "k", b"x".to_vec()).await.unwrap_err();
        assert!(matches!(e, FileError::Store { .. }), "{e:?}");
        let sdk = e.source().expect("the SDK error");
        assert!(sdk.downcast_ref::<SdkError<PutObjectError>>().is_some(), "{sdk:?}");
        let mut chain = sdk.to_string();
        let mut cause = sdk.source();
        while let Some(c) = cause {
            chain = format!("{chain}: {c}");
            cause = c.source();
        }
        assert_eq!(e.to_string(), format!("object store error: S3 PutObject s3://b/k: {chain}"));
    }
}
