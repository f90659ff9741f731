//! The remediationorchestrator controller. Configuration from the environment:
//! `LISTEN_ADDR` (0.0.0.0:8080, health endpoints), `WATCH_NAMESPACE` (one namespace; all
//! namespaces when unset), `DATASTORAGE_URL` (http://datastorage:8080),
//! `DEFAULT_WORKFLOW_IMAGE` and `DEFAULT_WORKFLOW_COMMAND` (a JSON array of strings) for
//! requests that name no workflow.

mod plan;
mod reconcile;

use std::sync::Arc;

use anyhow::Context as _;
use futures::StreamExt;
use kube::runtime::{Controller, watcher};
use remedy_api::{
    RemediationRequest, SignalProcessing, WorkflowExecution, WorkflowTemplate,
    audit_client::AuditClient,
    runtime::{self, apiserver_ready, env_or, retry_after_error, scoped_api, watch_namespace},
};

fn default_workflow() -> anyhow::Result<Option<WorkflowTemplate>> {
    let Ok(image) = std::env::var("DEFAULT_WORKFLOW_IMAGE") else {
        return Ok(None);
    };
    let command = match std::env::var("DEFAULT_WORKFLOW_COMMAND") {
        Ok(json) => serde_json::from_str(&json).context("DEFAULT_WORKFLOW_COMMAND must be a JSON array of strings")?,
        Err(_) => Vec::new(),
    };
    Ok(Some(WorkflowTemplate { image, command }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::init_tracing();
    let addr = runtime::listen_addr()?;
    let client = kube::Client::try_default().await.context("Kubernetes client")?;
    let audit = AuditClient::new(&env_or("DATASTORAGE_URL", "http://datastorage:8080"))?;
    let default_workflow = default_workflow()?;
    runtime::spawn_health(addr, apiserver_ready(client.clone()));

    tracing::info!(default_workflow = ?default_workflow, "starting remediationorchestrator controller");
    let ns = watch_namespace();
    tracing::info!(namespace = ns.as_deref().unwrap_or("<all>"), "watching");
    let ctx = Arc::new(reconcile::Context { client: client.clone(), audit, default_workflow });
    Controller::new(scoped_api::<RemediationRequest>(client.clone(), ns.as_deref()), watcher::Config::default())
        .owns(scoped_api::<SignalProcessing>(client.clone(), ns.as_deref()), watcher::Config::default())
        .owns(scoped_api::<WorkflowExecution>(client, ns.as_deref()), watcher::Config::default())
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
