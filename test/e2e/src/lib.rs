//! What every E2E spec needs: the environment the xtask deployed, handed over in environment
//! variables, and a few helpers to wait on it.
//!
//! | variable | meaning |
//! |---|---|
//! | `REMEDY_E2E_KUBECONFIG` | kubeconfig of the cluster (a private file, never `~/.kube/config`) |
//! | `REMEDY_E2E_NAMESPACE` | the namespace the environment runs in |
//! | `REMEDY_E2E_RUN_ID` | the run's id, to make names unique |
//! | `REMEDY_E2E_URL_<SERVICE>` | base URL of an exposed service, e.g. `REMEDY_E2E_URL_GATEWAY` |
//!
//! A spec run without them fails at once, saying to use `cargo xtask e2e <service>`.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};

/// The deployed environment.
#[derive(Debug, Clone)]
pub struct Env {
    pub kubeconfig: String,
    pub namespace: String,
    pub run_id: String,
}

impl Env {
    /// Reads the environment; panics with how to run the specs when it is missing.
    pub fn get() -> Env {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: E2E specs run against a deployed environment; use `cargo xtask e2e <service>`")
            })
        };
        Env {
            kubeconfig: var("REMEDY_E2E_KUBECONFIG"),
            namespace: var("REMEDY_E2E_NAMESPACE"),
            run_id: var("REMEDY_E2E_RUN_ID"),
        }
    }

    /// Base URL of an exposed service, without a trailing slash.
    pub fn url(&self, service: &str) -> String {
        let name = format!("REMEDY_E2E_URL_{}", service.to_uppercase());
        let url = std::env::var(&name).unwrap_or_else(|_| {
            panic!("{name} is not set: this environment does not expose {service}; use `cargo xtask e2e <service>`")
        });
        url.trim_end_matches('/').to_owned()
    }

    pub async fn client(&self) -> kube::Client {
        let kc = Kubeconfig::read_from(&self.kubeconfig).expect("readable kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("valid kubeconfig");
        kube::Client::try_from(config).expect("kube client")
    }

    /// A name no other spec of this run, or of another run, uses: `<prefix>-<n>-<run suffix>`.
    pub fn unique(&self, prefix: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let suffix: String = self.run_id.chars().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect();
        format!("{prefix}-{n}-{suffix}-{}", std::process::id() % 10000)
    }
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {}s waiting for {what}", timeout.as_secs());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// An HTTP client with a short timeout, for talking to exposed services.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client")
}
