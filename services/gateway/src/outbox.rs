//! The audit forwarder: delivers outbox entries to datastorage, oldest first, removing an
//! entry only after datastorage answered 2xx. Unreachable datastorage means retry with
//! backoff; an event datastorage rejects as invalid goes to the dead-letter list. On shutdown
//! the gateway stops the loop and drains what is left, within a deadline.

use std::{future::Future, sync::Arc, time::Duration};

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
    /// Delivers until `stop` resolves (between batches), then hands itself back for
    /// [`Forwarder::drain`].
    pub async fn run(self, stop: impl Future<Output = ()>) -> Self {
        tokio::pin!(stop);
        let mut backoff = self.min_backoff;
        loop {
            let pause = match self.deliver_batch().await {
                Ok(0) => {
                    backoff = self.min_backoff;
                    None
                }
                Ok(_) => {
                    backoff = self.min_backoff;
                    continue;
                }
                Err(e) => {
                    self.metrics.audit_delivery_failures.inc();
                    tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "audit delivery failed; will retry");
                    let pause = backoff;
                    backoff = (backoff * 2).min(self.max_backoff);
                    Some(pause)
                }
            };
            tokio::select! {
                () = &mut stop => return self,
                () = async {
                    match pause {
                        None => {
                            let _ = tokio::time::timeout(self.idle_poll, self.wake.notified()).await;
                        }
                        Some(pause) => tokio::time::sleep(pause).await,
                    }
                } => {}
            }
        }
    }

    /// Delivers what the outbox holds until it is empty, `deadline` passes, or a delivery fails;
    /// the number of events left. What is left stays in Redis for the next gateway: waiting on
    /// an unreachable datastorage would only hold up the exit.
    pub async fn drain(&self, deadline: tokio::time::Instant) -> i64 {
        loop {
            match tokio::time::timeout_at(deadline, self.deliver_batch()).await {
                Ok(Ok(0)) => return 0,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), "audit delivery failed while draining");
                    break;
                }
                Err(_) => break,
            }
        }
        self.redis.len(&self.redis.outbox_key()).await.unwrap_or(-1)
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
