//! `datastorage serve` runs the HTTP API; `datastorage migrate` applies the embedded
//! migrations (run as a Kubernetes Job before the service starts).

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use datastorage::{config, db, http};
use remedy_api::runtime;

#[derive(Parser)]
#[command(about = "Remedy audit event storage")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API on LISTEN_ADDR (default 0.0.0.0:8080).
    Serve,
    /// Apply pending migrations, waiting up to MIGRATE_TIMEOUT_SECONDS (default 120) for the database.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let shutdown = runtime::Shutdown::install()?;
    runtime::init_tracing();
    let cli = Cli::parse();
    let opts = config::database_from_env()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let addr = runtime::listen_addr()?;
            tracing::info!(database = %config::describe(&opts), "starting datastorage");
            let pool = db::lazy_pool(opts);
            // Terminating, the pod leaves the Service's endpoints at once, but each node's
            // kube-proxy forgets it a moment later: until then it keeps serving, so a rollout
            // drops no request (seen: a spec's request right after a rollout timed out).
            let delay = Duration::from_secs(runtime::env_parse("SHUTDOWN_DELAY_SECONDS", 5u64)?);
            let stop = async move {
                shutdown.requested().await;
                tracing::info!(?delay, "serving on while endpoints forget this pod");
                tokio::time::sleep(delay).await;
            };
            runtime::serve(addr, http::router(pool, config::max_body_bytes()?), stop).await
        }
        Command::Migrate => {
            let timeout = Duration::from_secs(runtime::env_parse("MIGRATE_TIMEOUT_SECONDS", 120u64)?);
            tracing::info!(database = %config::describe(&opts), "migrating");
            let pool = db::connect_with_retry(opts, timeout).await?;
            db::migrate(&pool).await.context("migrate")?;
            tracing::info!(head = db::head_version(), "migrations at head");
            Ok(())
        }
    }
}
