//! The gateway binary. Configuration from the environment (`gateway::config`, listed in
//! docs/services.md).

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use anyhow::Context;
use gateway::{
    auth::{Access, KubeReviewer},
    config::Config,
    events::EventSource,
    http::{AppState, router},
    intake::Intake,
    metrics::Metrics,
    outbox::Forwarder,
    ratelimit::RateLimiter,
    redis_store::RedisStore,
    scope::Scope,
    store::KubeStore,
};
use remedy_api::{audit_client::AuditClient, runtime};
use tokio::sync::Notify;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::init_tracing();
    let config = Config::from_env()?;
    let redis = RedisStore::new(&config.redis_url, &config.redis_prefix)?;
    let client = kube::Client::try_default().await.context("Kubernetes client")?;
    let metrics = Metrics::default();
    let wake = Arc::new(Notify::new());
    let store = KubeStore::new(client.clone());
    let intake = Intake {
        store: store.clone(),
        redis: redis.clone(),
        metrics: metrics.clone(),
        wake: wake.clone(),
        outbox_max: config.audit_outbox_max,
    };
    let scope = Scope::new(store, config.managed_label.clone(), config.scope_cache);

    let forwarder = Forwarder {
        redis: redis.clone(),
        client: AuditClient::new(&config.datastorage_url)?,
        wake: wake.clone(),
        metrics: metrics.clone(),
        min_backoff: Duration::from_millis(200),
        max_backoff: config.audit_retry_max,
        idle_poll: Duration::from_secs(1),
    };
    tokio::spawn(forwarder.run());
    if config.kubernetes_events {
        let source = EventSource {
            client: client.clone(),
            intake: intake.clone(),
            scope: scope.clone(),
            max_age: config.event_max_age,
            window_seconds: config.dedup.default,
        };
        tokio::spawn(source.run(std::future::pending()));
    }

    let state = AppState {
        intake,
        access: Access::new(KubeReviewer::new(client), config.auth_cache),
        scope,
        limiter: Arc::new(RateLimiter::new(config.rate_limit)),
        dedup: config.dedup,
        replay_window: config.replay_window,
        shutting_down: Arc::new(AtomicBool::new(false)),
    };
    tracing::info!(
        addr = %config.listen,
        datastorage = %config.datastorage_url,
        dedup_window_seconds = config.dedup.default,
        managed_namespace_label = %config.managed_label,
        kubernetes_events = config.kubernetes_events,
        "starting gateway"
    );
    runtime::serve(config.listen, router(state, config.max_body_bytes, config.cors_allowed_origins.clone())).await
}
