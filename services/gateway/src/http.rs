//! The HTTP API: `POST /api/v1/signals/prometheus`, `/healthz`, `/readyz`, `/metrics`.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use remedy_api::{
    audit::{AuditEvent, Outcome},
    now_rfc3339,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;

use crate::{
    alert::{self, AlertStatus, Signal},
    metrics::Metrics,
    redis_store::{Claim, RedisStore},
    store::{Creation, RrStore},
};

/// How long a duplicate waits for a concurrent first delivery to create the resource.
const CREATION_WAIT: Duration = Duration::from_millis(100);
const CREATION_WAIT_ROUNDS: usize = 20;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState<S> {
    /// RemediationRequest storage.
    pub store: S,
    /// Deduplication claims and audit outbox.
    pub redis: RedisStore,
    /// Metrics.
    pub metrics: Metrics,
    /// Woken after outbox pushes.
    pub wake: Arc<Notify>,
    /// Deduplication window in seconds.
    pub dedup_window_seconds: u64,
}

/// What happened to one alert (snake_case keys, like the audit API).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SignalResult {
    /// `created`, `duplicate`, `ignored` (resolved alerts) or `rejected` (see `reason`).
    pub status: String,
    /// The alert's fingerprint.
    pub fingerprint: String,
    /// Namespace of the RemediationRequest.
    pub namespace: String,
    /// Name of the RemediationRequest (none for ignored and rejected alerts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation_request: Option<String>,
    /// Occurrences counted so far, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurrence_count: Option<i64>,
    /// Why the alert was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer to a webhook call.
#[derive(Debug, Serialize, Deserialize)]
pub struct WebhookResponse {
    /// One result per alert, in payload order.
    pub results: Vec<SignalResult>,
}

/// The whole router.
pub fn router<S: RrStore>(state: AppState<S>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/api/v1/signals/prometheus", post(receive::<S>))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<S>))
        .route("/metrics", get(metrics::<S>))
        .with_state(state)
}

fn error(status: StatusCode, reason: String) -> Response {
    (status, Json(json!({ "error": reason }))).into_response()
}

