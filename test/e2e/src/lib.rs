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
                panic!(
                    "{name} is not set: E2E specs run against a deployed environment; use `cargo xtask e2e <service>`"
                )
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
        let config =
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("valid kubeconfig");
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An HTTP client with a short timeout, for talking to exposed services.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client")
}

/// Label that ties an object to a run; the xtask deletes every namespace carrying its run's id.
pub const RUN_LABEL: &str = "remedy.dev/run-id";

/// Creates a namespace with `labels` (and the run label, so teardown removes it).
pub async fn namespace(env: &Env, client: &kube::Client, name: &str, labels: &[(&str, &str)]) {
    use k8s_openapi::api::core::v1::Namespace;
    let mut all: std::collections::BTreeMap<String, String> =
        labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    all.insert(RUN_LABEL.to_owned(), env.run_id.clone());
    let ns = Namespace {
        metadata: kube::api::ObjectMeta { name: Some(name.to_owned()), labels: Some(all), ..Default::default() },
        ..Default::default()
    };
    kube::Api::<Namespace>::all(client.clone()).create(&Default::default(), &ns).await.expect("create namespace");
}

/// The image the named Deployment of the environment runs.
pub async fn image_of(env: &Env, client: &kube::Client, deployment: &str) -> String {
    use k8s_openapi::api::apps::v1::Deployment;
    let d =
        kube::Api::<Deployment>::namespaced(client.clone(), &env.namespace).get(deployment).await.expect("deployment");
    d.spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.into_iter().next())
        .and_then(|c| c.image)
        .expect("an image")
}

/// Deletes the pods of a Deployment (the `app.kubernetes.io/name` label), as a crash would, and
/// waits until they are gone and their replacements are ready.
pub async fn restart(env: &Env, client: &kube::Client, app: &str) {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Pod;
    use kube::ResourceExt;
    let pods = kube::Api::<Pod>::namespaced(client.clone(), &env.namespace);
    let selector = kube::api::ListParams::default().labels(&format!("app.kubernetes.io/name={app}"));
    let old: Vec<String> =
        pods.list(&selector).await.expect("list pods").items.iter().filter_map(|p| p.uid()).collect();
    pods.delete_collection(&Default::default(), &selector).await.expect("delete pods");
    let deployments = kube::Api::<Deployment>::namespaced(client.clone(), &env.namespace);
    eventually(&format!("{app} to come back"), Duration::from_secs(120), || async {
        let running = pods.list(&selector).await.ok()?.items;
        if running.iter().any(|p| p.uid().is_some_and(|uid| old.contains(&uid))) {
            return None;
        }
        let status = deployments.get(app).await.ok()?.status?;
        (status.available_replicas? >= 1 && status.unavailable_replicas.unwrap_or(0) == 0).then_some(())
    })
    .await;
}

