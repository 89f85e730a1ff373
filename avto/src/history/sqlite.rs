//! SQLite history (feature `history-sqlite`): one file in WAL mode, `timestamp` as REAL epoch seconds.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::query_builder::Separated;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Executor, QueryBuilder, Row, Sqlite};

use super::rows::{
    db, outcomes, push_row, push_worker_row, records, worker_records, Dialect, COLUMNS, OUTCOME_CHUNK, WORKER_COLUMNS,
};
use super::{HistoryBackend, HistoryError, HistoryRecord, TaskOutcomes, WorkerHistoryRecord, SCHEMA_VERSION};

/// Versioned schema: `(version, description, statements)`. Append only; never edit a released one.
pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "job_history table",
        "CREATE TABLE job_history (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        job_id TEXT NOT NULL,
        client TEXT,
        blueprint TEXT,
        timestamp REAL NOT NULL,
        event_type TEXT NOT NULL,
        state TEXT,
        status TEXT,
        duration_ms INTEGER,
        previous_state TEXT,
        next_state TEXT,
        worker_id TEXT,
        origin_task_id TEXT,
        attempt_number INTEGER,
        details TEXT,
        context_snapshot TEXT
    );
    CREATE INDEX idx_job_history_job ON job_history (job_id, timestamp, seq);
    CREATE INDEX idx_job_history_worker_ts ON job_history (worker_id, timestamp);
    CREATE INDEX idx_job_history_client_ts ON job_history (client, timestamp);",
    ),
    (
        2,
        "worker_history table",
        "CREATE TABLE worker_history (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        worker_id TEXT NOT NULL,
        timestamp REAL NOT NULL,
        event_type TEXT NOT NULL,
        worker_info_snapshot TEXT
    );
    CREATE INDEX idx_worker_history_worker_ts ON worker_history (worker_id, timestamp, seq);",
    ),
];

/// History in a SQLite database.
#[derive(Debug)]
pub(super) struct SqliteHistory {
    pool: SqlitePool,
    target: String,
}

impl SqliteHistory {
    /// Opens (creating if missing) the file, or an in-memory database for `None`, and migrates it.
    pub(super) async fn connect(path: Option<PathBuf>, timeout: Duration) -> Result<Self, HistoryError> {
        let target = match &path {
            Some(p) => format!("sqlite:{}", p.display()),
            None => "sqlite::memory:".into(),
        };
        let connect_err = |e: sqlx::Error| HistoryError::Connect {
            target: target.clone(),
            message: e.to_string(),
            source: Some(Box::new(e)),
        };
        let pool = match &path {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    if !dir.is_dir() {
                        return Err(HistoryError::Connect {
                            target,
                            message: format!("directory {} does not exist", dir.display()),
                            source: None,
                        });
                    }
                }
                let opts = SqliteConnectOptions::new()
                    .filename(p)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(5));
                SqlitePoolOptions::new().max_connections(4).acquire_timeout(timeout).connect_with(opts).await
            }
            // One connection that never closes: each in-memory connection is its own database.
            None => {
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .acquire_timeout(timeout)
                    .connect_with(SqliteConnectOptions::new().in_memory(true))
                    .await
            }
        }
        .map_err(connect_err)?;
        let h = SqliteHistory { pool, target };
        h.migrate().await?;
        Ok(h)
    }

    async fn migrate(&self) -> Result<(), HistoryError> {
        let fail = |e: sqlx::Error| HistoryError::Migration {
            target: self.target.clone(),
            message: e.to_string(),
            source: Some(Box::new(e)),
        };
        let mut conn = self.pool.acquire().await.map_err(fail)?;
        (&mut *conn)
            .execute(
                "CREATE TABLE IF NOT EXISTS avto_schema_migrations (
                version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at REAL NOT NULL)",
            )
            .await
            .map_err(fail)?;
        // BEGIN IMMEDIATE takes the write lock first, so two processes never migrate at once.
        (&mut *conn).execute("BEGIN IMMEDIATE").await.map_err(fail)?;
        let result: Result<(), HistoryError> = async {
            let current: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM avto_schema_migrations")
                .fetch_one(&mut *conn)
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
                (&mut *conn).execute(*sql).await.map_err(|e| HistoryError::Migration {
                    target: self.target.clone(),
                    message: format!("migration {version} ({description}): {e}"),
                    source: Some(Box::new(e)),
                })?;
                sqlx::query("INSERT INTO avto_schema_migrations (version, description, applied_at) VALUES (?, ?, ?)")
                    .bind(version)
                    .bind(description)
                    .bind(super::next_timestamp_us() as f64 / 1e6)
                    .execute(&mut *conn)
                    .await
                    .map_err(fail)?;
                tracing::info!(target = %self.target, version, description, "history schema migrated");
            }
            Ok(())
        }
        .await;
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        (&mut *conn).execute(end).await.map_err(fail)?;
        result
    }
}

