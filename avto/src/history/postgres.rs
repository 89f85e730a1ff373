//! PostgreSQL history (feature `history-postgres`): `event_id UUID`, `timestamp TIMESTAMPTZ`,
//! `details` / `context_snapshot` JSONB.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::query_builder::Separated;
use sqlx::{Executor, Postgres, QueryBuilder, Row};

use super::rows::{
    db, outcomes, push_row, push_worker_row, records, worker_records, Dialect, COLUMNS, OUTCOME_CHUNK, WORKER_COLUMNS,
};
use super::{redact, HistoryBackend, HistoryError, HistoryRecord, TaskOutcomes, WorkerHistoryRecord, SCHEMA_VERSION};

/// Versioned schema: `(version, description, statements)`. Append only; never edit a released one.
pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "job_history table",
        "CREATE TABLE job_history (
        seq BIGSERIAL PRIMARY KEY,
        event_id UUID NOT NULL UNIQUE,
        job_id TEXT NOT NULL,
        client TEXT,
        blueprint TEXT,
        timestamp TIMESTAMPTZ NOT NULL,
        event_type TEXT NOT NULL,
        state TEXT,
        status TEXT,
        duration_ms BIGINT,
        previous_state TEXT,
        next_state TEXT,
        worker_id TEXT,
        origin_task_id TEXT,
        attempt_number BIGINT,
        details JSONB,
        context_snapshot JSONB
    );
    CREATE INDEX idx_job_history_job ON job_history (job_id, timestamp, seq);
    CREATE INDEX idx_job_history_worker_ts ON job_history (worker_id, timestamp);
    CREATE INDEX idx_job_history_client_ts ON job_history (client, timestamp);",
    ),
    (
        2,
        "worker_history table",
        "CREATE TABLE worker_history (
        seq BIGSERIAL PRIMARY KEY,
        event_id UUID NOT NULL UNIQUE,
        worker_id TEXT NOT NULL,
        timestamp TIMESTAMPTZ NOT NULL,
        event_type TEXT NOT NULL,
        worker_info_snapshot JSONB
    );
    CREATE INDEX idx_worker_history_worker_ts ON worker_history (worker_id, timestamp, seq);",
    ),
];

/// Advisory lock key held while migrating (several orchestrators may start at once).
const MIGRATION_LOCK: i64 = 0x6176_746f_6869_7374; // "avtohist"

/// The columns of a select as the shared row mapper reads them: the UUID and JSONB columns as
/// text, the timestamp as epoch microseconds (`ts_us`, see [`Dialect::timestamp_us`]).
const SELECT_COLUMNS: &str = "event_id::text AS event_id, job_id, client, blueprint, \
     (EXTRACT(EPOCH FROM timestamp) * 1000000)::bigint AS ts_us, event_type, state, status, duration_ms, \
     previous_state, next_state, worker_id, origin_task_id, attempt_number, details::text AS details, \
     context_snapshot::text AS context_snapshot";

/// The columns of a worker history select, read like [`SELECT_COLUMNS`].
const WORKER_SELECT_COLUMNS: &str = "event_id::text AS event_id, worker_id, \
     (EXTRACT(EPOCH FROM timestamp) * 1000000)::bigint AS ts_us, event_type, \
     worker_info_snapshot::text AS worker_info_snapshot";

/// `timestamp >= ` the epoch microseconds bound as `$n`.
fn since(n: usize) -> String {
    format!("timestamp >= TIMESTAMPTZ 'epoch' + ${n} * INTERVAL '1 microsecond'")
}

/// History in a PostgreSQL database.
#[derive(Debug)]
pub(super) struct PgHistory {
    pool: PgPool,
    target: String,
}

/// JSONB rejects the NUL character; keep the row and replace it.
fn jsonb_text(s: &str) -> Cow<'_, str> {
    if s.contains("\\u0000") {
        Cow::Owned(s.replace("\\u0000", "\\ufffd"))
    } else {
        Cow::Borrowed(s)
    }
}

impl PgHistory {
    /// Connects (retrying a refused connection until `timeout`) and migrates.
    pub(super) async fn connect(dsn: &str, timeout: Duration) -> Result<Self, HistoryError> {
        let target = redact(dsn);
        let connect_err = |message: String, e: sqlx::Error| HistoryError::Connect {
            target: target.clone(),
            message,
            source: Some(Box::new(e)),
        };
        let opts = PgConnectOptions::from_str(dsn).map_err(|e| connect_err(e.to_string(), e))?;
        let pool =
            PgPoolOptions::new().max_connections(4).acquire_timeout(timeout).connect_with(opts).await.map_err(|e| {
                match e {
                    sqlx::Error::PoolTimedOut => connect_err(format!("no connection within {timeout:?}"), e),
                    e => connect_err(e.to_string(), e),
                }
            })?;
        let h = PgHistory { pool, target };
        h.migrate().await?;
        Ok(h)
    }

