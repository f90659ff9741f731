//! What happens to one signal, from either source: deduplication in Redis, the
//! RemediationRequest, and its audit event in the durable outbox.

use std::{sync::Arc, time::Duration};

use remedy_api::{
    audit::{AuditEvent, Outcome},
    now_rfc3339,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;

use crate::{
    alert::{self, AlertStatus, Signal},
    failure::{Dependency, OnDependency},
    metrics::Metrics,
    redis_store::{Claim, RedisStore},
    store::{Creation, RrStore},
};

/// How long a duplicate waits for a concurrent first delivery to create the resource.
const CREATION_WAIT: Duration = Duration::from_millis(100);
const CREATION_WAIT_ROUNDS: usize = 20;

/// What happened to one signal (snake_case keys, like the audit API).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SignalResult {
    /// `created`, `duplicate`, `ignored` (resolved alerts), `out_of_scope` or `rejected` (see
    /// `reason`).
    pub status: String,
    /// The alert's fingerprint.
    pub fingerprint: String,
    /// Namespace of the RemediationRequest.
    pub namespace: String,
    /// Name of the RemediationRequest (none for ignored, out-of-scope and rejected alerts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation_request: Option<String>,
    /// Occurrences counted so far, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurrence_count: Option<i64>,
    /// The deduplication window the signal was handled with, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<u64>,
    /// Why the alert was rejected or is out of scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl SignalResult {
    /// A result of `status` for `signal`, naming no resource.
    pub fn of(signal: &Signal, status: &str) -> Self {
        Self {
            status: status.to_owned(),
            fingerprint: signal.fingerprint.clone(),
            namespace: signal.namespace.clone(),
            remediation_request: None,
            occurrence_count: None,
            window_seconds: None,
            reason: None,
        }
    }

    fn on_resource(signal: &Signal, status: &str, name: &str, count: i64) -> Self {
        Self {
            remediation_request: Some(name.to_owned()),
            occurrence_count: Some(count),
            window_seconds: Some(signal.window_seconds),
            ..Self::of(signal, status)
        }
    }

    /// A result with `reason`.
    pub fn because(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// Turns signals into RemediationRequests and audit events.
#[derive(Clone)]
pub struct Intake<S> {
    /// RemediationRequest storage.
    pub store: S,
    /// Deduplication claims and audit outbox.
    pub redis: RedisStore,
    /// Metrics.
    pub metrics: Metrics,
    /// Woken after outbox pushes.
    pub wake: Arc<Notify>,
    /// With this many audit events undelivered, new signals are refused.
    pub outbox_max: i64,
}

impl<S: RrStore> Intake<S> {
    /// Fails, as datastorage's failure, when the outbox holds `outbox_max` events: an accepted
    /// signal's audit event is never dropped, so new ones wait until datastorage catches up.
    pub async fn ensure_outbox_room(&self) -> anyhow::Result<()> {
        let waiting = self.redis.len(&self.redis.outbox_key()).await?;
        if waiting >= self.outbox_max {
            return Err(anyhow::anyhow!(
                "{waiting} audit events wait for delivery (AUDIT_OUTBOX_MAX {})",
                self.outbox_max
            ))
            .on(Dependency::Datastorage);
        }
        Ok(())
    }

    /// Handles one in-scope signal. The first delivery opens the fingerprint's deduplication
    /// window and creates its RemediationRequest; deliveries inside the window count
    /// occurrences on the name the window's claim holds; after the window a new resource is
    /// created. When creating fails the claim is dropped, so the retry is handled afresh.
    pub async fn accept(&self, signal: &Signal) -> anyhow::Result<SignalResult> {
        if signal.status == AlertStatus::Resolved {
            return Ok(SignalResult::of(signal, "ignored"));
        }
        let opened = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let name = alert::rr_name(&signal.fingerprint, opened);
        match self.redis.claim(&signal.fingerprint, &name, signal.window_seconds).await? {
            Claim::Opened => self.create_new(signal, &name).await,
            Claim::Held(name) => self.duplicate(signal, &name).await,
        }
    }

    /// Counts a result in the metrics.
    pub fn count(&self, result: &SignalResult) {
        self.metrics.signal(match result.status.as_str() {
            "created" => "created",
            "duplicate" => "duplicate",
            "rejected" => "rejected",
            "out_of_scope" => "out_of_scope",
            _ => "ignored",
        });
    }

    async fn create_new(&self, signal: &Signal, name: &str) -> anyhow::Result<SignalResult> {
        let created = match self.store.create(&signal.remediation_request(name), &now_rfc3339()).await {
            Ok(created) => created,
            Err(e) => {
                if let Err(release) = self.redis.release(&signal.fingerprint).await {
                    tracing::warn!(error = %format!("{release:#}"), "releasing deduplication claim");
                }
                return Err(e);
            }
        };
        match created {
            Creation::NamespaceNotFound => {
                // Nothing was created; drop the claim so the alert is handled afresh once the
                // namespace exists.
                self.redis.release(&signal.fingerprint).await?;
                tracing::warn!(namespace = %signal.namespace, alert = %signal.name, "alert for a missing namespace rejected");
                Ok(SignalResult::of(signal, "rejected").because(missing_namespace(&signal.namespace)))
            }
            Creation::Created => {
                self.audit(signal, name, "gateway.signal.received", json!({})).await?;
                Ok(SignalResult::on_resource(signal, "created", name, 1))
            }
            // Left over from an earlier delivery whose answer was lost: an occurrence.
            Creation::AlreadyExists => self.duplicate(signal, name).await,
        }
    }

    async fn duplicate(&self, signal: &Signal, name: &str) -> anyhow::Result<SignalResult> {
        for _ in 0..CREATION_WAIT_ROUNDS {
            if let Some(count) = self.store.record_occurrence(&signal.namespace, name, &now_rfc3339()).await? {
                self.audit(signal, name, "gateway.signal.deduplicated", json!({"occurrence_count": count})).await?;
                return Ok(SignalResult::on_resource(signal, "duplicate", name, count));
            }
            // A concurrent first delivery holds the claim and may still be creating it.
            tokio::time::sleep(CREATION_WAIT).await;
        }
        // The window is open but its resource is gone (deleted): create it again.
        match self.store.create(&signal.remediation_request(name), &now_rfc3339()).await? {
            Creation::Created => {
                self.audit(signal, name, "gateway.signal.received", json!({})).await?;
                Ok(SignalResult::on_resource(signal, "created", name, 1))
            }
            Creation::AlreadyExists => anyhow::bail!("RemediationRequest {name} appeared concurrently"),
            Creation::NamespaceNotFound => anyhow::bail!("namespace {} was deleted", signal.namespace),
        }
    }

    /// Writes an audit event to the durable outbox; the forwarder delivers it.
    async fn audit(
        &self,
        signal: &Signal,
        name: &str,
        event_type: &str,
        mut data: serde_json::Value,
    ) -> anyhow::Result<()> {
        data["fingerprint"] = signal.fingerprint.clone().into();
        data["alertname"] = signal.name.clone().into();
        data["severity"] = signal.severity.clone().into();
        data["source"] = signal.source.name().into();
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
        self.redis.outbox_push(&serde_json::to_string(&event)?).await?;
        self.wake.notify_one();
        Ok(())
    }
}

/// Why an alert for a namespace that does not exist is rejected.
pub fn missing_namespace(namespace: &str) -> String {
    format!("namespace {namespace:?} does not exist")
}
