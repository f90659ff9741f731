//! Kubernetes work through kube-rs: server-side apply of manifests, readiness waits that fail
//! early on broken pods, diagnostics and namespace teardown.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, format_err};
use camino::Utf8Path;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, LogParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use kube::runtime::wait::{self, Condition, await_condition, conditions};
use kube::{Client, ResourceExt};

use crate::phases::Workload;

/// The field manager of everything the xtask applies.
const MANAGER: &str = "remedy-xtask";
/// How often waits look at the cluster.
const POLL: Duration = Duration::from_millis(250);
/// How long a pod may sit in a state it will not leave by itself before its task fails.
const BROKEN_GRACE: Duration = Duration::from_secs(5);
/// Waiting reasons that do not resolve without a change to the manifest or the image.
const BROKEN: [&str; 6] = [
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
];

/// Like anyhow's `with_context`, but an API error becomes the server's own message instead of
/// its whole status object.
trait Explain<T> {
    fn explain(self, what: impl FnOnce() -> String) -> anyhow::Result<T>;
}

impl<T> Explain<T> for Result<T, kube::Error> {
    fn explain(self, what: impl FnOnce() -> String) -> anyhow::Result<T> {
        self.map_err(|err| match err {
            kube::Error::Api(status) => {
                format_err!("{}: {} ({} {})", what(), status.message, status.code, status.reason)
            }
            other => anyhow::Error::new(other).context(what()),
        })
    }
}

/// A client for the cluster of `kubeconfig`, never the user's default config.
pub use crate::backends::existing::client;

pub async fn server_version(client: &Client) -> anyhow::Result<String> {
    let info = client.apiserver_version().await.explain(|| "the API server does not answer".to_owned())?;
    Ok(info.git_version)
}

