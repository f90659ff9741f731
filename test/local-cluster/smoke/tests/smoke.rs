//! End-to-end check of `test/local-cluster/cluster.sh`: up, server-side apply, rollout, Service DNS
//! from another pod, in-cluster API access from a pod, down, and no process left behind.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, LogParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};
use serde_json::json;

const MANAGER: &str = "remedy-smoke";
/// Set in the probe pod; makes `in_cluster_probe` do its work instead of returning.
const PROBE_ENV: &str = "REMEDY_SMOKE_IN_CLUSTER";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cluster.sh")
}

fn state_dir() -> PathBuf {
    std::env::var_os("REMEDY_LOCAL_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/remedy-local-cluster"))
}

fn cluster(cmd: &str) -> Result<Duration> {
    let start = Instant::now();
    let status = Command::new(script()).arg(cmd).status().with_context(|| format!("running cluster.sh {cmd}"))?;
    ensure!(status.success(), "cluster.sh {cmd} failed: {status}");
    Ok(start.elapsed())
}

/// Runs `cluster.sh down` when dropped, so a failed or panicking test still tears down.
struct DownOnDrop(bool);
impl Drop for DownOnDrop {
    fn drop(&mut self) {
        if self.0 {
            let _ = cluster("down");
        }
    }
}

/// Processes that belong to the local cluster: binaries from the cache, etcd, dockerd, containerd,
/// dnsmasq, and the dns-sync watcher.
fn cluster_processes() -> BTreeSet<(u32, String)> {
    let mut found = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return found };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // A zombie has already exited; PID 1 of this sandbox reaps orphans late.
        if stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')) {
            continue;
        }
        let exe =
            std::fs::read_link(entry.path().join("exe")).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let name = exe.rsplit('/').next().unwrap_or("");
        let ours = matches!(
            name,
            "kube-apiserver"
                | "kube-controller-manager"
                | "kube-scheduler"
                | "kubelet"
                | "kube-proxy"
                | "etcd"
                | "dockerd"
                | "containerd"
                | "containerd-shim"
                | "containerd-shim-runc-v2"
                | "dnsmasq"
                | "runc"
        ) || cmdline.contains("dns-sync.sh")
            || cmdline.contains("runc-clamp");
        if ours {
            found.insert((pid, format!("{exe} {cmdline}")));
        }
    }
    found
}

