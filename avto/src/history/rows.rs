//! The one mapping between a [`HistoryRecord`] and a `job_history` row (and between a
//! [`WorkerHistoryRecord`] and a `worker_history` row), shared by the SQL backends: which columns a row has, in which order they are bound, and how each field is read
//! back. What SQLite and PostgreSQL store differently (the timestamp, the event id, the JSON
//! columns) is each backend's [`Dialect`]; the SQL statements stay in the backends.

use std::borrow::Cow;
use std::sync::Arc;

use sqlx::query_builder::Separated;
use sqlx::{ColumnIndex, Database, Decode, Encode, Row, Type};

use super::{HistoryError, HistoryRecord, TaskOutcomes, WorkerHistoryRecord};

/// The columns of an insert, in the order [`push_row`] binds them.
pub(super) const COLUMNS: &str = "event_id, job_id, client, blueprint, timestamp, event_type, state, status, \
                                  duration_ms, previous_state, next_state, worker_id, origin_task_id, \
                                  attempt_number, details, context_snapshot";

/// The columns of a `worker_history` insert, in the order [`push_worker_row`] binds them.
pub(super) const WORKER_COLUMNS: &str = "event_id, worker_id, timestamp, event_type, worker_info_snapshot";

/// Worker ids per task-outcome query (bound parameters of one statement).
pub(super) const OUTCOME_CHUNK: usize = 500;

/// How one SQL backend stores the fields whose column types differ between databases.
pub(super) trait Dialect: Database {
    /// The timestamp of a selected row, as epoch microseconds.
    fn timestamp_us(row: &Self::Row) -> Result<i64, sqlx::Error>;
    /// Binds the event id (a UUID in its text form).
    fn push_event_id<'a>(values: &mut Separated<'_, 'a, Self, &'static str>, event_id: &'a str);
    /// Binds the timestamp (epoch microseconds).
    fn push_timestamp(values: &mut Separated<'_, '_, Self, &'static str>, us: i64);
    /// Binds a JSON column (JSON text, or NULL).
    fn push_json<'a>(values: &mut Separated<'_, 'a, Self, &'static str>, json: Option<Cow<'a, str>>);
}

/// Binds the values of one row, in [`COLUMNS`] order (for `QueryBuilder::push_values`).
pub(super) fn push_row<'a, D: Dialect>(values: &mut Separated<'_, 'a, D, &'static str>, r: &'a HistoryRecord)
where
    &'a str: Encode<'a, D> + Type<D>,
    Option<&'a str>: Encode<'a, D> + Type<D>,
    Option<i64>: Encode<'a, D> + Type<D>,
{
    D::push_event_id(values, &r.event_id);
    values.push_bind(r.job_id.as_str()).push_bind(r.client.as_deref()).push_bind(r.blueprint.as_deref());
    D::push_timestamp(values, r.timestamp_us);
    values
        .push_bind(r.event_type.as_str())
        .push_bind(r.state.as_deref())
        .push_bind(r.status.as_deref())
        .push_bind(r.duration_ms)
        .push_bind(r.previous_state.as_deref())
        .push_bind(r.next_state.as_deref())
        .push_bind(r.worker_id.as_deref())
        .push_bind(r.origin_task_id.as_deref())
        .push_bind(r.attempt_number);
    D::push_json(values, r.details.as_ref().map(|d| Cow::Owned(d.to_string())));
    D::push_json(values, r.context_snapshot.as_deref().map(Cow::Borrowed));
}

/// Binds the values of one worker history row, in [`WORKER_COLUMNS`] order.
pub(super) fn push_worker_row<'a, D: Dialect>(
    values: &mut Separated<'_, 'a, D, &'static str>,
    r: &'a WorkerHistoryRecord,
) where
    &'a str: Encode<'a, D> + Type<D>,
{
    D::push_event_id(values, &r.event_id);
    values.push_bind(r.worker_id.as_str());
    D::push_timestamp(values, r.timestamp_us);
    values.push_bind(r.event_type.as_str());
    D::push_json(values, r.worker_info_snapshot.as_deref().map(Cow::Borrowed));
}

/// Selected worker history rows as records.
pub(super) fn worker_records<D: Dialect>(rows: &[D::Row]) -> Result<Vec<WorkerHistoryRecord>, HistoryError>
where
    for<'r> &'r str: ColumnIndex<D::Row>,
    for<'r> String: Decode<'r, D> + Type<D>,
{
    let one = |row: &D::Row| -> Result<WorkerHistoryRecord, sqlx::Error> {
        Ok(WorkerHistoryRecord {
            event_id: row.try_get("event_id")?,
            worker_id: row.try_get("worker_id")?,
            timestamp_us: D::timestamp_us(row)?,
            event_type: row.try_get("event_type")?,
            worker_info_snapshot: row.try_get::<Option<String>, _>("worker_info_snapshot")?.map(Arc::from),
        })
    };
    rows.iter().map(one).collect::<Result<_, _>>().map_err(db)
}

/// `(worker_id, finished, failed)` rows of a task-outcome query as outcomes.
pub(super) fn outcomes(rows: Vec<(String, i64, i64)>) -> impl Iterator<Item = (String, TaskOutcomes)> {
    rows.into_iter().map(|(w, finished, failed)| {
        (w, TaskOutcomes { finished: finished.max(0) as u64, failed: failed.max(0) as u64 })
    })
}

/// A selected row as a record. `details` that is not JSON reads as absent.
pub(super) fn from_row<D: Dialect>(row: &D::Row) -> Result<HistoryRecord, sqlx::Error>
where
    for<'r> &'r str: ColumnIndex<D::Row>,
    for<'r> String: Decode<'r, D> + Type<D>,
    for<'r> i64: Decode<'r, D> + Type<D>,
{
    let json = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
    Ok(HistoryRecord {
        event_id: row.try_get("event_id")?,
        job_id: row.try_get("job_id")?,
        client: row.try_get("client")?,
        blueprint: row.try_get("blueprint")?,
        timestamp_us: D::timestamp_us(row)?,
        event_type: row.try_get("event_type")?,
        state: row.try_get("state")?,
        status: row.try_get("status")?,
        duration_ms: row.try_get("duration_ms")?,
        previous_state: row.try_get("previous_state")?,
        next_state: row.try_get("next_state")?,
        worker_id: row.try_get("worker_id")?,
        origin_task_id: row.try_get("origin_task_id")?,
        attempt_number: row.try_get("attempt_number")?,
        details: json(row.try_get("details")?),
        context_snapshot: row.try_get::<Option<String>, _>("context_snapshot")?.map(Arc::from),
    })
}

/// Every selected row as a record.
pub(super) fn records<D: Dialect>(rows: &[D::Row]) -> Result<Vec<HistoryRecord>, HistoryError>
where
    for<'r> &'r str: ColumnIndex<D::Row>,
    for<'r> String: Decode<'r, D> + Type<D>,
    for<'r> i64: Decode<'r, D> + Type<D>,
{
    rows.iter().map(from_row::<D>).collect::<Result<_, _>>().map_err(db)
}

/// A failed query.
pub(super) fn db(e: sqlx::Error) -> HistoryError {
    HistoryError::Database(Box::new(e))
}
