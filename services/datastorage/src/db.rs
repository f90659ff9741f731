//! PostgreSQL access: migrations, readiness, audit event storage.

use std::time::{Duration, Instant};

use anyhow::Context;
use remedy_api::audit::AuditEvent;
use sqlx::{
    PgPool, Row,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// The migrations in `services/datastorage/migrations`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// Largest number of events one query returns.
pub const MAX_LIMIT: i64 = 1000;

/// Version of the newest embedded migration.
pub fn head_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// A pool that connects on first use, so the service starts before the database answers.
pub fn lazy_pool(opts: PgConnectOptions) -> PgPool {
    PgPoolOptions::new().max_connections(10).acquire_timeout(Duration::from_secs(3)).connect_lazy_with(opts)
}

/// Connects, retrying until `timeout` has passed (the database may still be starting).
pub async fn connect_with_retry(opts: PgConnectOptions, timeout: Duration) -> anyhow::Result<PgPool> {
    let deadline = Instant::now() + timeout;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts.clone())
            .await
        {
            Ok(pool) => return Ok(pool),
            Err(e) if Instant::now() < deadline => {
                tracing::info!(attempt, error = %e, "database not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("database still unreachable after {attempt} attempts ({timeout:?})"));
            }
        }
    }
}

/// Applies all pending migrations (idempotent; concurrent runs serialize on a lock).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("applying migrations")
}

/// `Ok` when the database answers and the newest embedded migration is applied.
pub async fn ready(pool: &PgPool) -> Result<(), String> {
    let applied: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .map_err(|e| format!("database not ready: {e}"))?;
    let head = head_version();
    match applied {
        Some(v) if v >= head => Ok(()),
        other => Err(format!(
            "migrations not at head: applied {}, head {head}",
            other.map_or_else(|| "none".to_owned(), |v| v.to_string())
        )),
    }
}

/// Stores `event` unless its id is already stored; returns whether it was new.
pub async fn insert_event(pool: &PgPool, event: &AuditEvent) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO audit_events
            (event_id, event_type, event_timestamp, correlation_id, actor, namespace, resource, outcome, data)
         VALUES ($1, $2, $3::timestamptz, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&event.event_id)
    .bind(&event.event_type)
    .bind(&event.event_timestamp)
    .bind(&event.correlation_id)
    .bind(&event.actor)
    .bind(&event.namespace)
    .bind(&event.resource)
    .bind(event.outcome.as_str())
    .bind(if event.data.is_null() { serde_json::json!({}) } else { event.data.clone() })
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Filters for [`query_events`]; `None` matches everything.
#[derive(Debug, Default, Clone)]
pub struct EventFilter {
    /// Only events with this correlation id.
    pub correlation_id: Option<String>,
    /// Only events of this type.
    pub event_type: Option<String>,
    /// At most this many events (1..=[`MAX_LIMIT`]).
    pub limit: i64,
}

/// Events matching `filter`, oldest first.
pub async fn query_events(pool: &PgPool, filter: &EventFilter) -> Result<Vec<AuditEvent>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT event_id, event_type,
                to_char(event_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS ts,
                correlation_id, actor, namespace, resource, outcome, data
         FROM audit_events
         WHERE ($1::text IS NULL OR correlation_id = $1)
           AND ($2::text IS NULL OR event_type = $2)
         ORDER BY event_timestamp, id
         LIMIT $3",
    )
    .bind(&filter.correlation_id)
    .bind(&filter.event_type)
    .bind(filter.limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            let outcome: String = row.try_get("outcome")?;
            Ok(AuditEvent {
                event_id: row.try_get("event_id")?,
                event_type: row.try_get("event_type")?,
                event_timestamp: row.try_get("ts")?,
                correlation_id: row.try_get("correlation_id")?,
                actor: row.try_get("actor")?,
                namespace: row.try_get("namespace")?,
                resource: row.try_get("resource")?,
                outcome: outcome.parse().map_err(|e: String| sqlx::Error::Decode(e.into()))?,
                data: row.try_get("data")?,
            })
        })
        .collect()
}