async fn client() -> Result<Client> {
    let path = state_dir().join("kubeconfig");
    let kubeconfig = Kubeconfig::read_from(&path).with_context(|| format!("reading {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

async fn apply<K>(api: &Api<K>, name: &str, body: serde_json::Value) -> Result<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let pp = PatchParams::apply(MANAGER).force();
    api.patch(name, &pp, &Patch::Apply(&body)).await.with_context(|| format!("server-side apply of {name}"))
}

/// Waits until the pod has finished and returns (succeeded, logs).
async fn pod_result(pods: &Api<Pod>, name: &str, timeout: Duration) -> Result<(bool, String)> {
    let cond = |p: Option<&Pod>| {
        matches!(p.and_then(|p| p.status.as_ref()).and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
    };
    let pod = tokio::time::timeout(timeout, await_condition(pods.clone(), name, cond))
        .await
        .with_context(|| format!("pod {name} did not finish within {timeout:?}"))??
        .with_context(|| format!("pod {name} disappeared"))?;
    let ok = pod.status.and_then(|s| s.phase).as_deref() == Some("Succeeded");
    let logs = pods.logs(name, &LogParams::default()).await.unwrap_or_else(|e| format!("<no logs: {e}>"));
    Ok((ok, logs))
}

/// Reads `NAME` from `<state>/env` (written by `cluster.sh up`, lines `export NAME=value`).
fn cluster_env(name: &str) -> Result<String> {
    let path = state_dir().join("env");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .with_context(|| format!("{name} missing in {}", path.display()))
}

#[tokio::test]
#[ignore = "needs root on Debian; run by cargo xtask test"]
async fn local_cluster_smoke() -> Result<()> {
    // Start from a stopped cluster so that the leftover check below covers every cluster process.
    cluster("down")?;
    let before = cluster_processes();
    let mut guard = DownOnDrop(true);
    let up = cluster("up")?;
    eprintln!("cluster.sh up: {:.1} s", up.as_secs_f64());

    let client = client().await?;
    let version = client.apiserver_version().await?;
    ensure!(version.git_version == "v1.20.2", "unexpected server version {}", version.git_version);

    let ns = format!(
        "smoke-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() % 100_000
    );
    let busybox = cluster_env("REMEDY_IMAGE_BUSYBOX")?;
    let base = cluster_env("REMEDY_IMAGE_BASE")?;

    check_crd_empty_strings(&client).await?;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    apply(&namespaces, &ns, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})).await?;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let labels = json!({"app": "web"});
    apply(&deployments, "web", json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{
                        "name": "web",
                        "image": busybox,
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"],
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}
                    }]
                }
            }
        }
    })).await?;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    apply(
        &services,
        "web",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}
        }),
    )
    .await?;
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
    apply(
        &bindings,
        "default-view",
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "default-view", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]
        }),
    )
    .await?;

    let rollout = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(120),
        await_condition(deployments.clone(), "web", conditions::is_deployment_completed()),
    )
    .await
    .context("deployment web not rolled out within 120 s")??;
    eprintln!("rollout: {:.1} s", rollout.elapsed().as_secs_f64());

    // Pods need the namespace's default service account, created asynchronously.
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), &ns);
    tokio::time::timeout(Duration::from_secs(30), async {
        while sas.get_opt("default").await.ok().flatten().is_none() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .context("no default service account")?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let url = format!("http://web.{ns}.svc.cluster.local/");
    apply(&pods, "client", json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "client", "namespace": ns},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "client",
                "image": busybox,
                "imagePullPolicy": "Never",
                // busybox's `wget -T` segfaults on bookworm; bound it with `timeout` instead.
                "command": ["sh", "-c", format!(
                    "for i in $(seq 1 30); do if timeout 5 wget -q -O- {url}; then exit 0; fi; sleep 1; done; exit 1")]
            }]
        }
    })).await?;

    // The probe runs this very test binary in a pod (glibc base image) with kube-rs in-cluster config.
    let exe = std::env::current_exe()?;
    apply(&pods, "probe", json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "probe", "namespace": ns},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "probe",
                "image": base,
                "imagePullPolicy": "Never",
                "command": ["/smoke", "--ignored", "--exact", "in_cluster_probe", "--nocapture", "--test-threads=1"],
                "env": [{"name": PROBE_ENV, "value": "1"}],
                "volumeMounts": [{"name": "smoke", "mountPath": "/smoke", "readOnly": true}]
            }],
            "volumes": [{"name": "smoke", "hostPath": {"path": exe.to_string_lossy(), "type": "File"}}]
        }
    })).await?;

    // The offline PostgreSQL and Redis images, used the way E2E manifests use the official ones.
    let postgres = cluster_env("REMEDY_IMAGE_POSTGRES")?;
    let redis = cluster_env("REMEDY_IMAGE_REDIS")?;
    for (name, image, port, env) in [
        (
            "postgres",
            &postgres,
            5432,
            json!([
                {"name": "POSTGRES_USER", "value": "smoke"},
                {"name": "POSTGRES_PASSWORD", "value": "smoke-pw"},
                {"name": "POSTGRES_DB", "value": "smokedb"},
                {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"}
            ]),
        ),
        ("redis", &redis, 6379, json!([])),
    ] {
        apply(
            &pods,
            name,
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
                "spec": {"containers": [{
                    "name": name, "image": image, "imagePullPolicy": "Never", "env": env,
                    "ports": [{"containerPort": port, "protocol": "TCP"}]
                }]}
            }),
        )
        .await?;
        apply(
            &services,
            name,
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"selector": {"app": name}, "ports": [{"port": port, "protocol": "TCP"}]}
            }),
        )
        .await?;
    }
    let retry = |cmd: &str| format!("for i in $(seq 1 60); do if {cmd}; then exit 0; fi; sleep 1; done; exit 1");
    apply(&pods, "data-client", json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "data-client", "namespace": ns},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "psql", "image": postgres, "imagePullPolicy": "Never",
                    "env": [{"name": "PGPASSWORD", "value": "smoke-pw"}],
                    "command": ["bash", "-c", retry(&format!(
                        "pg_isready -h postgres.{ns}.svc.cluster.local && psql -h postgres -U smoke -d smokedb -tAc 'select 40 + 2'"))]
                },
                {
                    "name": "redis-cli", "image": redis, "imagePullPolicy": "Never",
                    "command": ["bash", "-c", retry(&format!(
                        "redis-cli -h redis.{ns}.svc.cluster.local set smoke ok && redis-cli -h redis get smoke"))]
                }
            ]
        }
    })).await?;

    let (ok, logs) = pod_result(&pods, "client", Duration::from_secs(90)).await?;
    eprintln!("client pod logs:\n{logs}");
    ensure!(ok, "client pod could not reach {url}: {logs}");
    ensure!(logs.contains("web-"), "unexpected answer from {url}: {logs}");

    let (ok, logs) = pod_result(&pods, "probe", Duration::from_secs(90)).await?;
    eprintln!("probe pod logs:\n{logs}");
    ensure!(ok && logs.contains("IN-CLUSTER-OK"), "in-cluster API access failed: {logs}");

    let (ok, _) = pod_result(&pods, "data-client", Duration::from_secs(120)).await?;
    let mut logs = String::new();
    for container in ["psql", "redis-cli"] {
        let lp = LogParams { container: Some(container.into()), ..Default::default() };
        logs += &pods.logs("data-client", &lp).await.unwrap_or_else(|e| format!("<no logs: {e}>"));
    }
    eprintln!("data-client pod logs:\n{logs}");
    ensure!(ok && logs.contains("42") && logs.contains("ok"), "PostgreSQL/Redis images not usable: {logs}");

    check_dns_forgets_recreated_services(&services, &ns).await?;
    namespaces.delete(&ns, &Default::default()).await.ok();

    guard.0 = false;
    let down = cluster("down")?;
    eprintln!("cluster.sh down: {:.1} s", down.as_secs_f64());

    let left: Vec<_> = cluster_processes().difference(&before).cloned().collect();
    if !left.is_empty() {
        bail!("processes left after down: {left:#?}");
    }
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    let prefix = format!("{}/", state_dir().display());
    let left_mounts: Vec<_> =
        mounts.lines().filter(|l| l.split(' ').nth(1).is_some_and(|m| m.starts_with(&prefix))).collect();
    ensure!(left_mounts.is_empty(), "mounts left after down: {left_mounts:#?}");
    Ok(())
}

