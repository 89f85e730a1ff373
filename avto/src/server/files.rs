//! Task files in the orchestrator: the store chosen from the configuration (S3 when
//! `S3_ENDPOINT_URL` and the keys are set and avto has the `s3` feature). The cleanup of a
//! job's files when it ends (`S3_AUTO_CLEANUP`, default true) is an after-commit effect of
//! the core (`core/observe.rs`).

use std::sync::Arc;

use super::config::Config;
use crate::files::ObjectStore;

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
