//! The audit forwarder: delivers outbox entries to datastorage, oldest first, removing an
//! entry only after datastorage answered 2xx. Unreachable datastorage means retry with
//! backoff; an event datastorage rejects as invalid goes to the dead-letter list.

use std::{sync::Arc, time::Duration};

use remedy_api::audit_client::AuditClient;
use tokio::sync::Notify;

use crate::{metrics::Metrics, redis_store::RedisStore};

/// Entries read per round.
const BATCH: usize = 32;

/// Delivers outbox entries in the background.
pub struct Forwarder {
    /// Outbox storage.
    pub redis: RedisStore,
    /// Datastorage client.
    pub client: AuditClient,
    /// Woken when a request pushed an entry.
    pub wake: Arc<Notify>,
    /// Metrics to update.
    pub metrics: Metrics,
    /// First retry delay; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Poll interval when idle (entries pushed by other gateway replicas).
    pub idle_poll: Duration,
}

impl Forwarder {
    /// Runs forever.
    pub async fn run(self) {
        let mut backoff = self.min_backoff;
        loop {
            match self.deliver_batch().await {
                Ok(0) => {
                    backoff = self.min_backoff;
                    let _ = tokio::time::timeout(self.idle_poll, self.wake.notified()).await;
                }
                Ok(_) => backoff = self.min_backoff,
                Err(e) => {
                    self.metrics.audit_delivery_failures.inc();
                    tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "audit delivery failed; will retry");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.max_backoff);
                }
            }
        }
    }

    /// Delivers up to one batch; the number handled, or the error that stopped it.
    pub async fn deliver_batch(&self) -> anyhow::Result<usize> {
        if let Ok(len) = self.redis.len(&self.redis.outbox_key()).await {
            self.metrics.audit_outbox_length.set(len);
        }
        let items = self.redis.outbox_oldest(BATCH).await?;
        let mut handled = 0;
        for item in items {
            match self.client.send_raw(item.clone().into_bytes()).await {
                Ok(()) => {
                    self.redis.outbox_remove(&item).await?;
                    self.metrics.audit_delivered.inc();
                }
                Err(e) if !e.is_retryable() => {
                    tracing::error!(error = %e, "datastorage rejected an audit event; moved to dead-letter list");
                    self.redis.dead_letter(&item).await?;
                    self.metrics.audit_dead_lettered.inc();
                }
                Err(e) => return Err(e.into()),
            }
            handled += 1;
        }
        Ok(handled)
    }
}