/// A CRD with `default: ""` and a custom resource with empty-string and zero fields: rejected as
/// "null" by 1.20 built with Go >= 1.16 unless the vendored kube-openapi check is patched.
/// A Service deleted and made again under its name resolves to its new address only: the
/// cluster DNS forgets the old one (E2E runs that reuse a namespace name depend on it).
async fn check_dns_forgets_recreated_services(services: &Api<Service>, namespace: &str) -> Result<()> {
    let fqdn = format!("again.{namespace}.svc.cluster.local");
    let dns = std::fs::read_to_string(state_dir().join("node-ip"))?.trim().to_owned();
    let mut addresses = Vec::new();
    for _ in 0..2 {
        let body = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "again"},
                          "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}});
        let svc = apply(services, "again", body).await?;
        let ip = svc.spec.and_then(|s| s.cluster_ip).context("clusterIP")?;
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let out = std::process::Command::new("busybox").args(["nslookup", &fqdn, &dns]).output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let answers: Vec<&str> = text
                .split("Name:")
                .nth(1)
                .unwrap_or("")
                .lines()
                .filter_map(|l| l.strip_prefix("Address:"))
                .map(str::trim)
                .collect();
            if answers == [ip.as_str()] {
                break;
            }
            ensure!(std::time::Instant::now() < deadline, "{fqdn} resolves to {answers:?}, not only {ip}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        addresses.push(ip);
        services.delete("again", &Default::default()).await?;
    }
    eprintln!("DNS followed a re-created Service: {addresses:?}");
    Ok(())
}

async fn check_crd_empty_strings(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = "things.smoke.remedy.dev";
    apply(
        &crds,
        name,
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {
                "group": "smoke.remedy.dev",
                "names": {"kind": "Thing", "plural": "things", "singular": "thing", "listKind": "ThingList"},
                "scope": "Namespaced",
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {
                        "type": "object",
                        "properties": {
                            "empty": {"type": "string"},
                            "zero": {"type": "integer"},
                            "defaulted": {"type": "string", "default": ""}
                        }
                    }}}}
                }]
            }
        }),
    )
    .await?;
    tokio::time::timeout(Duration::from_secs(30), await_condition(crds, name, conditions::is_crd_established()))
        .await
        .context("CRD not established within 30 s")??;
    let resource = ApiResource {
        group: "smoke.remedy.dev".into(),
        version: "v1".into(),
        api_version: "smoke.remedy.dev/v1".into(),
        kind: "Thing".into(),
        plural: "things".into(),
    };
    let things: Api<DynamicObject> = Api::default_namespaced_with(client.clone(), &resource);
    let thing = apply(
        &things,
        "one",
        json!({
            "apiVersion": "smoke.remedy.dev/v1", "kind": "Thing",
            "metadata": {"name": "one"},
            "spec": {"empty": "", "zero": 0}
        }),
    )
    .await?;
    ensure!(
        thing.data["spec"] == json!({"empty": "", "zero": 0, "defaulted": ""}),
        "custom resource not stored as sent and defaulted: {}",
        thing.data
    );
    Ok(())
}

/// Runs inside the probe pod only (see above): in-cluster config against the `kubernetes` Service,
/// by its environment (ClusterIP) and by its DNS name, with TLS verification against the pod's ca.crt.
#[tokio::test]
#[ignore = "runs inside a pod started by local_cluster_smoke"]
async fn in_cluster_probe() -> Result<()> {
    if std::env::var_os(PROBE_ENV).is_none() {
        return Ok(());
    }
    for (how, config) in [("env", Config::incluster_env()?), ("dns", Config::incluster_dns()?)] {
        let url = config.cluster_url.clone();
        let ns = config.default_namespace.clone();
        let client = Client::try_from(config)?;
        let version = client.apiserver_version().await.with_context(|| format!("GET /version via {url}"))?;
        let pods: Api<Pod> = Api::namespaced(client, &ns);
        let list = pods.list(&Default::default()).await.with_context(|| format!("list pods via {url}"))?;
        println!("IN-CLUSTER-OK {how} {url} version={} pods={}", version.git_version, list.items.len());
    }
    Ok(())
}