/// Restarts a Deployment the way `kubectl rollout restart` does (a new pod template, rolled
/// out replacing the old pods one by one), or joins such a restart already under way, and waits
/// until the rollout is complete and every pod that ran before has exited. Returns the exit codes of the old containers seen exiting (a
/// pod the kubelet removed first shows none).
pub async fn rollout_restart(env: &Env, client: &kube::Client, app: &str) -> Vec<i32> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Pod;
    use kube::ResourceExt;
    const RESTARTED_AT: &str = "remedy.dev/restarted-at";
    let pods = kube::Api::<Pod>::namespaced(client.clone(), &env.namespace);
    let selector = kube::api::ListParams::default().labels(&format!("app.kubernetes.io/name={app}"));
    let deployments = kube::Api::<Deployment>::namespaced(client.clone(), &env.namespace);
    let template = deployments.get(app).await.expect("the deployment").spec.and_then(|s| s.template.metadata);
    let stamp = |annotations: Option<&std::collections::BTreeMap<String, String>>| {
        annotations.and_then(|a| a.get(RESTARTED_AT)).cloned()
    };
    let ordered = stamp(template.as_ref().and_then(|m| m.annotations.as_ref()));
    let from_ordered = |p: &Pod| stamp(p.metadata.annotations.as_ref()) == ordered;
    let ready = |p: &Pod| {
        let conditions = p.status.as_ref().and_then(|s| s.conditions.as_ref());
        conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    // The pods to replace: every one running, but a not yet ready pod of the newest template,
    // which has served nothing.
    let listed: Vec<Pod> = pods
        .list(&selector)
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| !from_ordered(p) || ready(p))
        .collect();
    let old: Vec<String> = listed.iter().filter_map(|p| p.uid()).collect();
    // A restart ordered after all of them were made (another spec's) already replaces them: wait
    // for it rather than order a second rollout on top.
    let underway = !listed.is_empty() && listed.iter().all(|p| !from_ordered(p));
    if !underway {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos().to_string();
        let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}});
        deployments
            .patch(app, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
            .await
            .expect("restart the deployment");
    }
    eventually(&format!("{app} to roll out and its old pods to exit"), Duration::from_secs(120), || async {
        let d = deployments.get(app).await.ok()?;
        let wanted = d.spec.as_ref()?.replicas.unwrap_or(1);
        let status = d.status?;
        let rolled = status.observed_generation >= d.metadata.generation
            && status.updated_replicas == Some(wanted)
            && status.available_replicas == Some(wanted);
        if !rolled {
            return None;
        }
        let mut codes = Vec::new();
        for pod in pods.list(&selector).await.ok()?.items.iter().filter(|p| p.uid().is_some_and(|u| old.contains(&u))) {
            if !exited(pod) {
                return None;
            }
            let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
            let terminated = statuses.into_iter().flatten().filter_map(|c| c.state.as_ref()?.terminated.as_ref());
            codes.extend(terminated.map(|t| t.exit_code));
        }
        Some(codes)
    })
    .await
}

/// Whether a pod is being deleted and none of its containers runs any more. Such a pod may stay
/// listed for seconds until the kubelet gets round to removing it, and one deleted before its
/// container started never runs one.
pub fn exited(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    pod.metadata.deletion_timestamp.is_some()
        && statuses.into_iter().flatten().all(|c| c.state.as_ref().is_none_or(|s| s.running.is_none()))
}

/// Scales a Deployment of the environment and waits until exactly `replicas` pods run and are
/// available.
pub async fn scale(env: &Env, client: &kube::Client, app: &str, replicas: i32) {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Pod;
    let deployments = kube::Api::<Deployment>::namespaced(client.clone(), &env.namespace);
    let patch = serde_json::json!({"spec": {"replicas": replicas}});
    deployments.patch(app, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await.expect("scale");
    let pods = kube::Api::<Pod>::namespaced(client.clone(), &env.namespace);
    let selector = kube::api::ListParams::default().labels(&format!("app.kubernetes.io/name={app}"));
    eventually(&format!("{app} at {replicas} replicas"), Duration::from_secs(120), || async {
        let count = pods.list(&selector).await.ok()?.items.len() as i32;
        let available = deployments.get(app).await.ok()?.status?.available_replicas.unwrap_or(0);
        (count == replicas && available == replicas).then_some(())
    })
    .await;
}

/// The audit events of one correlation id, from the environment's datastorage; `None` when it
/// did not answer (a spec may have stopped it), which is never to be read as "no events".
pub async fn audit_events(env: &Env, correlation: &str) -> Option<Vec<serde_json::Value>> {
    let url = format!("{}/api/v1/audit/events", env.url("datastorage"));
    let query = [("correlation_id", correlation), ("limit", "1000")];
    let response = http().get(url).query(&query).send().await.ok()?.error_for_status().ok()?;
    let body: serde_json::Value = response.json().await.ok()?;
    body["events"].as_array().cloned()
}

/// Waits until the correlation id has an audit event of `event_type`.
pub async fn audit_event(env: &Env, correlation: &str, event_type: &str) -> serde_json::Value {
    eventually(&format!("audit event {event_type} for {correlation}"), Duration::from_secs(60), || async {
        audit_events(env, correlation).await?.into_iter().find(|e| e["event_type"] == event_type)
    })
    .await
}