/// Waits until the API server answers and every node is Ready; fails naming what was not.
/// Returns the nodes, for the log.
pub async fn cluster_ready(client: &Client, timeout: Duration) -> anyhow::Result<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    loop {
        let why = match nodes.list(&ListParams::default()).await {
            Ok(list) => match not_ready(&list.items) {
                None => return Ok(list.items.iter().map(|n| n.name_any()).collect::<Vec<_>>().join(", ")),
                Some(why) => why,
            },
            Err(err) => format!("the API server does not answer ({err})"),
        };
        if Instant::now() > deadline {
            bail!("the cluster is not ready after {}s: {why}", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Why these nodes are not ready for work, or `None` when every one is Ready.
fn not_ready(nodes: &[Node]) -> Option<String> {
    if nodes.is_empty() {
        return Some("it has no node".to_owned());
    }
    let reasons: Vec<String> = nodes
        .iter()
        .filter_map(|node| {
            let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
            let ready = conditions.and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
            match ready {
                Some(c) if c.status == "True" => None,
                Some(c) => Some(format!(
                    "node {} is not Ready ({}: {})",
                    node.name_any(),
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default()
                )),
                None => Some(format!("node {} reports no Ready condition yet", node.name_any())),
            }
        })
        .collect();
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

/// Parses a multi-document manifest; an error names the file.
pub fn parse(path: &Utf8Path, text: &str) -> anyhow::Result<Vec<DynamicObject>> {
    let docs: Vec<DynamicObject> =
        serde_saphyr::from_multiple(text).map_err(|err| format_err!("malformed manifest {path}: {err}"))?;
    for (n, doc) in docs.iter().enumerate() {
        if doc.types.is_none() {
            bail!("malformed manifest {path}: document {} has no apiVersion/kind", n + 1);
        }
        if doc.metadata.name.is_none() {
            bail!("malformed manifest {path}: document {} has no metadata.name", n + 1);
        }
    }
    Ok(docs)
}

/// The label on everything a run makes outside its namespace (and on its namespaces), so
/// teardown finds it.
const RUN_LABEL: &str = "remedy.dev/run-id";

/// Server-side applies every object, Namespaces and CRDs first, namespaced ones into `ns`.
/// Cluster-wide objects but Namespaces and CRDs (which runs share) are labelled with the run id,
/// as teardown deletes them by it. Returns one line per object for the task log.
pub async fn apply(
    client: &Client,
    ns: &str,
    run_id: &str,
    mut objects: Vec<DynamicObject>,
) -> anyhow::Result<Vec<String>> {
    let discovery = Discovery::new(client.clone()).run().await.explain(|| "API discovery failed".to_owned())?;
    let rank = |o: &DynamicObject| match o.types.as_ref().map(|t| t.kind.as_str()) {
        Some("Namespace") => 0,
        Some("CustomResourceDefinition") => 1,
        _ => 2,
    };
    objects.sort_by_key(rank);
    let params = PatchParams::apply(MANAGER).force();
    let mut applied = Vec::new();
    for mut obj in objects {
        let types = obj.types.clone().expect("parse checked apiVersion/kind");
        let gvk = GroupVersionKind::try_from(&types)?;
        let name = obj.name_any();
        let (resource, caps) = discovery.resolve_gvk(&gvk).ok_or_else(|| {
            format_err!("{}/{name}: the cluster does not serve {} {}", types.kind, types.api_version, types.kind)
        })?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(client.clone(), ns, &resource),
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        if caps.scope == Scope::Cluster && !shared_kind(&types.kind) {
            obj.labels_mut().insert(RUN_LABEL.to_owned(), run_id.to_owned());
        }
        api.patch(&name, &params, &Patch::Apply(&obj))
            .await
            .explain(|| format!("server-side apply of {}/{name} failed", types.kind))?;
        applied.push(format!("applied {}/{name}", types.kind));
    }
    Ok(applied)
}

/// Cluster-wide kinds every run shares rather than makes: never labelled, never deleted.
fn shared_kind(kind: &str) -> bool {
    matches!(kind, "Namespace" | "CustomResourceDefinition")
}

/// Deletes the cluster-wide objects labelled with the run id (its ClusterRoles and bindings,
/// say); Namespaces go with `delete_namespaces`. Returns them as `kind/name`.
pub async fn delete_cluster_objects(client: &Client, run_id: &str) -> anyhow::Result<Vec<String>> {
    let discovery = Discovery::new(client.clone()).run().await.explain(|| "API discovery failed".to_owned())?;
    let selector = ListParams::default().labels(&format!("{RUN_LABEL}={run_id}"));
    let mut deleted = Vec::new();
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            let listable = caps.supports_operation(kube::discovery::verbs::LIST)
                && caps.supports_operation(kube::discovery::verbs::DELETE);
            if caps.scope != Scope::Cluster || !listable || shared_kind(&resource.kind) {
                continue;
            }
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            let list = api.list(&selector).await.explain(|| format!("cannot list {}", resource.plural))?;
            for obj in list.items {
                let name = obj.name_any();
                match api.delete(&name, &DeleteParams::background()).await {
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    result => {
                        result.explain(|| format!("cannot delete {}/{name}", resource.kind))?;
                    }
                }
                deleted.push(format!("{}/{name}", resource.kind));
            }
        }
    }
    deleted.sort();
    Ok(deleted)
}

/// Creates the run's namespace, labelled with the run id.
pub async fn namespace(client: &Client, ns: &str, run_id: &str) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let object: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": ns, "labels": {"app.kubernetes.io/managed-by": MANAGER, "remedy.dev/run-id": run_id}},
    }))?;
    namespaces
        .patch(ns, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&object))
        .await
        .explain(|| "cannot create the namespace".to_owned())?;
    Ok(())
}

/// Creates a Secret from string values (which are never printed). Keys in `random` get a fresh
/// random value unless the Secret already holds one: a reused environment keeps its database
/// password, which the database's data was initialised with.
pub async fn secret(
    client: &Client,
    ns: &str,
    name: &str,
    mut data: BTreeMap<String, String>,
    random: &[String],
    fresh: impl Fn() -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let existing = secrets.get_opt(name).await.explain(|| format!("cannot read Secret {name}"))?;
    let kept = existing.and_then(|s| s.data).unwrap_or_default();
    for key in random {
        let value = match kept.get(key) {
            Some(value) => String::from_utf8(value.0.clone()).with_context(|| format!("Secret {name}: {key}"))?,
            None => fresh()?,
        };
        data.insert(key.clone(), value);
    }
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": data,
    }))?;
    secrets
        .patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&secret))
        .await
        .explain(|| format!("cannot create Secret {name}"))?;
    Ok(())
}