    async fn migrate(&self) -> Result<(), HistoryError> {
        let fail = |e: sqlx::Error| HistoryError::Migration {
            target: self.target.clone(),
            message: e.to_string(),
            source: Some(Box::new(e)),
        };
        let mut tx = self.pool.begin().await.map_err(fail)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await.map_err(fail)?;
        (&mut *tx)
            .execute(
                "CREATE TABLE IF NOT EXISTS avto_schema_migrations (
                version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            )
            .await
            .map_err(fail)?;
        let current: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0)::bigint FROM avto_schema_migrations")
            .fetch_one(&mut *tx)
            .await
            .map_err(fail)?;
        if current > SCHEMA_VERSION {
            return Err(HistoryError::Migration {
                target: self.target.clone(),
                message: format!(
                    "the database is at schema version {current}, newer than this avto knows ({SCHEMA_VERSION})"
                ),
                source: None,
            });
        }
        for (version, description, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            (&mut *tx).execute(*sql).await.map_err(|e| HistoryError::Migration {
                target: self.target.clone(),
                message: format!("migration {version} ({description}): {e}"),
                source: Some(Box::new(e)),
            })?;
            sqlx::query("INSERT INTO avto_schema_migrations (version, description) VALUES ($1, $2)")
                .bind(version)
                .bind(description)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
            tracing::info!(target = %self.target, version, description, "history schema migrated");
        }
        tx.commit().await.map_err(fail)
    }
}

/// `event_id` is a UUID, `timestamp` a TIMESTAMPTZ, `details` and `context_snapshot` JSONB.
impl Dialect for Postgres {
    fn timestamp_us(row: &PgRow) -> Result<i64, sqlx::Error> {
        row.try_get("ts_us")
    }

    fn push_event_id<'a>(values: &mut Separated<'_, 'a, Self, &'static str>, event_id: &'a str) {
        values.push_bind(event_id).push_unseparated("::uuid");
    }

    fn push_timestamp(values: &mut Separated<'_, '_, Self, &'static str>, us: i64) {
        values.push("TIMESTAMPTZ 'epoch' + ").push_bind_unseparated(us).push_unseparated(" * INTERVAL '1 microsecond'");
    }

    fn push_json<'a>(values: &mut Separated<'_, 'a, Self, &'static str>, json: Option<Cow<'a, str>>) {
        values.push_bind(json.map(|s| jsonb_text(&s).into_owned())).push_unseparated("::jsonb");
    }
}

/// The latest row per job (window function), optionally of one client (`$1`).
fn latest_sql(client: bool) -> String {
    format!(
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY job_id ORDER BY timestamp DESC, seq DESC) AS rn
         FROM job_history {}) latest WHERE rn = 1",
        if client { "WHERE client = $1" } else { "" }
    )
}

