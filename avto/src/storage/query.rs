//! Job queries (issue #18: the dashboard's jobs list, approvals inbox and bulk cancel):
//! [`JobQuery`] (filters, all ANDed), [`JobCursor`] (a position in the order) and [`JobPage`],
//! answered by [`JobStore::query`](crate::storage::JobStore::query) and counted by
//! [`JobStore::count`](crate::storage::JobStore::count).
//!
//! # Order and paging
//!
//! Jobs come newest first by `(created_at_ms desc, id desc)`: a total order, since ids are
//! unique. A page answers the jobs strictly after its [`JobQuery::after`] cursor, and its
//! [`JobPage::next`] is the position where the next page starts (keyset paging), so paging never
//! repeats nor skips a job while new jobs are inserted: a new job lands at its own position,
//! which is ahead of a cursor when it is newer (the next pages never see it) and otherwise
//! simply a job the next pages find in its place.
//!
//! # How the stores answer
//!
//! Both stores keep the jobs in sorted indexes (ordered by `(created_at_ms, id)`): every job,
//! per status (but `finished`, the status of most kept jobs: a query for it walks every job),
//! per blueprint, and each of them per client, plus the ids in lexical order for
//! [`JobQuery::id_prefix`]. A query walks the smallest index that covers its filters (the union
//! of the per-status indexes of its statuses, the blueprint's, or all of the client's), checks
//! the other filters per job (status, blueprint membership, id prefix; the time range bounds
//! the walk itself) and stops after [`JOB_QUERY_SCAN_LIMIT`] index entries: a page can then
//! hold fewer than `limit` jobs (even none) and still have a `next` cursor, which means "more
//! may follow from here". `next: None` means nothing more matches. An id prefix that at most
//! [`JOB_QUERY_PREFIX_CANDIDATES`] ids share is answered from the id index (exact, whatever the
//! other filters); a shorter, commoner prefix is checked per job during the walk.
//!
//! # Counting
//!
//! [`JobStore::count`](crate::storage::JobStore::count) ignores `after` and `limit`. It is
//! exact when the per-status counts decide it (statuses and client only), or the chosen index
//! (or union of per-status indexes) alone decides the filters (client, statuses or blueprint
//! but not both, time range; no id prefix): one `O(log n)` lookup per index. Otherwise it walks at most [`JOB_QUERY_COUNT_LIMIT`] entries of the index
//! in the time range: exact when the walk ends in time, else an estimate (the share of matches
//! in the walked entries times the entries in range).

use std::fmt;
use std::str::FromStr;

use super::StorageError;
use crate::job::{Job, JobStatus};

/// Most jobs one page holds ([`JobQuery::limit`]).
pub const JOB_QUERY_MAX_LIMIT: usize = 200;
/// Most index entries one query walks before it answers a short page with a `next` cursor.
pub const JOB_QUERY_SCAN_LIMIT: usize = 50_000;
/// Most index entries [`JobStore::count`](crate::storage::JobStore::count) walks before it
/// estimates.
pub const JOB_QUERY_COUNT_LIMIT: usize = 200_000;
/// An id prefix shared by at most this many ids is answered from the id index.
pub const JOB_QUERY_PREFIX_CANDIDATES: usize = 10_000;
/// Longest id a cursor or an id prefix may carry, in bytes.
pub const JOB_QUERY_MAX_ID: usize = 200;
/// Longest client identity or blueprint name a query may carry, in bytes.
pub const JOB_QUERY_MAX_NAME: usize = 256;

/// Which jobs to answer; every filter that is set must hold (AND).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobQuery {
    /// The client identity ([`ClientConfig::id`](crate::ClientConfig::id)) whose jobs to answer;
    /// `None` = every client's (the operator).
    pub client: Option<String>,
    /// Any of these statuses; empty = any status.
    pub statuses: Vec<JobStatus>,
    /// Jobs of this blueprint.
    pub blueprint: Option<String>,
    /// Created at or after this time (epoch ms).
    pub created_from_ms: Option<u64>,
    /// Created at or before this time (epoch ms).
    pub created_to_ms: Option<u64>,
    /// Job ids starting with this (empty = no filter).
    pub id_prefix: Option<String>,
    /// Answer the jobs after this position (a previous page's [`JobPage::next`]).
    pub after: Option<JobCursor>,
    /// Most jobs on the page, `1..=`[`JOB_QUERY_MAX_LIMIT`].
    pub limit: usize,
}