/// `timestamp` is REAL epoch seconds; the event id and JSON columns are TEXT.
impl Dialect for Sqlite {
    fn timestamp_us(row: &SqliteRow) -> Result<i64, sqlx::Error> {
        Ok((row.try_get::<f64, _>("timestamp")? * 1e6).round() as i64)
    }

    fn push_event_id<'a>(values: &mut Separated<'_, 'a, Self, &'static str>, event_id: &'a str) {
        values.push_bind(event_id);
    }

    fn push_timestamp(values: &mut Separated<'_, '_, Self, &'static str>, us: i64) {
        values.push_bind(us as f64 / 1e6);
    }

    fn push_json<'a>(values: &mut Separated<'_, 'a, Self, &'static str>, json: Option<Cow<'a, str>>) {
        values.push_bind(json);
    }
}

/// The latest row per job (window function), optionally of one client.
fn latest_sql(client: bool) -> String {
    format!(
        "SELECT {COLUMNS}, seq FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY job_id ORDER BY timestamp DESC, seq DESC) AS rn
         FROM job_history {}) WHERE rn = 1",
        if client { "WHERE client = ?" } else { "" }
    )
}

impl HistoryBackend for SqliteHistory {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn insert<'a>(&'a self, rows: &'a [HistoryRecord]) -> BoxFuture<'a, Result<(), HistoryError>> {
        Box::pin(async move {
            if rows.is_empty() {
                return Ok(());
            }
            let mut q: QueryBuilder<'_, Sqlite> = QueryBuilder::new(format!("INSERT INTO job_history ({COLUMNS}) "));
            q.push_values(rows, |mut b, r| push_row(&mut b, r));
            q.build().execute(&self.pool).await.map_err(db)?;
            Ok(())
        })
    }

    fn job_history<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, Result<Vec<HistoryRecord>, HistoryError>> {
        Box::pin(async move {
            let sql = format!("SELECT {COLUMNS} FROM job_history WHERE job_id = ? ORDER BY timestamp, seq");
            let rows = sqlx::query(&sql).bind(job_id).fetch_all(&self.pool).await.map_err(db)?;
            records::<Sqlite>(&rows)
        })
    }