/// Waits until each CRD is Established.
pub async fn crds_established(client: &Client, names: &[String], timeout: Duration) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + timeout;
    for name in names {
        let established = await_condition(api.clone(), name, conditions::is_crd_established());
        match tokio::time::timeout_at(deadline, established).await {
            Ok(result) => {
                result.with_context(|| format!("cannot watch CRD {name}"))?;
            }
            Err(_) => bail!("CRD {name} not Established after {}s", timeout.as_secs()),
        }
    }
    Ok(())
}

/// How far a workload has rolled out, read from its object alone.
struct Progress {
    done: bool,
    available: i32,
    desired: i32,
    selector: String,
}

/// A Deployment is done when its newest generation is observed and every desired replica is
/// updated and available (`kubectl rollout status`'s rule; a bare Available condition can be
/// an old generation's).
fn deployment_progress(d: &Deployment) -> Progress {
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    let current = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(1);
    let available = status.available_replicas.unwrap_or(0);
    let done = current
        && status.updated_replicas.unwrap_or(0) == desired
        && available == desired
        && status.replicas.unwrap_or(0) == desired;
    let selector = d.spec.as_ref().and_then(|s| s.selector.match_labels.as_ref()).map(selector).unwrap_or_default();
    Progress { done, available, desired, selector }
}

/// A StatefulSet is done when its newest generation is observed, every replica is ready and
/// updated, and the update revision is current.
fn statefulset_progress(s: &StatefulSet) -> Progress {
    let desired = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = s.status.clone().unwrap_or_default();
    let current = status.observed_generation.unwrap_or(0) >= s.metadata.generation.unwrap_or(1);
    let available = status.ready_replicas.unwrap_or(0);
    let revision = status.update_revision.is_none() || status.update_revision == status.current_revision;
    let done = current && available == desired && status.updated_replicas.unwrap_or(0) == desired && revision;
    let selector = s.spec.as_ref().and_then(|s| s.selector.match_labels.as_ref()).map(selector).unwrap_or_default();
    Progress { done, available, desired, selector }
}

/// A workload's progress, read now.
async fn progress_of(client: &Client, ns: &str, workload: Workload, name: &str) -> anyhow::Result<Progress> {
    let owner = format!("{}/{name}", workload.name());
    Ok(match workload {
        Workload::Deployment => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
            deployment_progress(&api.get(name).await.explain(|| format!("cannot read {owner}"))?)
        }
        Workload::StatefulSet => {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
            statefulset_progress(&api.get(name).await.explain(|| format!("cannot read {owner}"))?)
        }
    })
}

/// Waits until the workload has rolled out; fails early when one of its pods is broken, with
/// the pod's events and last log lines.
pub async fn rollout(
    client: &Client,
    ns: &str,
    workload: Workload,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let owner = format!("{}/{name}", workload.name());
    let selector = progress_of(client, ns, workload, name).await?.selector;
    let done: Pin<Box<dyn Future<Output = Result<(), wait::Error>> + Send + '_>> = match workload {
        Workload::Deployment => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
            let done = |d: Option<&Deployment>| d.is_some_and(|d| deployment_progress(d).done);
            Box::pin(async move { await_condition(api, name, done).await.map(drop) })
        }
        Workload::StatefulSet => {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
            let done = |s: Option<&StatefulSet>| s.is_some_and(|s| statefulset_progress(s).done);
            Box::pin(async move { await_condition(api, name, done).await.map(drop) })
        }
    };
    if let Err(timed_out) = wait_unless_broken(client, ns, &selector, &owner, timeout, done).await? {
        let progress = progress_of(client, ns, workload, name).await?;
        let detail = describe_pods(client, ns, &selector).await;
        bail!(
            "{owner} not ready after {}s: {} of {} available{}\n{detail}",
            timeout.as_secs(),
            progress.available,
            progress.desired,
            timed_out.because()
        );
    }
    Ok(())
}

