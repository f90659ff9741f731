//! The gateway binary. Configuration from the environment (`gateway::config`, listed in
//! docs/services.md). On SIGTERM it answers unready, keeps serving for `SHUTDOWN_DELAY_SECONDS`
//! while endpoints forget the pod, stops accepting, drains in-flight requests, stops the event
//! watch, delivers what the audit outbox holds, and exits.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
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
use tokio::sync::{Notify, watch};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let terminated = runtime::Shutdown::install()?;
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

    let (stop, stopping) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let forwarder = Forwarder {
        redis: redis.clone(),
        client: AuditClient::new(&config.datastorage_url)?,
        wake: wake.clone(),
        metrics: metrics.clone(),
        min_backoff: Duration::from_millis(200),
        max_backoff: config.audit_retry_max,
        idle_poll: Duration::from_secs(1),
    };
    let forwarding = tokio::spawn(forwarder.run(stopped(stopping.clone())));
    let watching = config.kubernetes_events.then(|| {
        let source = EventSource {
            client: client.clone(),
            intake: intake.clone(),
            scope: scope.clone(),
            max_age: config.event_max_age,
            window_seconds: config.dedup.default,
        };
        tokio::spawn(source.run(stopped(stopping.clone())))
    });

    let shutting_down = Arc::new(AtomicBool::new(false));
    let state = AppState {
        intake,
        access: Access::new(KubeReviewer::new(client), config.auth_cache),
        scope,
        limiter: Arc::new(RateLimiter::new(config.rate_limit)),
        dedup: config.dedup,
        replay_window: config.replay_window,
        shutting_down: shutting_down.clone(),
    };
    let app = router(state, config.max_body_bytes, config.cors_allowed_origins.clone());
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(
        addr = %config.listen,
        datastorage = %config.datastorage_url,
        dedup_window_seconds = config.dedup.default,
        managed_namespace_label = %config.managed_label,
        kubernetes_events = config.kubernetes_events,
        "starting gateway"
    );

    let stopped_accepting = Arc::new(Notify::new());
    let stop_accepting = {
        let (delay, stopped_accepting) = (config.shutdown_delay, stopped_accepting.clone());
        async move {
            terminated.requested().await;
            tracing::info!("shutting down");
            shutting_down.store(true, Ordering::SeqCst);
            tracing::info!(?delay, "not ready; serving on while endpoints forget this pod");
            tokio::time::sleep(delay).await;
            tracing::info!("no longer accepting; draining in-flight requests");
            stopped_accepting.notify_one();
        }
    };
    let timeout = config.shutdown_timeout;
    let serving = axum::serve(listener, app).with_graceful_shutdown(stop_accepting);
    tokio::select! {
        served = serving => served.context("serving HTTP")?,
        () = async {
            stopped_accepting.notified().await;
            tokio::time::sleep(timeout).await;
        } => tracing::warn!(?timeout, "in-flight requests still open; exiting without them"),
    }

    let _ = stop.send(true);
    if let Some(watching) = watching {
        let _ = watching.await;
    }
    let forwarder = forwarding.await.context("audit forwarder")?;
    let left = forwarder.drain(tokio::time::Instant::now() + timeout).await;
    if left == 0 {
        tracing::info!("audit outbox drained; exiting");
    } else {
        tracing::warn!(left, "audit events left in the outbox for the next gateway; exiting");
    }
    Ok(())
}
