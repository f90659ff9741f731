//! HTTP client for datastorage's audit API.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::audit::AuditEvent;

/// Sends audit events to datastorage (`POST {base}/api/v1/audit/events`).
#[derive(Clone, Debug)]
pub struct AuditClient {
    http: reqwest::Client,
    endpoint: String,
}

impl AuditClient {
    /// A client for the datastorage at `base_url` (e.g. `http://datastorage:8080`).
    pub fn new(base_url: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .context("building HTTP client")?;
        let endpoint = format!("{}/api/v1/audit/events", base_url.trim_end_matches('/'));
        Ok(Self { http, endpoint })
    }

    /// Delivers one event; succeeds only on a 2xx answer. Repeats of an event id are
    /// answered with success by datastorage, so retrying is safe.
    pub async fn send(&self, event: &AuditEvent) -> anyhow::Result<()> {
        self.send_raw(serde_json::to_vec(event)?).await
    }

    /// Delivers one already-serialized event (as stored in the gateway's outbox).
    pub async fn send_raw(&self, body: Vec<u8>) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(&self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .with_context(|| format!("POST {}", self.endpoint))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            bail!("POST {} answered {status}: {text}", self.endpoint);
        }
        Ok(())
    }
}
