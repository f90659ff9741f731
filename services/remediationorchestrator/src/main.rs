//! The remediationorchestrator controller. Configuration from the environment:
//! `LISTEN_ADDR` (0.0.0.0:8080, health endpoints), `WATCH_NAMESPACE` (one namespace; all
//! namespaces when unset), `DATASTORAGE_URL` (http://datastorage:8080),
//! `DEFAULT_WORKFLOW_IMAGE` and `DEFAULT_WORKFLOW_COMMAND` (a JSON array of strings) for
//! requests that name no workflow.

mod plan;
mod reconcile;

use std::sync::Arc;

use anyhow::Context as _;
use kube::runtime::{Controller, watcher};
use remedy_api::{
    RemediationRequest, SignalProcessing, WorkflowExecution, WorkflowTemplate,
    runtime::{ControllerSetup, run_controller},
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
    let setup = ControllerSetup::from_env().await?;
    let default_workflow = default_workflow()?;
    tracing::info!(default_workflow = ?default_workflow, "starting remediationorchestrator controller");
    let controller = Controller::new(setup.api::<RemediationRequest>(), watcher::Config::default())
        .owns(setup.api::<SignalProcessing>(), watcher::Config::default())
        .owns(setup.api::<WorkflowExecution>(), watcher::Config::default());
    let ctx = Arc::new(reconcile::Context { client: setup.client, audit: setup.audit, default_workflow });
    run_controller(controller, setup.shutdown, reconcile::reconcile, ctx).await;
    Ok(())
}