impl HistoryBackend for PgHistory {
    fn kind(&self) -> &'static str {
        "postgresql"
    }

    fn insert<'a>(&'a self, rows: &'a [HistoryRecord]) -> BoxFuture<'a, Result<(), HistoryError>> {
        Box::pin(async move {
            if rows.is_empty() {
                return Ok(());
            }
            let mut q: QueryBuilder<'_, Postgres> = QueryBuilder::new(format!("INSERT INTO job_history ({COLUMNS}) "));
            q.push_values(rows, |mut b, r| push_row(&mut b, r));
            q.build().execute(&self.pool).await.map_err(db)?;
            Ok(())
        })
    }

    fn job_history<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<Vec<HistoryRecord>, HistoryError>> {
        Box::pin(async move {
            let sql = format!("SELECT {SELECT_COLUMNS} FROM job_history WHERE job_id = $1 ORDER BY timestamp, seq");
            let rows = sqlx::query(&sql).bind(job_id).fetch_all(&self.pool).await.map_err(db)?;
            records::<Postgres>(&rows)
        })
    }

    fn jobs<'a>(
        &'a self,
        client: Option<&'a str>,
        limit: usize,
        offset: usize,
    ) -> BoxFuture<'a, Result<Vec<HistoryRecord>, HistoryError>> {
        Box::pin(async move {
            let n = if client.is_some() { 2 } else { 1 };
            let sql = format!(
                "SELECT {SELECT_COLUMNS} FROM ({}) l ORDER BY timestamp DESC, seq DESC LIMIT ${n} OFFSET ${}",
                latest_sql(client.is_some()),
                n + 1
            );
            let mut q = sqlx::query(&sql);
            if let Some(c) = client {
                q = q.bind(c);
            }
            let rows = q.bind(limit as i64).bind(offset as i64).fetch_all(&self.pool).await.map_err(db)?;
            records::<Postgres>(&rows)
        })
    }

    fn status_counts<'a>(
        &'a self,
        client: Option<&'a str>,
    ) -> BoxFuture<'a, Result<BTreeMap<String, u64>, HistoryError>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT COALESCE(status, ''), COUNT(*)::bigint FROM ({}) l GROUP BY 1",
                latest_sql(client.is_some())
            );
            let mut q = sqlx::query_as::<_, (String, i64)>(&sql);
            if let Some(c) = client {
                q = q.bind(c);
            }
            let rows = q.fetch_all(&self.pool).await.map_err(db)?;
            Ok(rows.into_iter().map(|(s, n)| (s, n as u64)).collect())
        })
    }

    fn schema_version(&self) -> BoxFuture<'_, Result<i64, HistoryError>> {
        Box::pin(async move {
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0)::bigint FROM avto_schema_migrations")
                .fetch_one(&self.pool)
                .await
                .map_err(db)
        })
    }

    fn insert_workers<'a>(&'a self, rows: &'a [WorkerHistoryRecord]) -> BoxFuture<'a, Result<(), HistoryError>> {
        Box::pin(async move {
            if rows.is_empty() {
                return Ok(());
            }
            let mut q: QueryBuilder<'_, Postgres> =
                QueryBuilder::new(format!("INSERT INTO worker_history ({WORKER_COLUMNS}) "));
            q.push_values(rows, |mut b, r| push_worker_row(&mut b, r));
            q.build().execute(&self.pool).await.map_err(db)?;
            Ok(())
        })
    }

    fn worker_history<'a>(
        &'a self,
        worker_id: &'a str,
        since_us: i64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<WorkerHistoryRecord>, HistoryError>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT {WORKER_SELECT_COLUMNS} FROM worker_history WHERE worker_id = $1 AND {}
                 ORDER BY timestamp DESC, seq DESC LIMIT $3",
                since(2)
            );
            let rows = sqlx::query(&sql)
                .bind(worker_id)
                .bind(since_us)
                .bind(limit.min(i64::MAX as usize) as i64)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
            let mut v = worker_records::<Postgres>(&rows)?;
            v.reverse();
            Ok(v)
        })
    }

    fn task_outcomes<'a>(
        &'a self,
        worker_ids: &'a [String],
        since_us: i64,
    ) -> BoxFuture<'a, Result<HashMap<String, TaskOutcomes>, HistoryError>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT worker_id, COUNT(*)::bigint, \
                 SUM(CASE WHEN details->>'result_status' = 'failure' THEN 1 ELSE 0 END)::bigint \
                 FROM job_history WHERE event_type = 'task_finished' AND worker_id = ANY($1) AND {} \
                 GROUP BY worker_id",
                since(2)
            );
            let mut out = HashMap::new();
            for chunk in worker_ids.chunks(OUTCOME_CHUNK) {
                let rows: Vec<(String, i64, i64)> =
                    sqlx::query_as(&sql).bind(chunk).bind(since_us).fetch_all(&self.pool).await.map_err(db)?;
                out.extend(outcomes(rows));
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_numbered_up_to_the_schema_version() {
        for (i, m) in super::MIGRATIONS.iter().enumerate() {
            assert_eq!(m.0, i as i64 + 1);
        }
        assert_eq!(super::MIGRATIONS.last().unwrap().0, super::SCHEMA_VERSION);
        assert_eq!(super::jsonb_text(r#"{"a":"x\u0000"}"#), r#"{"a":"x\ufffd"}"#);
    }

    /// Connect failures keep the `sqlx::Error` as their source, with the same text as when the
    /// cause was flattened into a String (no database needed: nothing listens on port 1).
    #[tokio::test]
    async fn connect_errors_keep_the_sqlx_error_as_their_source() {
        use std::error::Error as _;
        use std::time::Duration;

        use super::{HistoryError, PgHistory};

        let err = PgHistory::connect("postgresql://u:secret@127.0.0.1:notaport/db", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, HistoryError::Connect { .. }), "{err:?}");
        let cause = err.source().expect("the sqlx error").downcast_ref::<sqlx::Error>().expect("a sqlx::Error");
        assert_eq!(
            err.to_string(),
            format!("history database postgresql://u@127.0.0.1:notaport/db: cannot connect: {cause}")
        );

        let timeout = Duration::from_millis(300);
        let err = PgHistory::connect("postgresql://u:secret@127.0.0.1:1/db", timeout).await.unwrap_err();
        assert!(
            matches!(err.source().and_then(|c| c.downcast_ref::<sqlx::Error>()), Some(sqlx::Error::PoolTimedOut)),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("history database postgresql://u@127.0.0.1:1/db: cannot connect: no connection within {timeout:?}")
        );
    }
}
