//! Plumbing shared by the service binaries: logging, configuration, health endpoints.

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use anyhow::Context;
use axum::{Router, extract::State, http::StatusCode, routing::get};

/// Initializes JSON-free, human-readable logging filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).init();
}

/// The value of environment variable `name`, or `default` when unset.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Environment variable `name` parsed as `T`, or `default` when unset.
pub fn env_parse<T>(name: &str, default: T) -> anyhow::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|e| anyhow::anyhow!("environment variable {name}={v:?}: {e}")),
        Err(_) => Ok(default),
    }
}

/// The listen address from `LISTEN_ADDR` (default `0.0.0.0:8080`).
pub fn listen_addr() -> anyhow::Result<SocketAddr> {
    env_parse("LISTEN_ADDR", SocketAddr::from(([0, 0, 0, 0], 8080)))
}

/// A readiness check: `Ok` when ready, otherwise the reason.
pub type ReadyCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Routes `/healthz` (always 200 while the process serves) and `/readyz` (200 when `ready`
/// passes, otherwise 503 with the reason).
pub fn health_router(ready: ReadyCheck) -> Router {
    Router::new().route("/healthz", get(|| async { "ok" })).route("/readyz", get(readyz)).with_state(ready)
}

async fn readyz(State(ready): State<ReadyCheck>) -> (StatusCode, String) {
    match ready().await {
        Ok(()) => (StatusCode::OK, "ready".to_owned()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

/// A readiness check that passes when the Kubernetes API server answers.
pub fn apiserver_ready(client: kube::Client) -> ReadyCheck {
    Arc::new(move || {
        let client = client.clone();
        Box::pin(async move {
            client.apiserver_version().await.map(|_| ()).map_err(|e| format!("API server unreachable: {e}"))
        })
    })
}

/// Serves `router` on `addr` until `shutdown` resolves, then finishes the requests under way.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, "listening");
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await.context("serving HTTP")
}

/// Serves the health endpoints with `ready` in the background, for as long as the process
/// runs; exits the process if the listener cannot be bound (the pod must not run without
/// probes answering).
pub fn spawn_health(addr: SocketAddr, ready: ReadyCheck) {
    tokio::spawn(async move {
        if let Err(e) = serve(addr, health_router(ready), std::future::pending()).await {
            tracing::error!(error = %format!("{e:#}"), "health server failed");
            std::process::exit(1);
        }
    });
}

/// SIGTERM or SIGINT, with both handlers installed when made: a service runs as PID 1 of its
/// container, where a signal that arrives before a handler exists is ignored (the kernel
/// applies no default action to a namespace's init) and the pod is killed only at the end of
/// its grace period. Make it first thing in `main`.
pub struct Shutdown {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Installs the handlers; needs a tokio runtime.
    pub fn install() -> anyhow::Result<Shutdown> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Shutdown {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// Resolves on the first SIGTERM or SIGINT since [`Shutdown::install`].
    pub async fn requested(mut self) {
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.interrupt.recv() => {},
        }
        tracing::info!("shutting down");
    }
}

/// Error of a reconcile pass; the controller logs it and requeues.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct ReconcileError(pub anyhow::Error);

impl From<anyhow::Error> for ReconcileError {
    fn from(e: anyhow::Error) -> Self {
        Self(e)
    }
}

impl From<kube::Error> for ReconcileError {
    fn from(e: kube::Error) -> Self {
        Self(e.into())
    }
}

/// Seconds before a failed reconcile is retried.
pub const RETRY_SECONDS: u64 = 5;

/// Error policy shared by the controllers: log and retry after [`RETRY_SECONDS`].
pub fn retry_after_error<K: kube::Resource, C>(
    obj: std::sync::Arc<K>,
    err: &ReconcileError,
    _ctx: std::sync::Arc<C>,
) -> kube::runtime::controller::Action {
    tracing::warn!(
        name = obj.meta().name.as_deref().unwrap_or_default(),
        namespace = obj.meta().namespace.as_deref().unwrap_or_default(),
        error = %err,
        "reconcile failed; retrying"
    );
    kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(RETRY_SECONDS))
}

/// Whether a Kubernetes error is an HTTP `code` answer from the API server.
pub fn is_api_code(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}

/// The namespace a controller is limited to: `WATCH_NAMESPACE`, or `None` (all namespaces)
/// when unset or empty.
pub fn watch_namespace() -> Option<String> {
    std::env::var("WATCH_NAMESPACE").ok().filter(|ns| !ns.is_empty())
}

/// An API for `K` in `namespace`, or across all namespaces when `None`.
pub fn scoped_api<K>(client: kube::Client, namespace: Option<&str>) -> kube::Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => kube::Api::namespaced(client, ns),
        None => kube::Api::all(client),
    }
}

/// What every controller starts from: its health endpoints serving, a Kubernetes client, the
/// audit client (`DATASTORAGE_URL`) and the namespace it watches (`WATCH_NAMESPACE`).
pub struct ControllerSetup {
    /// SIGTERM or SIGINT, installed before anything else.
    pub shutdown: Shutdown,
    /// Kubernetes client.
    pub client: kube::Client,
    /// Datastorage audit client.
    pub audit: crate::audit_client::AuditClient,
    /// The watched namespace; `None` for all.
    pub namespace: Option<String>,
}

impl ControllerSetup {
    /// Logging, `LISTEN_ADDR`'s health endpoints (ready when the API server answers), the
    /// clients and the watched namespace, logged.
    pub async fn from_env() -> anyhow::Result<ControllerSetup> {
        let shutdown = Shutdown::install()?;
        init_tracing();
        let addr = listen_addr()?;
        let client = kube::Client::try_default().await.context("Kubernetes client")?;
        let audit = crate::audit_client::AuditClient::new(&env_or("DATASTORAGE_URL", "http://datastorage:8080"))?;
        spawn_health(addr, apiserver_ready(client.clone()));
        let namespace = watch_namespace();
        tracing::info!(namespace = namespace.as_deref().unwrap_or("<all>"), "watching");
        Ok(ControllerSetup { shutdown, client, audit, namespace })
    }

    /// An API for `K` in the watched namespace (or all).
    pub fn api<K>(&self) -> kube::Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        scoped_api(self.client.clone(), self.namespace.as_deref())
    }
}

/// Runs `controller` until `shutdown` is requested; a failed pass is retried after
/// [`RETRY_SECONDS`] ([`retry_after_error`]).
pub async fn run_controller<K, C, Fut>(
    controller: kube::runtime::Controller<K>,
    shutdown: Shutdown,
    reconcile: impl FnMut(Arc<K>, Arc<C>) -> Fut,
    ctx: Arc<C>,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + std::fmt::Debug + Unpin,
    C: Send + Sync + 'static,
    Fut: Future<Output = Result<kube::runtime::controller::Action, ReconcileError>> + Send + 'static,
{
    use futures::StreamExt;
    controller
        .graceful_shutdown_on(shutdown.requested())
        .run(reconcile, retry_after_error, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile");
            }
        })
        .await;
}
