//! The gateway binary. Configuration from the environment: `LISTEN_ADDR` (0.0.0.0:8080),
//! `REDIS_URL` (redis://redis:6379), `DATASTORAGE_URL` (http://datastorage:8080),
//! `DEDUP_WINDOW_SECONDS` (300), `MAX_BODY_BYTES` (262144), `REDIS_KEY_PREFIX` (remedy:gateway:).

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use gateway::{
    http::{AppState, router},
    metrics::Metrics,
    outbox::Forwarder,
    redis_store::RedisStore,
    store::KubeStore,
};
use remedy_api::{
    audit_client::AuditClient,
    runtime::{self, env_or, env_parse},
};
use tokio::sync::Notify;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::init_tracing();
    let addr = runtime::listen_addr()?;
    let redis =
        RedisStore::new(&env_or("REDIS_URL", "redis://redis:6379"), &env_or("REDIS_KEY_PREFIX", "remedy:gateway:"))?;
    let datastorage = env_or("DATASTORAGE_URL", "http://datastorage:8080");
    let dedup_window_seconds: u64 = env_parse("DEDUP_WINDOW_SECONDS", 300)?;
    anyhow::ensure!(dedup_window_seconds >= 1, "DEDUP_WINDOW_SECONDS must be at least 1");
    let max_body_bytes: usize = env_parse("MAX_BODY_BYTES", 256 * 1024)?;
    let client = kube::Client::try_default().await.context("Kubernetes client")?;
    let metrics = Metrics::default();
    let wake = Arc::new(Notify::new());

    let forwarder = Forwarder {
        redis: redis.clone(),
        client: AuditClient::new(&datastorage)?,
        wake: wake.clone(),
        metrics: metrics.clone(),
        min_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(30),
        idle_poll: Duration::from_secs(1),
    };
    tokio::spawn(forwarder.run());

    tracing::info!(%datastorage, dedup_window_seconds, "starting gateway");
    let state = AppState { store: KubeStore::new(client), redis, metrics, wake, dedup_window_seconds };
    runtime::serve(addr, router(state, max_body_bytes)).await
}