    fn jobs<'a>(
        &'a self,
        client: Option<&'a str>,
        limit: usize,
        offset: usize,
    ) -> BoxFuture<'a, Result<Vec<HistoryRecord>, HistoryError>> {
        Box::pin(async move {
            let sql = format!("{} ORDER BY timestamp DESC, seq DESC LIMIT ? OFFSET ?", latest_sql(client.is_some()));
            let mut q = sqlx::query(&sql);
            if let Some(c) = client {
                q = q.bind(c);
            }
            let rows = q.bind(limit as i64).bind(offset as i64).fetch_all(&self.pool).await.map_err(db)?;
            records::<Sqlite>(&rows)
        })
    }

    fn status_counts<'a>(
        &'a self,
        client: Option<&'a str>,
    ) -> BoxFuture<'a, Result<BTreeMap<String, u64>, HistoryError>> {
        Box::pin(async move {
            let sql =
                format!("SELECT COALESCE(status, ''), COUNT(*) FROM ({}) GROUP BY 1", latest_sql(client.is_some()));
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
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM avto_schema_migrations")
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
            let mut q: QueryBuilder<'_, Sqlite> =
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
                "SELECT {WORKER_COLUMNS}, seq FROM worker_history WHERE worker_id = ? AND timestamp >= ?
                 ORDER BY timestamp DESC, seq DESC LIMIT ?"
            );
            let rows = sqlx::query(&sql)
                .bind(worker_id)
                .bind(since_us as f64 / 1e6)
                .bind(limit.min(i64::MAX as usize) as i64)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
            let mut v = worker_records::<Sqlite>(&rows)?;
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
            let mut out = HashMap::new();
            for chunk in worker_ids.chunks(OUTCOME_CHUNK) {
                // CASE evaluates lazily: a `details` that is not JSON counts as no failure
                // instead of failing the query.
                let mut q: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
                    "SELECT worker_id, COUNT(*), SUM(CASE WHEN json_valid(details) THEN \
                     (CASE WHEN json_extract(details, '$.result_status') = 'failure' THEN 1 ELSE 0 END) ELSE 0 END) \
                     FROM job_history WHERE event_type = 'task_finished' AND timestamp >= ",
                );
                q.push_bind(since_us as f64 / 1e6).push(" AND worker_id IN (");
                let mut ids = q.separated(", ");
                for id in chunk {
                    ids.push_bind(id.as_str());
                }
                q.push(") GROUP BY worker_id");
                let rows: Vec<(String, i64, i64)> = q.build_query_as().fetch_all(&self.pool).await.map_err(db)?;
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
    }

    /// A failure caused by sqlx keeps the `sqlx::Error` as its source, with the same text as
    /// when the cause was flattened into a String; a failure with no driver error has no source.
    #[tokio::test]
    async fn errors_keep_the_sqlx_error_as_their_source() {
        use std::error::Error as _;
        use std::time::Duration;

        use super::{HistoryError, SqliteHistory};

        let timeout = Duration::from_secs(5);
        let scratch = std::env::temp_dir().join(format!("avto-history-errors-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&scratch).unwrap();

        // A directory is not a database file.
        let err = SqliteHistory::connect(Some(scratch.clone()), timeout).await.unwrap_err();
        assert!(matches!(err, HistoryError::Connect { .. }), "{err:?}");
        let cause = err.source().expect("the sqlx error").downcast_ref::<sqlx::Error>().expect("a sqlx::Error");
        assert_eq!(err.to_string(), format!("history database sqlite:{}: cannot connect: {cause}", scratch.display()));

        let missing = scratch.join("no-such-dir").join("h.db");
        let err = SqliteHistory::connect(Some(missing.clone()), timeout).await.unwrap_err();
        assert!(err.source().is_none(), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "history database sqlite:{}: cannot connect: directory {} does not exist",
                missing.display(),
                scratch.join("no-such-dir").display()
            )
        );

        // A foreign `job_history` table makes migration 1 fail.
        let file = scratch.join("foreign.db");
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&file).create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        sqlx::query("CREATE TABLE job_history (x INTEGER)").execute(&pool).await.unwrap();
        pool.close().await;
        let err = SqliteHistory::connect(Some(file.clone()), timeout).await.unwrap_err();
        assert!(matches!(err, HistoryError::Migration { .. }), "{err:?}");
        let cause = err.source().expect("the sqlx error").downcast_ref::<sqlx::Error>().expect("a sqlx::Error");
        assert_eq!(
            err.to_string(),
            format!(
                "history database sqlite:{}: migration failed: migration 1 (job_history table): {cause}",
                file.display()
            )
        );

        let err = super::db(sqlx::Error::RowNotFound);
        assert!(matches!(err.source().and_then(|c| c.downcast_ref::<sqlx::Error>()), Some(sqlx::Error::RowNotFound)));
        assert_eq!(err.to_string(), format!("history database error: {}", sqlx::Error::RowNotFound));

        std::fs::remove_dir_all(&scratch).unwrap();
    }
}
