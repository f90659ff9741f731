//! Redis: deduplication claims, the durable audit outbox and the marks of Kubernetes Events
//! already turned into signals. Every failure is marked as [`Dependency::Redis`].

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::failure::{Dependency, OnDependency};

/// Longest wait for one Redis operation.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// The outcome of claiming a fingerprint's deduplication window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// A new window opened: the signal is new.
    Opened,
    /// A window is open, for the RemediationRequest of this name: the signal is a duplicate.
    Held(String),
}

/// Redis keys under a prefix, over one auto-reconnecting connection made on first use.
#[derive(Clone)]
pub struct RedisStore {
    client: redis::Client,
    conn: Arc<OnceCell<ConnectionManager>>,
    prefix: String,
}

impl RedisStore {
    /// A store for `url` (e.g. `redis://redis:6379`) whose keys start with `prefix`.
    pub fn new(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("parsing REDIS_URL")?;
        Ok(Self { client, conn: Arc::new(OnceCell::new()), prefix: prefix.to_owned() })
    }

    async fn conn(&self) -> anyhow::Result<ConnectionManager> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                // Fail fast when Redis is down: the request answers 503 and Alertmanager retries.
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(1)
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(OP_TIMEOUT));
                timed(ConnectionManager::new_with_config(self.client.clone(), config))
                    .await
                    .context("connecting to Redis")
                    .on(Dependency::Redis)
            })
            .await?;
        Ok(conn.clone())
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> anyhow::Result<T> {
        let mut conn = self.conn().await?;
        timed(cmd.query_async(&mut conn)).await.context("Redis command").on(Dependency::Redis)
    }

    fn dedup_key(&self, fingerprint: &str) -> String {
        format!("{}dedup:{fingerprint}", self.prefix)
    }

    /// Key of the outbox list (newest at the head).
    pub fn outbox_key(&self) -> String {
        format!("{}audit-outbox", self.prefix)
    }

    /// Key of the list of events datastorage rejected as invalid.
    pub fn dead_letter_key(&self) -> String {
        format!("{}audit-dead-letter", self.prefix)
    }

    /// Opens `fingerprint`'s deduplication window for `window_seconds`, its resource to be named
    /// `rr_name`; when a window is already open, returns the name its claim holds instead.
    /// Atomic: of concurrent first deliveries exactly one opens the window.
    pub async fn claim(&self, fingerprint: &str, rr_name: &str, window_seconds: u64) -> anyhow::Result<Claim> {
        const OPEN_UNLESS_HELD: &str = "local held = redis.call('GET', KEYS[1]) \
            if held then return held end \
            redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) \
            return false";
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(OPEN_UNLESS_HELD).arg(1).arg(self.dedup_key(fingerprint)).arg(rr_name).arg(window_seconds);
        let held: Option<String> = self.run(&cmd).await?;
        Ok(match held {
            None => Claim::Opened,
            Some(name) => Claim::Held(name),
        })
    }

    /// Drops a claim, so the next delivery of the signal is treated as new.
    pub async fn release(&self, fingerprint: &str) -> anyhow::Result<()> {
        self.run::<i64>(redis::cmd("DEL").arg(self.dedup_key(fingerprint))).await?;
        Ok(())
    }

    /// Appends a serialized audit event to the outbox.
    pub async fn outbox_push(&self, event_json: &str) -> anyhow::Result<()> {
        self.run::<i64>(redis::cmd("LPUSH").arg(self.outbox_key()).arg(event_json)).await?;
        Ok(())
    }

    /// Up to `n` of the oldest outbox entries, oldest first (entries stay in the outbox).
    pub async fn outbox_oldest(&self, n: usize) -> anyhow::Result<Vec<String>> {
        let start = -(n as i64);
        let mut items: Vec<String> = self.run(redis::cmd("LRANGE").arg(self.outbox_key()).arg(start).arg(-1)).await?;
        items.reverse();
        Ok(items)
    }

    /// Removes one delivered entry (searching from the oldest end).
    pub async fn outbox_remove(&self, item: &str) -> anyhow::Result<()> {
        self.run::<i64>(redis::cmd("LREM").arg(self.outbox_key()).arg(-1).arg(item)).await?;
        Ok(())
    }

    /// Moves an entry datastorage rejected to the dead-letter list, atomically.
    pub async fn dead_letter(&self, item: &str) -> anyhow::Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("LPUSH")
            .arg(self.dead_letter_key())
            .arg(item)
            .ignore()
            .cmd("LREM")
            .arg(self.outbox_key())
            .arg(-1)
            .arg(item)
            .ignore();
        let mut conn = self.conn().await?;
        timed(pipe.query_async::<()>(&mut conn)).await.context("Redis dead-letter").on(Dependency::Redis)
    }

    /// Marks `key` (under the prefix) for `ttl_seconds` unless it is marked already; whether
    /// this call set it. Of concurrent callers, in any replica, exactly one gets `true`.
    pub async fn mark_once(&self, key: &str, ttl_seconds: u64) -> anyhow::Result<bool> {
        let set: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(format!("{}{key}", self.prefix))
                    .arg(1)
                    .arg("NX")
                    .arg("EX")
                    .arg(ttl_seconds.max(1)),
            )
            .await?;
        Ok(set.is_some())
    }

    /// Removes a mark set by [`RedisStore::mark_once`].
    pub async fn unmark(&self, key: &str) -> anyhow::Result<()> {
        self.run::<i64>(redis::cmd("DEL").arg(format!("{}{key}", self.prefix))).await?;
        Ok(())
    }

    /// Number of entries in a list.
    pub async fn len(&self, key: &str) -> anyhow::Result<i64> {
        self.run(redis::cmd("LLEN").arg(key)).await
    }

    /// `Ok` when Redis answers PING.
    pub async fn ping(&self) -> Result<(), String> {
        self.run::<String>(&redis::cmd("PING")).await.map(|_| ()).map_err(|e| format!("Redis unreachable: {e:#}"))
    }
}

async fn timed<T, E>(fut: impl Future<Output = Result<T, E>>) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(r) => r.map_err(anyhow::Error::from),
        Err(_) => anyhow::bail!("timed out after {OP_TIMEOUT:?}"),
    }
}