/// Waits for a Job to complete; a failed Job is an error carrying its pods' logs.
/// Deletes Job `name` and its pods (foreground) if it exists and waits until it is gone;
/// whether there was one.
pub async fn delete_job(client: &Client, ns: &str, name: &str, timeout: Duration) -> anyhow::Result<bool> {
    let api: Api<Job> = Api::namespaced(client.clone(), ns);
    let Some(uid) = api.get_opt(name).await.explain(|| format!("cannot read job/{name}"))?.and_then(|j| j.metadata.uid)
    else {
        return Ok(false);
    };
    match api.delete(name, &DeleteParams::foreground()).await {
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(true),
        result => drop(result.explain(|| format!("cannot delete job/{name}"))?),
    }
    tokio::time::timeout(timeout, await_condition(api, name, conditions::is_deleted(&uid)))
        .await
        .map_err(|_| format_err!("job/{name} still there {}s after its deletion", timeout.as_secs()))?
        .with_context(|| format!("cannot watch job/{name}"))?;
    Ok(true)
}

pub async fn job_complete(client: &Client, ns: &str, name: &str, timeout: Duration) -> anyhow::Result<()> {
    let api: Api<Job> = Api::namespaced(client.clone(), ns);
    let selector = format!("job-name={name}");
    let owner = format!("job/{name}");
    let failed = |job: Option<&Job>| job_holds(job, "Failed");
    let finished = Box::pin(async {
        await_condition(api.clone(), name, conditions::is_job_completed().or(failed)).await.map(drop)
    });
    if let Err(timed_out) = wait_unless_broken(client, ns, &selector, &owner, timeout, finished).await? {
        let detail = describe_pods(client, ns, &selector).await;
        bail!("job/{name} did not complete within {}s{}\n{detail}", timeout.as_secs(), timed_out.because());
    }
    let job = api.get(name).await.explain(|| format!("cannot read job/{name}"))?;
    if job_holds(Some(&job), "Failed") {
        let detail = describe_pods(client, ns, &selector).await;
        bail!("job/{name} failed\n{detail}");
    }
    Ok(())
}

fn job_holds(job: Option<&Job>, kind: &str) -> bool {
    let conditions = job.and_then(|j| j.status.as_ref()).and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// How much longer than its own timeout a wait goes on while a pod's image is being pulled: on
/// a fresh cluster the node fetches third-party images from their registry, and that pull, not
/// the workload, is what is slow.
const PULL_BUDGET: Duration = Duration::from_secs(300);

/// How a wait ended without its condition.
enum TimedOut {
    /// Nothing was being pulled at the end.
    Plainly,
    /// Still pulling this image, after the pull's own budget too.
    Pulling(String),
}

impl TimedOut {
    fn because(&self) -> String {
        match self {
            TimedOut::Plainly => String::new(),
            TimedOut::Pulling(image) => format!(
                " (still pulling {image}, {}s more were given to the pull: the pull from its registry is what is \
                 slow; put the image into the engine first, `docker pull {image}`, and a Kind run loads it into the node)",
                PULL_BUDGET.as_secs()
            ),
        }
    }
}

/// Waits for `done` until `timeout` (and [`PULL_BUDGET`] more while an image is being pulled),
/// failing early when a pod matching `selector` is broken.
async fn wait_unless_broken(
    client: &Client,
    ns: &str,
    selector: &str,
    owner: &str,
    timeout: Duration,
    done: Pin<Box<dyn Future<Output = Result<(), wait::Error>> + Send + '_>>,
) -> anyhow::Result<Result<(), TimedOut>> {
    let mut done = std::pin::pin!(done);
    let mut broken_since = HashMap::new();
    let mut budget = timeout;
    let mut extended = false;
    loop {
        let deadline = tokio::time::sleep(budget);
        let mut deadline = std::pin::pin!(deadline);
        loop {
            tokio::select! {
                result = &mut done => {
                    result.with_context(|| format!("cannot watch {owner}"))?;
                    return Ok(Ok(()));
                }
                () = &mut deadline => break,
                () = tokio::time::sleep(POLL) => check_pods(client, ns, selector, owner, &mut broken_since).await?,
            }
        }
        match pulling(client, ns, selector).await {
            Some(image) if extended => return Ok(Err(TimedOut::Pulling(image))),
            Some(_) => {
                extended = true;
                budget = PULL_BUDGET;
            }
            None => return Ok(Err(TimedOut::Plainly)),
        }
    }
}

/// An image a pod matching `selector` is still pulling, if one is.
async fn pulling(client: &Client, ns: &str, selector: &str) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    for pod in pods.list(&ListParams::default().labels(selector)).await.ok()?.items {
        let params = ListParams::default().fields(&format!("involvedObject.name={}", pod.name_any()));
        let Ok(list) = events.list(&params).await else { continue };
        let mut items = list.items;
        items.sort_by_key(|e| e.last_timestamp.clone().map(|t| t.0));
        let seen: Vec<(String, String)> =
            items.into_iter().map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default())).collect();
        if let Some(image) = still_pulling(&seen) {
            return Some(image);
        }
    }
    None
}

