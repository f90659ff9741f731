//! The signalprocessing controller. Configuration from the environment: `LISTEN_ADDR`
//! (0.0.0.0:8080, health endpoints), `DATASTORAGE_URL` (http://datastorage:8080) and
//! `WATCH_NAMESPACE` (one namespace; all namespaces when unset).

mod classify;
mod reconcile;

use std::sync::Arc;

use anyhow::Context as _;
use futures::StreamExt;
use kube::runtime::{Controller, watcher};
use remedy_api::{
    SignalProcessing,
    audit_client::AuditClient,
    runtime::{self, apiserver_ready, env_or, retry_after_error, scoped_api, watch_namespace},
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::init_tracing();
    let addr = runtime::listen_addr()?;
    let client = kube::Client::try_default().await.context("Kubernetes client")?;
    let audit = AuditClient::new(&env_or("DATASTORAGE_URL", "http://datastorage:8080"))?;
    runtime::spawn_health(addr, apiserver_ready(client.clone()));

    let ns = watch_namespace();
    tracing::info!(namespace = ns.as_deref().unwrap_or("<all>"), "watching");
    let ctx = Arc::new(reconcile::Context { client: client.clone(), audit });
    tracing::info!("starting signalprocessing controller");
    Controller::new(scoped_api::<SignalProcessing>(client, ns.as_deref()), watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile::reconcile, retry_after_error, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile");
            }
        })
        .await;
    Ok(())
}
