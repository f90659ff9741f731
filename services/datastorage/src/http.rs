//! The HTTP API: audit events, health and readiness.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use remedy_api::{audit::AuditEvent, runtime::health_router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;

use crate::db::{self, EventFilter, MAX_LIMIT};

/// Default number of events a query returns.
const DEFAULT_LIMIT: i64 = 100;

/// An error answer: `{"error": reason}` with a status code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: String,
}

impl ApiError {
    fn bad_request(reason: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, reason: reason.into() }
    }

    fn unavailable(err: &sqlx::Error) -> Self {
        tracing::warn!(error = %err, "database error");
        Self { status: StatusCode::SERVICE_UNAVAILABLE, reason: format!("database unavailable: {err}") }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.reason }))).into_response()
    }
}

/// The answer to a stored event.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stored {
    /// Id of the event.
    pub event_id: String,
    /// False when the id was already stored (the repeat was ignored).
    pub created: bool,
}

/// The answer to a query.
#[derive(Debug, Serialize, Deserialize)]
pub struct Events {
    /// Matching events, oldest first.
    pub events: Vec<AuditEvent>,
}

/// Query parameters of `GET /api/v1/audit/events`.
#[derive(Debug, Deserialize)]
pub struct EventQuery {
    correlation_id: Option<String>,
    event_type: Option<String>,
    limit: Option<String>,
}

/// The whole router: `/api/v1/audit/events`, `/healthz`, `/readyz`.
pub fn router(pool: PgPool, max_body_bytes: usize) -> Router {
    let ready_pool = pool.clone();
    let ready: remedy_api::runtime::ReadyCheck = Arc::new(move || {
        let pool = ready_pool.clone();
        Box::pin(async move { db::ready(&pool).await })
    });
    Router::new()
        .route("/api/v1/audit/events", get(list_events).post(create_event))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(pool)
        .merge(health_router(ready))
}

async fn create_event(State(pool): State<PgPool>, body: Bytes) -> Result<(StatusCode, Json<Stored>), ApiError> {
    let event: AuditEvent =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid audit event JSON: {e}")))?;
    event.validate().map_err(|e| ApiError::bad_request(format!("invalid audit event: {e}")))?;
    let created = db::insert_event(&pool, &event).await.map_err(|e| ApiError::unavailable(&e))?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(Stored { event_id: event.event_id, created })))
}

async fn list_events(
    State(pool): State<PgPool>,
    query: Result<Query<EventQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Events>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = match query.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!("limit must be an integer in 1..={MAX_LIMIT}")));
            }
        },
    };
    let filter = EventFilter {
        correlation_id: query.correlation_id.filter(|s| !s.is_empty()),
        event_type: query.event_type.filter(|s| !s.is_empty()),
        limit,
    };
    let events = db::query_events(&pool, &filter).await.map_err(|e| ApiError::unavailable(&e))?;
    Ok(Json(Events { events }))
}