/// The image of the last pull among a pod's events (reason, message), oldest first, when
/// nothing ended it yet.
fn still_pulling(events: &[(String, String)]) -> Option<String> {
    let ends = ["Pulled", "Failed", "BackOff", "ErrImagePull", "Started", "Created"];
    let (reason, message) = events.iter().rev().find(|(r, _)| r == "Pulling" || ends.contains(&r.as_str()))?;
    (reason == "Pulling").then(|| message.split('"').nth(1).unwrap_or(message).to_owned())
}

/// Fails when a pod matching `selector` has been broken for longer than the grace period.
async fn check_pods(
    client: &Client,
    ns: &str,
    selector: &str,
    owner: &str,
    broken_since: &mut HashMap<String, Instant>,
) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(selector))
        .await
        .explain(|| format!("cannot list the pods of {owner}"))?;
    for pod in &list.items {
        let status = pod.status.clone().unwrap_or_default();
        let containers =
            status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
        for cs in containers {
            let Some(waiting) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) else { continue };
            let reason = waiting.reason.clone().unwrap_or_default();
            if !BROKEN.contains(&reason.as_str()) {
                continue;
            }
            let key = format!("{}/{}", pod.name_any(), cs.name);
            let since = *broken_since.entry(key).or_insert_with(Instant::now);
            if since.elapsed() >= BROKEN_GRACE {
                let detail = describe_pods(client, ns, selector).await;
                bail!(
                    "{owner}: pod {} container {} is {reason}: {}\n{detail}",
                    pod.name_any(),
                    cs.name,
                    waiting.message.clone().unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

/// Each matching pod's recent events and the last 20 log lines of each container.
async fn describe_pods(client: &Client, ns: &str, selector: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let Ok(list) = pods.list(&ListParams::default().labels(selector)).await else {
        return "(pods could not be listed)".to_owned();
    };
    let mut out = String::new();
    for pod in list.items {
        let name = pod.name_any();
        for line in events_of(client, ns, &name).await {
            out.push_str(&format!("  event {name}: {line}\n"));
        }
        let statuses = pod.status.and_then(|s| s.container_statuses).unwrap_or_default();
        for cs in statuses {
            let previous = cs.restart_count > 0;
            let params =
                LogParams { container: Some(cs.name.clone()), tail_lines: Some(20), previous, ..Default::default() };
            if let Ok(logs) = pods.logs(&name, &params).await {
                out.push_str(&format!(
                    "  last log lines of {name}/{}{}:\n",
                    cs.name,
                    if previous { " (previous run)" } else { "" }
                ));
                for line in logs.lines() {
                    out.push_str(&format!("    {line}\n"));
                }
            }
        }
    }
    out
}

/// The last ten events about one object, oldest first.
async fn events_of(client: &Client, ns: &str, name: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let params = ListParams::default().fields(&format!("involvedObject.name={name}"));
    let Ok(list) = events.list(&params).await else { return Vec::new() };
    let mut items = list.items;
    items.sort_by_key(|e| e.last_timestamp.clone().map(|t| t.0));
    items
        .iter()
        .rev()
        .take(10)
        .rev()
        .map(|e| {
            format!(
                "{} {}: {}",
                e.type_.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
                e.message.clone().unwrap_or_default()
            )
        })
        .collect()
}

/// Creates NodePort Service `<service>-e2e` for one port of `service` and returns its node
/// port; Kubernetes picks the port when `node_port` is None.
pub async fn expose(
    client: &Client,
    ns: &str,
    service: &str,
    port_name: &str,
    node_port: Option<u16>,
) -> anyhow::Result<i32> {
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let svc = services.get(service).await.explain(|| format!("cannot read service/{service}"))?;
    let spec = svc.spec.unwrap_or_default();
    let port = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.name.as_deref() == Some(port_name))
        .ok_or_else(|| format_err!("service/{service} has no port named {port_name}"))?;
    let name = format!("{service}-e2e");
    let mut exposed = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": MANAGER}},
        "spec": {
            "type": "NodePort",
            "selector": spec.selector,
            "ports": [{"name": port_name, "port": port.port, "targetPort": port.target_port, "protocol": "TCP"}],
        },
    });
    if let Some(node_port) = node_port {
        exposed["spec"]["ports"][0]["nodePort"] = node_port.into();
    }
    let exposed: Service = serde_json::from_value(exposed)?;
    let applied = services
        .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&exposed))
        .await
        .explain(|| format!("cannot create service/{name}"))?;
    applied
        .spec
        .and_then(|s| s.ports)
        .and_then(|p| p.first().and_then(|p| p.node_port))
        .ok_or_else(|| format_err!("service/{name} got no node port"))
}

