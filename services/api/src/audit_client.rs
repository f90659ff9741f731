//! HTTP client for datastorage's audit API.

use std::time::Duration;

use crate::audit::AuditEvent;

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Datastorage answered that the event itself is unacceptable (400, 413, 415 or 422);
    /// sending it again will not help.
    #[error("datastorage rejected the event ({status}): {body}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Response body.
        body: String,
    },
    /// Datastorage is unreachable or failing; retry later.
    #[error("datastorage unavailable: {0}")]
    Unavailable(String),
}

impl SendError {
    /// Whether a later retry may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Sends audit events to datastorage (`POST {base}/api/v1/audit/events`).
#[derive(Clone, Debug)]
pub struct AuditClient {
    http: reqwest::Client,
    endpoint: String,
}

impl AuditClient {
    /// A client for the datastorage at `base_url` (e.g. `http://datastorage:8080`).
    pub fn new(base_url: &str) -> anyhow::Result<Self> {
        // No kept-alive connections: a connection lives on whatever the Service's address was
        // translated to when it opened, and once datastorage's pod is gone that address may be
        // another pod's (the gateway's own, seen in the E2E suite: it answered its own audit
        // events 404, on one connection, for as long as it lived). A new connection per event
        // always goes where the Service points now.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| anyhow::anyhow!("building HTTP client: {e}"))?;
        let endpoint = format!("{}/api/v1/audit/events", base_url.trim_end_matches('/'));
        Ok(Self { http, endpoint })
    }

    /// Delivers one event; succeeds only on a 2xx answer. Repeats of an event id are
    /// answered with success by datastorage, so retrying is safe.
    pub async fn send(&self, event: &AuditEvent) -> Result<(), SendError> {
        let body = serde_json::to_vec(event)
            .map_err(|e| SendError::Rejected { status: 0, body: format!("serializing event: {e}") })?;
        self.send_raw(body).await
    }

    /// Delivers one already-serialized event (as stored in the gateway's outbox).
    pub async fn send_raw(&self, body: Vec<u8>) -> Result<(), SendError> {
        let resp = self
            .http
            .post(&self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| SendError::Unavailable(format!("POST {}: {e}", self.endpoint)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        let code = status.as_u16();
        // Only answers about the event itself are final. Anything else, a 404 included, may come
        // from whatever answers at datastorage's address for a moment (a stale endpoint during a
        // rollout, a proxy): the event is kept and sent again.
        if matches!(code, 400 | 413 | 415 | 422) {
            Err(SendError::Rejected { status: code, body })
        } else {
            Err(SendError::Unavailable(format!("POST {} answered {status}: {body}", self.endpoint)))
        }
    }
}
