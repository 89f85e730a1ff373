//! How [`super::MemoryJobs`] holds one job: live (behind its own async lock, what every
//! read-modify-write works on) or, once it rests ([`frozen_when`]: terminal, or waiting for a
//! human) and nobody holds or waits for it, frozen into its JSON bytes (a few hundred bytes
//! instead of the `Job` struct with its strings, maps and lock). A frozen job is decoded for
//! each read and thawed (live again) when locked; it is frozen again once it rests and is left
//! alone. Resting jobs are what the store keeps most of (retention, approvals that take days),
//! so this is what bounds its memory per kept job; a job that moves on is never frozen between
//! its steps.

use std::sync::{Arc, OnceLock};

use crate::context::ClientConfig;
use crate::job::{Job, JobStatus};
use crate::storage::StorageError;

/// Whether a job in `status` is kept frozen: terminal (it never changes again), or waiting for a
/// human (nothing happens to it until a decision comes).
pub(super) fn frozen_when(status: JobStatus) -> bool {
    status.is_terminal() || status == JobStatus::WaitingForHuman
}

/// One stored job.
pub(super) enum Cell {
    Live(Arc<tokio::sync::Mutex<Job>>),
    Frozen(Frozen),
}

/// A terminal job as JSON without its id (the store's key) and client (shared by the client's
/// jobs, kept as the pointer).
pub(super) struct Frozen {
    json: Box<[u8]>,
    client: Arc<ClientConfig>,
}

/// The default client, and `,"client":` with it as `Job` serialises it: what [`Frozen::new`]
/// cuts out of the JSON (the client is put back on decoding).
fn default_client() -> &'static (Arc<ClientConfig>, Vec<u8>) {
    static DEFAULT: OnceLock<(Arc<ClientConfig>, Vec<u8>)> = OnceLock::new();
    DEFAULT.get_or_init(|| {
        let mut json = b",\"client\":".to_vec();
        json.extend(serde_json::to_vec(&ClientConfig::default()).expect("a client serialises"));
        (Arc::default(), json)
    })
}

impl Frozen {
    /// `job` frozen (`job` is left as it was: its id and client are only set aside while it
    /// is serialised).
    pub(super) fn new(job: &mut Job) -> Result<Self, StorageError> {
        let (default, cut) = default_client();
        let client = std::mem::replace(&mut job.client, default.clone());
        let id = std::mem::take(&mut job.id);
        let mut json = Vec::with_capacity(1024);
        let written = serde_json::to_writer(&mut json, &*job);
        job.id = id;
        job.client = client.clone();
        written.map_err(|e| StorageError::Corrupt(format!("job {} does not serialise: {e}", job.id)))?;
        if let Some(at) = json.windows(cut.len()).position(|w| w == cut.as_slice()) {
            json.drain(at..at + cut.len());
        }
        // A copy of the exact size: shrinking the buffer in place could keep its whole block.
        Ok(Frozen { json: Box::from(json.as_slice()), client })
    }

    /// The job again, with id `id`.
    pub(super) fn decode(&self, id: &str) -> Result<Job, StorageError> {
        let mut job: Job = serde_json::from_slice(&self.json)
            .map_err(|e| StorageError::Corrupt(format!("frozen job {id} does not decode: {e}")))?;
        id.clone_into(&mut job.id);
        job.client = self.client.clone();
        Ok(job)
    }

    /// Bytes of JSON kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.json.len()
    }
}

impl Cell {
    pub(super) fn live(job: Job) -> Self {
        Cell::Live(Arc::new(tokio::sync::Mutex::new(job)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_frozen_job_decodes_to_the_same_job() {
        let mut job = Job::new("job-1", "bp", "start", json!({"i": 1, "nested": {"a": [1, 2.5, "x"]}}));
        job.status = JobStatus::Finished;
        job.webhook_url = Some("http://127.0.0.1:1/hook".into());
        job.state_history.insert("echo".into(), json!({"i": 1}));
        job.push_path("finished", job.created_at_ms + 3);
        job.result = Some(json!({"ok": true}));
        for client in
            [Arc::new(ClientConfig::default()), Arc::new(ClientConfig { id: "env:X".into(), ..Default::default() })]
        {
            job.client = client;
            let original = job.clone();
            let mut frozen_from = job.clone();
            let frozen = Frozen::new(&mut frozen_from).unwrap();
            assert_eq!(frozen_from, original, "the job is left as it was");
            assert!(!String::from_utf8_lossy(&frozen.json).contains("\"client\""), "the client is cut out");
            assert!(frozen.len() < 400, "{} bytes", frozen.len());
            let back = frozen.decode("job-1").unwrap();
            assert_eq!(back, original);
            assert!(Arc::ptr_eq(&back.client, &original.client), "the client is shared, not copied");
        }
    }
}