impl Default for JobQuery {
    /// Every job of every client, 50 a page.
    fn default() -> Self {
        JobQuery {
            client: None,
            statuses: Vec::new(),
            blueprint: None,
            created_from_ms: None,
            created_to_ms: None,
            id_prefix: None,
            after: None,
            limit: 50,
        }
    }
}

impl JobQuery {
    /// Every job of `client` (its identity), 50 a page.
    pub fn client(client: impl Into<String>) -> Self {
        JobQuery { client: Some(client.into()), ..Self::default() }
    }

    /// Checks the bounds (limit, lengths) and answers the query in the shape the stores use:
    /// statuses sorted without repeats, an empty id prefix dropped. `Err(StorageError::Invalid)`
    /// for a query out of bounds (a client's mistake: answer it with a 4xx).
    pub fn checked(&self) -> Result<CheckedQuery<'_>, StorageError> {
        if self.limit == 0 || self.limit > JOB_QUERY_MAX_LIMIT {
            return Err(invalid(format!("limit must be 1..={JOB_QUERY_MAX_LIMIT}, not {}", self.limit)));
        }
        for (what, v) in [("client", &self.client), ("blueprint", &self.blueprint)] {
            if let Some(v) = v {
                if v.is_empty() || v.len() > JOB_QUERY_MAX_NAME {
                    return Err(invalid(format!("{what} must be 1..={JOB_QUERY_MAX_NAME} bytes")));
                }
            }
        }
        if self.statuses.len() > 4 * JobStatus::ALL.len() {
            return Err(invalid(format!("too many statuses ({})", self.statuses.len())));
        }
        let mut statuses = self.statuses.clone();
        statuses.sort();
        statuses.dedup();
        let id_prefix = self.id_prefix.as_deref().filter(|p| !p.is_empty());
        if let Some(p) = id_prefix {
            check_id("id prefix", p)?;
        }
        Ok(CheckedQuery {
            client: self.client.as_deref(),
            statuses,
            blueprint: self.blueprint.as_deref(),
            from_ms: self.created_from_ms.unwrap_or(0),
            to_ms: self.created_to_ms.unwrap_or(u64::MAX),
            id_prefix,
            after: self.after.as_ref(),
            limit: self.limit,
        })
    }
}

/// A [`JobQuery`] whose bounds were checked ([`JobQuery::checked`]).
#[derive(Debug, Clone)]
pub struct CheckedQuery<'a> {
    pub client: Option<&'a str>,
    /// Sorted, without repeats; empty = any.
    pub statuses: Vec<JobStatus>,
    pub blueprint: Option<&'a str>,
    /// The inclusive time range (0 and `u64::MAX` when open).
    pub from_ms: u64,
    pub to_ms: u64,
    pub id_prefix: Option<&'a str>,
    pub after: Option<&'a JobCursor>,
    pub limit: usize,
}

impl CheckedQuery<'_> {
    /// Whether `(created_at_ms, id)` lies after the cursor (strictly older in the order).
    pub fn after_cursor(&self, created_at_ms: u64, id: &str) -> bool {
        self.after.is_none_or(|c| (created_at_ms, id) < (c.created_at_ms, c.id.as_str()))
    }

    /// Whether the statuses are the only filter besides the client (the per-status counts
    /// answer such a count exactly).
    pub fn by_status_only(&self) -> bool {
        !self.statuses.is_empty()
            && self.blueprint.is_none()
            && self.id_prefix.is_none()
            && self.from_ms == 0
            && self.to_ms == u64::MAX
    }

    /// Whether `job` matches every filter (the cursor aside).
    pub fn matches(&self, job: &Job) -> bool {
        self.client.is_none_or(|c| job.client.id == c)
            && (self.statuses.is_empty() || self.statuses.contains(&job.status))
            && self.blueprint.is_none_or(|b| job.blueprint == b)
            && (self.from_ms..=self.to_ms).contains(&job.created_at_ms)
            && self.id_prefix.is_none_or(|p| job.id.starts_with(p))
    }
}

