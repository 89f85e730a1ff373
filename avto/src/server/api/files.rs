//! Client file endpoints (S3): presigned upload URL, streaming upload, download redirect.
//!
//! All three check that the job belongs to the client (404 otherwise), answer 501
//! `{"error": "S3 support is not enabled"}` without a file store and 400 for file names that are
//! empty, absolute or contain `..`. Files land under `jobs/{job_id}/`, where handlers read them with
//! [`crate::TaskFiles`]. Each operation is counted in `/metrics` and, with history on, is an
//! `s3_operation` row of the job's history.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::auth::{owned_job, Client};
use super::{json_response, truncate, ApiError, Path, Query, Routes, ServedRoute};
use crate::files::{check_key, FileError, PresignMethod, TaskFiles};
use crate::server::core::Core;

/// The answer when no file store is configured.
pub(super) const S3_DISABLED: &str = "S3 support is not enabled";
/// Validity of the presigned GET behind a download redirect.
pub(super) const DOWNLOAD_URL_TTL: Duration = Duration::from_secs(60);
const MAX_EXPIRES_IN: i64 = 7 * 24 * 3600;

/// The file routes under `base` (the client API prefix and `version`).
pub(super) fn routes(r: Routes, base: &str, version: Option<&'static str>) -> Routes {
    let at = |method, path: &str, operation| ServedRoute {
        method,
        path: format!("{base}/jobs/{{job_id}}/files/{path}"),
        operation,
        version,
        blueprint: None,
    };
    r.on_route(at(Method::GET, "upload", "presigned_upload"), presigned_upload)
        .on_route(at(Method::PUT, "content/{*filename}", "upload_content"), upload_content)
        .on_route(at(Method::GET, "download/{*filename}", "download_file"), download)
}

/// The files of an owned job and a client-given file name in them, checked (never an `s3://`
/// URI: clients only reach their own job's prefix). Each operation on them is counted and
/// recorded in the job's history (`s3_operation`).
async fn job_file(core: &Core, client: &Client, job_id: &str, filename: &str) -> Result<(TaskFiles, String), ApiError> {
    let job = owned_job(core, &client.0, job_id).await?;
    let files = core.job_files(&job).ok_or_else(|| ApiError::NotImplemented(S3_DISABLED.into()))?;
    if filename.is_empty() {
        return Err(ApiError::bad("filename is required"));
    }
    let key = format!("jobs/{job_id}/{filename}");
    check_key(filename).and_then(|_| check_key(&key)).map_err(|_| {
        ApiError::bad(format!(
            "invalid filename `{}`: use a relative path without `..`, `.` or empty segments, at most {} bytes \
             per segment and {} bytes in all (`jobs/{{job_id}}/` included)",
            truncate(filename),
            crate::files::MAX_KEY_SEGMENT_BYTES,
            crate::files::MAX_KEY_BYTES
        ))
    })?;
    Ok((files, filename.to_owned()))
}

fn store_error(e: FileError) -> ApiError {
    match e {
        FileError::Unsupported(_) => ApiError::NotImplemented(S3_DISABLED.into()),
        FileError::TooLarge { limit } => ApiError::PayloadTooLarge(format!(
            "the upload is larger than the limit of {limit} bytes (S3_MAX_UPLOAD_BYTES)"
        )),
        FileError::NotFound(_) => ApiError::NotFound("File not found".into()),
        other => ApiError::Internal(format!("file storage error: {other}")),
    }
}

#[derive(Debug, Deserialize)]
struct UploadQuery {
    filename: Option<String>,
    expires_in: Option<String>,
}

/// `GET .../jobs/{job_id}/files/upload?filename=&expires_in=`: a presigned PUT URL for
/// `jobs/{job_id}/{filename}` (default validity 3600 s, at most 7 days).
async fn presigned_upload(
    State(core): State<Arc<Core>>,
    client: Client,
    Path(job_id): Path<String>,
    Query(q): Query<UploadQuery>,
) -> Result<Response, ApiError> {
    let expires_in = match q.expires_in.as_deref().map(str::trim) {
        None | Some("") => 3600,
        Some(v) => v.parse::<i64>().map_err(|_| ApiError::bad("expires_in must be an integer"))?,
    };
    if !(1..=MAX_EXPIRES_IN).contains(&expires_in) {
        return Err(ApiError::bad(format!("expires_in must be between 1 and {MAX_EXPIRES_IN} seconds")));
    }
    let (files, name) = job_file(&core, &client, &job_id, q.filename.as_deref().unwrap_or("")).await?;
    let expires = Duration::from_secs(expires_in as u64);
    let url = files.presigned_url(&name, PresignMethod::Put, expires).await.map_err(store_error)?;
    Ok(json_response(&json!({"url": url, "expires_in": expires_in, "method": "PUT"})))
}

/// `PUT .../jobs/{job_id}/files/content/{filename}`: the body streamed to `jobs/{job_id}/{filename}`
/// (multipart in parts of 8 MiB on S3), up to `S3_MAX_UPLOAD_BYTES`.
async fn upload_content(
    State(core): State<Arc<Core>>,
    client: Client,
    Path((job_id, filename)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (files, name) = job_file(&core, &client, &job_id, &filename).await?;
    let limit = core.config().max_upload_bytes;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(store_error(FileError::TooLarge { limit }));
    }
    // A client may pause at most HTTP_BODY_READ_TIMEOUT_SECONDS between two chunks: a stalled
    // upload ends with 408 instead of holding its connection and multipart upload open.
    let idle = core.config().http_body_read_timeout;
    let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stalled.clone();
    let chunks = futures::stream::unfold(Some(body.into_data_stream()), move |data| {
        let flag = flag.clone();
        async move {
            let mut data = data?;
            match tokio::time::timeout(idle, data.next()).await {
                Ok(None) => None,
                Ok(Some(chunk)) => Some((
                    chunk.map(|b| b.to_vec()).map_err(|e| FileError::Store {
                        message: format!("reading the request body: {e}"),
                        source: Some(Box::new(e)),
                    }),
                    Some(data),
                )),
                Err(_) => {
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                    let stalled = FileError::Store { message: "the request body stalled".into(), source: None };
                    Some((Err(stalled), None))
                }
            }
        }
    });
    let size = match files.write_stream(&name, Box::pin(chunks), limit).await {
        Ok(size) => size,
        Err(_) if stalled.load(std::sync::atomic::Ordering::SeqCst) => return Err(super::body_timeout(idle)),
        Err(e) => return Err(store_error(e)),
    };
    let uri = files.uri(&name).map_err(store_error)?;
    tracing::info!(job_id = %job_id, uri = %uri, size, "file uploaded by client");
    Ok(json_response(&json!({"status": "uploaded", "s3_uri": uri, "size": size})))
}

/// `GET .../jobs/{job_id}/files/download/{filename}`: 302 to a presigned GET URL valid for 60 s.
async fn download(
    State(core): State<Arc<Core>>,
    client: Client,
    Path((job_id, filename)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (files, name) = job_file(&core, &client, &job_id, &filename).await?;
    let url = files.presigned_url(&name, PresignMethod::Get, DOWNLOAD_URL_TTL).await.map_err(store_error)?;
    let location =
        HeaderValue::from_str(&url).map_err(|_| ApiError::Internal("presigned URL is not a header".into()))?;
    Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response())
}