/// `http://<first node's InternalIP>:<node_port>`: how the host reaches a NodePort.
pub async fn node_url(client: &Client, node_port: i32) -> anyhow::Result<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .next()
        .ok_or_else(|| format_err!("the cluster has no node"))?;
    let address = node
        .status
        .and_then(|s| s.addresses)
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address)
        .ok_or_else(|| format_err!("node {} has no InternalIP", node.metadata.name.unwrap_or_default()))?;
    Ok(format!("http://{address}:{node_port}"))
}

/// Writes the namespace's events, pod states and container logs into `dir`.
pub async fn save_diagnostics(client: &Client, ns: &str, dir: &Utf8Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut items =
        events.list(&ListParams::default()).await.explain(|| format!("cannot list the events of {ns}"))?.items;
    items.sort_by_key(|e| e.last_timestamp.clone().map(|t| t.0));
    let text: String = items
        .iter()
        .map(|e| {
            let object = &e.involved_object;
            format!(
                "{} {} {}/{}: {} {}\n",
                e.last_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default(),
                e.type_.clone().unwrap_or_default(),
                object.kind.clone().unwrap_or_default(),
                object.name.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
                e.message.clone().unwrap_or_default()
            )
        })
        .collect();
    std::fs::write(dir.join("events.txt"), text)?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut summary = String::new();
    for pod in pods.list(&ListParams::default()).await?.items {
        let name = pod.name_any();
        let status = pod.status.clone().unwrap_or_default();
        summary.push_str(&format!("{name} {}\n", status.phase.unwrap_or_default()));
        for cs in status.container_statuses.unwrap_or_default() {
            summary.push_str(&format!(
                "  {} ready={} restarts={} state={:?}\n",
                cs.name, cs.ready, cs.restart_count, cs.state
            ));
            let params = LogParams { container: Some(cs.name.clone()), tail_lines: Some(500), ..Default::default() };
            if let Ok(logs) = pods.logs(&name, &params).await {
                std::fs::write(dir.join(format!("{name}.{}.log", cs.name)), logs)?;
            }
        }
    }
    std::fs::write(dir.join("pods.txt"), summary)?;
    Ok(())
}

/// Deletes the run's namespace and every namespace its specs made (labelled with the run id),
/// and waits until they are gone.
pub async fn delete_namespaces(
    client: &Client,
    ns: &str,
    run_id: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<String>> {
    let api: Api<Namespace> = Api::all(client.clone());
    let labelled = api
        .list(&ListParams::default().labels(&format!("remedy.dev/run-id={run_id}")))
        .await
        .explain(|| "cannot list the run's namespaces".to_owned())?;
    let mut names: Vec<String> = labelled.items.iter().map(|n| n.name_any()).collect();
    if !names.iter().any(|n| n == ns) && api.get_opt(ns).await?.is_some() {
        names.push(ns.to_owned());
    }
    for name in &names {
        match api.delete(name, &DeleteParams::background()).await {
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            result => {
                result.explain(|| format!("cannot delete namespace {name}"))?;
            }
        }
    }
    // A throwaway environment's pods need no grace period: without this, a container that
    // ignores SIGTERM holds its namespace for 30 s.
    let now = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::background() };
    let deadline = tokio::time::Instant::now() + timeout;
    for name in &names {
        let Some(uid) = api.get_opt(name).await?.and_then(|n| n.metadata.uid) else { continue };
        let mut gone = std::pin::pin!(await_condition(api.clone(), name, conditions::is_deleted(&uid)));
        loop {
            tokio::select! {
                result = &mut gone => {
                    result.with_context(|| format!("cannot watch namespace {name}"))?;
                    break;
                }
                () = tokio::time::sleep_until(deadline) => {
                    bail!("namespace {name} still terminating after {}s", timeout.as_secs())
                }
                () = tokio::time::sleep(Duration::from_millis(500)) => {
                    let pods: Api<Pod> = Api::namespaced(client.clone(), name);
                    let _ = pods.delete_collection(&now, &ListParams::default()).await;
                }
            }
        }
    }
    Ok(names)
}