fn invalid(msg: String) -> StorageError {
    StorageError::Invalid(msg)
}

/// Ids in cursors and prefixes: bounded, no whitespace or control characters.
fn check_id(what: &str, id: &str) -> Result<(), StorageError> {
    if id.is_empty() || id.len() > JOB_QUERY_MAX_ID {
        return Err(invalid(format!("{what} must be 1..={JOB_QUERY_MAX_ID} bytes")));
    }
    if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid(format!("{what} must not hold whitespace or control characters")));
    }
    Ok(())
}

/// A position in the query order: the jobs after it are those strictly older by
/// `(created_at_ms, id)`. Written `<created_at_ms>.<id>` (e.g. `1733000000000.0b7e…`); parsing
/// refuses anything else (bounded: at most 20 digits, a dot and [`JOB_QUERY_MAX_ID`] bytes).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobCursor {
    pub created_at_ms: u64,
    pub id: String,
}

impl JobCursor {
    /// The position of `job`.
    pub fn of(job: &Job) -> Self {
        JobCursor { created_at_ms: job.created_at_ms, id: job.id.clone() }
    }
}

impl fmt::Display for JobCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.created_at_ms, self.id)
    }
}

impl FromStr for JobCursor {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<Self, StorageError> {
        let bad = || invalid("a cursor is `<created_at_ms>.<job id>` as a previous page gave it".into());
        if s.len() > 21 + JOB_QUERY_MAX_ID {
            return Err(bad());
        }
        let (ms, id) = s.split_once('.').ok_or_else(bad)?;
        if ms.is_empty() || ms.len() > 20 || !ms.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let created_at_ms = ms.parse().map_err(|_| bad())?;
        check_id("cursor id", id).map_err(|_| bad())?;
        Ok(JobCursor { created_at_ms, id: id.to_owned() })
    }
}

impl serde::Serialize for JobCursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for JobCursor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One page of a [`JobQuery`], newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Where the next page starts; `None` = nothing more matches. A page holding fewer than
    /// `limit` jobs can still have one (the walk stopped at [`JOB_QUERY_SCAN_LIMIT`]).
    pub next: Option<JobCursor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = JobCursor { created_at_ms: 1_733_000_000_123, id: "0b7e-x.y".into() };
        assert_eq!(c.to_string(), "1733000000123.0b7e-x.y");
        assert_eq!(c.to_string().parse::<JobCursor>().unwrap(), c);
        let long = format!("1.{}", "a".repeat(JOB_QUERY_MAX_ID + 1));
        for bad in ["", ".", "1.", ".id", "x.id", "-1.id", "1 .id", "1.a b", "1.a\nb", "99999999999999999999.a", &long]
        {
            assert!(matches!(bad.parse::<JobCursor>(), Err(StorageError::Invalid(_))), "{bad:?}");
        }
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<JobCursor>(&json).unwrap(), c);
        assert!(serde_json::from_str::<JobCursor>("\"nope\"").is_err());
    }

    #[test]
    fn queries_are_bounded() {
        let ok =
            JobQuery { statuses: vec![JobStatus::Failed, JobStatus::Failed, JobStatus::Pending], ..Default::default() };
        assert_eq!(ok.checked().unwrap().statuses, vec![JobStatus::Pending, JobStatus::Failed]);
        for q in [
            JobQuery { limit: 0, ..Default::default() },
            JobQuery { limit: JOB_QUERY_MAX_LIMIT + 1, ..Default::default() },
            JobQuery { blueprint: Some(String::new()), ..Default::default() },
            JobQuery { client: Some("c".repeat(JOB_QUERY_MAX_NAME + 1)), ..Default::default() },
            JobQuery { id_prefix: Some("a b".into()), ..Default::default() },
            JobQuery { statuses: vec![JobStatus::Failed; 100], ..Default::default() },
        ] {
            assert!(matches!(q.checked(), Err(StorageError::Invalid(_))), "{q:?}");
        }
        assert_eq!(
            JobQuery { id_prefix: Some(String::new()), ..Default::default() }.checked().unwrap().id_prefix,
            None
        );
    }
}