async fn receive<S: RrStore>(State(st): State<AppState<S>>, body: Bytes) -> Response {
    let signals = match alert::parse(&body) {
        Ok(s) => s,
        Err(e) => {
            st.metrics.signal("rejected");
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let mut results = Vec::with_capacity(signals.len());
    for signal in &signals {
        match accept(&st, signal).await {
            Ok(r) => {
                st.metrics.signal(match r.status.as_str() {
                    "created" => "created",
                    "duplicate" => "duplicate",
                    "rejected" => "rejected",
                    _ => "ignored",
                });
                results.push(r);
            }
            Err(e) => {
                st.metrics.signal("error");
                tracing::error!(fingerprint = %signal.fingerprint, error = %format!("{e:#}"), "signal not accepted");
                return error(StatusCode::SERVICE_UNAVAILABLE, format!("signal not accepted, retry: {e:#}"));
            }
        }
    }
    st.wake.notify_one();
    let status = if results.iter().any(|r| r.status == "created") {
        StatusCode::CREATED
    } else if results.iter().any(|r| r.status == "duplicate") {
        StatusCode::ACCEPTED
    } else if let Some(rejected) = results.iter().find(|r| r.status == "rejected") {
        let reason = rejected.reason.clone().unwrap_or_default();
        let body = json!({ "error": reason, "results": results });
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    } else {
        StatusCode::OK
    };
    (status, Json(WebhookResponse { results })).into_response()
}

/// Handles one alert. The first delivery opens the fingerprint's deduplication window and
/// creates its RemediationRequest; deliveries inside the window count occurrences on the name
/// the window's claim holds; after the window a new resource is created. When creating fails
/// the claim is dropped, so Alertmanager's retry is handled afresh.
async fn accept<S: RrStore>(st: &AppState<S>, signal: &Signal) -> anyhow::Result<SignalResult> {
    if signal.status == AlertStatus::Resolved {
        return Ok(result(signal, "ignored", None, None));
    }
    let opened = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let name = alert::rr_name(&signal.fingerprint, opened);
    match st.redis.claim(&signal.fingerprint, &name, st.dedup_window_seconds).await? {
        Claim::Opened => create_new(st, signal, &name).await,
        Claim::Held(name) => duplicate(st, signal, &name).await,
    }
}

async fn create_new<S: RrStore>(st: &AppState<S>, signal: &Signal, name: &str) -> anyhow::Result<SignalResult> {
    let created = match st.store.create(&signal.remediation_request(name), &now_rfc3339()).await {
        Ok(created) => created,
        Err(e) => {
            if let Err(release) = st.redis.release(&signal.fingerprint).await {
                tracing::warn!(error = %format!("{release:#}"), "releasing deduplication claim");
            }
            return Err(e);
        }
    };
    match created {
        Creation::NamespaceNotFound => {
            // Nothing was created; drop the claim so the alert is handled afresh once the
            // namespace exists.
            st.redis.release(&signal.fingerprint).await?;
            tracing::warn!(namespace = %signal.namespace, alert = %signal.name, "alert for a missing namespace rejected");
            let mut r = result(signal, "rejected", None, None);
            r.reason = Some(format!("namespace {:?} does not exist", signal.namespace));
            Ok(r)
        }
        Creation::Created => {
            audit(st, signal, name, "gateway.signal.received", json!({})).await?;
            Ok(result(signal, "created", Some(name), Some(1)))
        }
        // Left over from an earlier delivery whose answer was lost: an occurrence.
        Creation::AlreadyExists => duplicate(st, signal, name).await,
    }
}

async fn duplicate<S: RrStore>(st: &AppState<S>, signal: &Signal, name: &str) -> anyhow::Result<SignalResult> {
    for _ in 0..CREATION_WAIT_ROUNDS {
        if let Some(count) = st.store.record_occurrence(&signal.namespace, name, &now_rfc3339()).await? {
            audit(st, signal, name, "gateway.signal.deduplicated", json!({"occurrence_count": count})).await?;
            return Ok(result(signal, "duplicate", Some(name), Some(count)));
        }
        // A concurrent first delivery holds the claim and may still be creating it.
        tokio::time::sleep(CREATION_WAIT).await;
    }
    // The window is open but its resource is gone (deleted): create it again.
    match st.store.create(&signal.remediation_request(name), &now_rfc3339()).await? {
        Creation::Created => {
            audit(st, signal, name, "gateway.signal.received", json!({})).await?;
            Ok(result(signal, "created", Some(name), Some(1)))
        }
        Creation::AlreadyExists => anyhow::bail!("RemediationRequest {name} appeared concurrently"),
        Creation::NamespaceNotFound => anyhow::bail!("namespace {} was deleted", signal.namespace),
    }
}

fn result(signal: &Signal, status: &str, name: Option<&str>, occurrence_count: Option<i64>) -> SignalResult {
    SignalResult {
        status: status.to_owned(),
        fingerprint: signal.fingerprint.clone(),
        namespace: signal.namespace.clone(),
        remediation_request: name.map(str::to_owned),
        occurrence_count,
        reason: None,
    }
}

/// Writes an audit event to the durable outbox; the forwarder delivers it.
async fn audit<S: RrStore>(
    st: &AppState<S>,
    signal: &Signal,
    name: &str,
    event_type: &str,
    mut data: serde_json::Value,
) -> anyhow::Result<()> {
    data["fingerprint"] = signal.fingerprint.clone().into();
    data["alertname"] = signal.name.clone().into();
    data["severity"] = signal.severity.clone().into();
    let event = AuditEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        event_type: event_type.to_owned(),
        event_timestamp: now_rfc3339(),
        correlation_id: name.to_owned(),
        actor: "gateway".to_owned(),
        namespace: Some(signal.namespace.clone()),
        resource: Some(format!("RemediationRequest/{name}")),
        outcome: Outcome::Success,
        data,
    };
    st.redis.outbox_push(&serde_json::to_string(&event)?).await
}

async fn readyz<S: RrStore>(State(st): State<AppState<S>>) -> (StatusCode, String) {
    let (redis, api) = tokio::join!(st.redis.ping(), st.store.ready());
    match (redis, api) {
        (Ok(()), Ok(())) => (StatusCode::OK, "ready".to_owned()),
        (r, a) => {
            let reasons: Vec<String> = [r.err(), a.err()].into_iter().flatten().collect();
            (StatusCode::SERVICE_UNAVAILABLE, reasons.join("; "))
        }
    }
}

async fn metrics<S: RrStore>(State(st): State<AppState<S>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], st.metrics.render())
        .into_response()
}
