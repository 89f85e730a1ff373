//! How [`super::MemoryJobs`] holds one job: live (behind its own async lock, what every
//! read-modify-write works on) or, once it rests ([`frozen_when`]: terminal, or waiting for a
//! human) and nobody holds or waits for it, frozen into its JSON bytes (a few hundred bytes
//! instead of the `Job` struct with its strings, maps and lock). A frozen job is decoded for
//! each read and thawed (live again) when locked; it is frozen again once it rests and is left
//! alone. Resting jobs are what the store keeps most of (retention, approvals that take days),
//! so this is what bounds its memory per kept job; a job that moves on is never frozen between
//! its steps.
//!
//! The JSON is kept packed ([`pack`]): the job's usual object keys (`"status":`, ...) are one
//! byte each, a byte serde_json's compact output never has (a control character: it writes no
//! whitespace and escapes them in strings), so unpacking is a plain expansion. An echo job's
//! frozen JSON is about 210 bytes instead of 440.

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
        if let Some(span) = top_level_member(&json, cut) {
            json.drain(span);
        }
        // A new buffer of the exact size: shrinking one in place could keep its whole block.
        Ok(Frozen { json: pack(&json).into_boxed_slice(), client })
    }

    /// The job again, with id `id`.
    pub(super) fn decode(&self, id: &str) -> Result<Job, StorageError> {
        let mut job: Job = serde_json::from_slice(&unpack(&self.json))
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

/// The object keys [`pack`] writes as one byte: key `i` as byte `i + 1` (0x01-0x1F). The job's
/// own fields first, then those of the records inside it (task, approval, security).
const KEYS: [&[u8]; 31] = [
    b"blueprint",
    b"current_state",
    b"status",
    b"initial_data",
    b"state_history",
    b"aggregation_results",
    b"webhook_url",
    b"retry_count",
    b"transition_count",
    b"error_message",
    b"last_error",
    b"result",
    b"current_task",
    b"approval",
    b"progress",
    b"waiting_reason",
    b"path",
    b"path_ms",
    b"security",
    b"metadata",
    b"data_metadata",
    b"timestamp",
    b"tracing_context",
    b"created_at_ms",
    b"updated_at_ms",
    b"task_id",
    b"worker_id",
    b"dispatched_at_ms",
    b"picked_up_at_ms",
    b"signer_id",
    b"transitions",
];

/// Where [`CODES`] has a key's byte: a hash of its length and first and last bytes, which no
/// two of [`KEYS`] share (else the test that packs every key fails).
const fn slot(key: &[u8]) -> usize {
    (key.len() + key[0] as usize * 4 + key[key.len() - 1] as usize * 5) & 0xff
}

/// Key `i` of [`KEYS`] as `i + 1` at its [`slot`], 0 elsewhere.
const CODES: [u8; 256] = {
    let mut codes = [0; 256];
    let mut i = 0;
    while i < KEYS.len() {
        codes[slot(KEYS[i])] = i as u8 + 1;
        i += 1;
    }
    codes
};

/// The index of the quote that closes the string whose first byte is at `from` (an escaped
/// quote, `\"`, is inside it); `json.len()` or past it when the string is cut off.
fn closing_quote(json: &[u8], from: usize) -> usize {
    let mut end = from;
    while end < json.len() && json[end] != b'"' {
        end += if json[end] == b'\\' { 2 } else { 1 };
    }
    end
}

/// Where `member` (`,"key":value` as serde_json writes it) is a member of the top-level object
/// of `json` (serde_json's compact output): the same bytes inside a value (a job's data may hold
/// anything) are not it.
fn top_level_member(json: &[u8], member: &[u8]) -> Option<std::ops::Range<usize>> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => i = closing_quote(json, i + 1),
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 1 && json[i..].starts_with(member) => return Some(i..i + member.len()),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The byte of `key`, if it is one of [`KEYS`].
fn code(key: &[u8]) -> Option<u8> {
    if key.is_empty() {
        return None;
    }
    let code = CODES[slot(key)];
    (code != 0 && KEYS[code as usize - 1] == key).then_some(code)
}

/// `json` (serde_json's compact output) with each `"key":` of [`KEYS`] as its one byte, wherever
/// it is (also inside the job's data: the expansion gives back the same bytes).
fn pack(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    // `json[copied..i]` is still to be copied as it is.
    let (mut copied, mut i) = (0, 0);
    while i < json.len() {
        if json[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i + 1;
        let end = closing_quote(json, start).min(json.len());
        if json.get(end + 1) == Some(&b':') {
            if let Some(code) = code(&json[start..end]) {
                out.extend_from_slice(&json[copied..i]);
                out.push(code);
                i = end + 2;
                copied = i;
                continue;
            }
        }
        i = (end + 1).min(json.len());
    }
    out.extend_from_slice(&json[copied..]);
    out
}

/// The JSON [`pack`] was given.
fn unpack(packed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(packed.len() * 2);
    let mut rest = packed;
    while let Some(at) = rest.iter().position(|&b| b < 0x20) {
        out.extend_from_slice(&rest[..at]);
        match (rest[at] as usize).checked_sub(1).and_then(|k| KEYS.get(k)) {
            Some(key) => {
                out.push(b'"');
                out.extend_from_slice(key);
                out.extend_from_slice(b"\":");
            }
            None => out.push(rest[at]),
        }
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
    out
}

impl Cell {
    pub(super) fn live(job: Job) -> Self {
        Cell::Live(Arc::new(tokio::sync::Mutex::new(job)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

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
            assert!(frozen.len() < 240, "{} bytes (about 390 unpacked)", frozen.len());
            let back = frozen.decode("job-1").unwrap();
            assert_eq!(back, original);
            assert!(Arc::ptr_eq(&back.client, &original.client), "the client is shared, not copied");
        }
    }

    /// The client is cut out where `Job` wrote it, not where a job's data holds the same bytes:
    /// data before it (`initial_data`) and after it (a result, a task's params) that reads like
    /// a client written with the cut's own bytes comes back whole.
    #[test]
    fn data_that_looks_like_the_cut_client_comes_back_whole() {
        let (_, cut) = default_client();
        let client_json: Value = serde_json::from_slice(&cut[",\"client\":".len()..]).unwrap();
        let data = json!({"a": 1, "client": client_json.clone()});
        let mut job = Job::new("job-3", "bp", "start", data.clone());
        job.status = JobStatus::Finished;
        job.result = Some(json!({"x": [0], "client": client_json.clone()}));
        job.client = Arc::new(ClientConfig { name: "c".into(), id: "toml:c".into(), ..Default::default() });
        let original = job.clone();
        let back = Frozen::new(&mut job).unwrap().decode("job-3").unwrap();
        assert_eq!(back, original);
        assert_eq!(back.initial_data, data);
    }

    #[test]
    fn packing_gives_back_the_same_bytes_whatever_the_data() {
        // Keys in the job's data, key names as values, escaped quotes before a colon, control
        // characters (escaped by serde_json), non-ASCII, an empty key, nesting.
        let data = json!({
            "status": "status",
            "path": {"path": ["path", "\"path\":", "a\\\"status\":"]},
            "x\"status": "\u{1}\u{1f}\n\t",
            "ключ": "значение 🎉",
            "": {"result": null, "security": [1, 2.5e-300, -0.0, true]},
            "status\\": "transitions"
        });
        let mut job = Job::new("job-2", "status", "result", data);
        job.status = JobStatus::WaitingForHuman;
        job.error_message = Some("\"status\":\"failed\"".into());
        job.state_history.insert("signer_id".into(), json!({"task_id": "\\"}));
        let json = serde_json::to_vec(&job).unwrap();
        let packed = pack(&json);
        assert!(packed.len() < json.len());
        assert_eq!(unpack(&packed), json);
        let back: Job = serde_json::from_slice(&unpack(&packed)).unwrap();
        assert_eq!(back, job);
        // Cut-off input (never written by serde_json) is copied, not a panic.
        for cut in [&b"{\"status\"\\"[..], b"\"abc\\", b"\"", b"{\"status\""] {
            assert_eq!(unpack(&pack(cut)), cut);
        }
        // Every key is packed when it is a key, and kept when it is a value.
        for key in KEYS {
            let key = std::str::from_utf8(key).unwrap();
            let json = serde_json::to_vec(&json!({ key: key })).unwrap();
            let packed = pack(&json);
            assert_eq!(packed.len(), json.len() - key.len() - 2, "{key}");
            assert_eq!(unpack(&packed), json, "{key}");
        }
    }
}
