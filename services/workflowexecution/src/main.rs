//! The workflowexecution controller. Configuration from the environment: `LISTEN_ADDR`
//! (0.0.0.0:8080, health endpoints), `DATASTORAGE_URL` (http://datastorage:8080) and
//! `WATCH_NAMESPACE` (one namespace; all namespaces when unset).

mod plan;
mod reconcile;

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use kube::runtime::{Controller, watcher};
use remedy_api::{
    WorkflowExecution,
    runtime::{ControllerSetup, run_controller},
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let setup = ControllerSetup::from_env().await?;
    tracing::info!("starting workflowexecution controller");
    let jobs = watcher::Config::default().labels(plan::WE_LABEL);
    let controller =
        Controller::new(setup.api::<WorkflowExecution>(), watcher::Config::default()).owns(setup.api::<Job>(), jobs);
    let ctx = Arc::new(reconcile::Context { client: setup.client, audit: setup.audit });
    run_controller(controller, setup.shutdown, reconcile::reconcile, ctx).await;
    Ok(())
}
