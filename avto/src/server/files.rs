//! Task files in the orchestrator: the store chosen from the configuration (S3 when
//! `S3_ENDPOINT_URL` and the keys are set and avto has the `s3` feature) and the cleanup of a
//! job's files when it ends (`S3_AUTO_CLEANUP`, default true).

use std::sync::Arc;

use super::config::Config;
use super::core::Core;
use crate::files::{ObjectStore, TaskFiles};

/// The object store the configuration asks for, if any.
pub(crate) fn store_from_config(cfg: &Config) -> Option<Arc<dyn ObjectStore>> {
    #[cfg(feature = "s3")]
    if let Some(s3) = &cfg.s3 {
        tracing::info!(endpoint = %s3.endpoint_url, bucket = %s3.bucket, "S3 task files enabled");
        return Some(Arc::new(crate::files::s3::S3ObjectStore::new(s3.clone())));
    }
    let _ = cfg;
    None
}

impl Core {
    /// After a job ended: deletes its files (`jobs/{job_id}/`) when `S3_AUTO_CLEANUP` is on, in
    /// the background. The job's lock is taken first, so this runs once the terminal state (and
    /// the result in it) has been saved, never while the step that ended the job is still running.
    pub(crate) fn cleanup_job_files(self: &Arc<Self>, job_id: &str) {
        if !self.cfg.files_auto_cleanup {
            return;
        }
        let Some(store) = self.env.object_store() else { return };
        let core = self.clone();
        let job_id = job_id.to_owned();
        tokio::spawn(async move {
            drop(core.jobs.lock(&job_id).await);
            match TaskFiles::new(job_id.clone(), store).cleanup().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(job_id = %job_id, files = n, "job files deleted"),
                Err(e) => tracing::warn!(job_id = %job_id, error = %e, "could not delete the job's files"),
            }
        });
    }
}