/// Labels as `k=v,k2=v2`, for selectors.
fn selector(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d", "generation": generation},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "d"}}, "template": {}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_deployment_is_done_only_when_its_newest_generation_is_available() {
        let all =
            serde_json::json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2});
        let done = deployment_progress(&deployment(3, all.clone()));
        assert!(done.done);
        assert_eq!(done.selector, "app=d");
        // The controller has not seen generation 4 yet: the available pods are the old ones.
        assert!(!deployment_progress(&deployment(4, all)).done);
        let rolling =
            serde_json::json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2});
        assert!(!deployment_progress(&deployment(3, rolling)).done);
    }

    #[test]
    fn a_pull_is_in_progress_until_an_event_ends_it() {
        let events = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter().map(|(r, m)| (r.to_string(), m.to_string())).collect()
        };
        let pulling = events(&[("Scheduled", "assigned"), ("Pulling", "Pulling image \"postgres:16\"")]);
        assert_eq!(still_pulling(&pulling).as_deref(), Some("postgres:16"));
        let pulled = events(&[("Pulling", "Pulling image \"postgres:16\""), ("Pulled", "Successfully pulled")]);
        assert_eq!(still_pulling(&pulled), None);
        let retried = events(&[("Pulling", "x"), ("Failed", "y"), ("Pulling", "Pulling image \"redis:7\"")]);
        assert_eq!(still_pulling(&retried).as_deref(), Some("redis:7"));
        assert_eq!(still_pulling(&events(&[("Scheduled", "assigned")])), None);
    }

    #[test]
    fn a_cluster_is_ready_when_every_node_is() {
        let node = |name: &str, ready: Option<(&str, &str)>| -> Node {
            let conditions: Vec<serde_json::Value> = ready
                .into_iter()
                .map(|(status, reason)| serde_json::json!({"type": "Ready", "status": status, "reason": reason, "message": "m"}))
                .collect();
            serde_json::from_value(
                serde_json::json!({"metadata": {"name": name}, "status": {"conditions": conditions}}),
            )
            .unwrap()
        };
        assert_eq!(not_ready(&[]).as_deref(), Some("it has no node"));
        assert_eq!(not_ready(&[node("a", Some(("True", "KubeletReady")))]), None);
        let why =
            not_ready(&[node("a", Some(("True", "KubeletReady"))), node("b", Some(("False", "KubeletNotReady")))]);
        assert_eq!(why.as_deref(), Some("node b is not Ready (KubeletNotReady: m)"));
        assert_eq!(not_ready(&[node("c", None)]).as_deref(), Some("node c reports no Ready condition yet"));
    }

    #[test]
    fn a_statefulset_is_done_when_every_replica_runs_the_update_revision() {
        let set = |status: serde_json::Value| -> StatefulSet {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "db", "generation": 2},
                "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}}, "template": {}},
                "status": status,
            }))
            .unwrap()
        };
        let ready = serde_json::json!({"observedGeneration": 2, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2,
            "currentRevision": "db-2", "updateRevision": "db-2"});
        assert!(statefulset_progress(&set(ready)).done);
        let updating = serde_json::json!({"observedGeneration": 2, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 1,
            "currentRevision": "db-1", "updateRevision": "db-2"});
        assert!(!statefulset_progress(&set(updating)).done);
    }
}
