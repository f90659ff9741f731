//! The signalprocessing controller. Configuration from the environment: `LISTEN_ADDR`
//! (0.0.0.0:8080, health endpoints), `DATASTORAGE_URL` (http://datastorage:8080) and
//! `WATCH_NAMESPACE` (one namespace; all namespaces when unset).

mod classify;
mod reconcile;

use std::sync::Arc;

use kube::runtime::{Controller, watcher};
use remedy_api::{
    SignalProcessing,
    runtime::{ControllerSetup, run_controller},
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let setup = ControllerSetup::from_env().await?;
    tracing::info!("starting signalprocessing controller");
    let controller = Controller::new(setup.api::<SignalProcessing>(), watcher::Config::default());
    let ctx = Arc::new(reconcile::Context { client: setup.client, audit: setup.audit });
    run_controller(controller, setup.shutdown, reconcile::reconcile, ctx).await;
    Ok(())
}
