//! The existing-cluster backend: a cluster someone else runs, reached through its kubeconfig.
//! The run gets a namespace of its own and deletes it afterwards. Images are already in the
//! cluster's container runtime (a single-node cluster on this host), or pushed to a registry
//! the cluster pulls from.

use anyhow::{Context, bail};
use camino::{Utf8Path, Utf8PathBuf};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::{Deserialize, Serialize};

use super::{Backend, CLUSTER, Delivery, Leftover, Registry};
use crate::builders::{Arch, Engine, platform};
use crate::catalog::Exposed;
use crate::phases::{Command, Kind, KubeOp, Phase, Task, When};

/// How long the run's namespaces get to disappear.
const NAMESPACE_DELETE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExistingCluster {
    pub kubeconfig: Utf8PathBuf,
    /// Where the cluster pulls the images from; without one its runtime already has them.
    pub registry: Option<Registry>,
    /// Keep the run's namespace afterwards.
    pub keep: bool,
}

impl Backend for ExistingCluster {
    fn describe(&self) -> String {
        let after = if self.keep { "the namespace is kept" } else { "the run's namespaces are deleted after it" };
        format!("existing, kubeconfig {} ({after})", self.kubeconfig)
    }

    fn describe_delivery(&self) -> String {
        match &self.registry {
            None => "none (the cluster's runtime sees the engine's images)".to_owned(),
            Some(registry) => format!(
                "push to registry {} as {}/<bin>:<content hash>, pulled by the cluster; the pushed images are kept \
                 (later runs reuse their tags)",
                registry.address(),
                registry.image_repo()
            ),
        }
    }

    fn kubeconfig(&self) -> &Utf8Path {
        &self.kubeconfig
    }

    fn image_repo(&self) -> String {
        self.registry.as_ref().map_or_else(|| "localhost/remedy".to_owned(), Registry::image_repo)
    }

    fn identity(&self) -> String {
        format!("kubeconfig {}", self.kubeconfig)
    }

    fn history_key(&self) -> String {
        if self.registry.is_some() { "existing-registry".to_owned() } else { "existing".to_owned() }
    }

    fn node_arch(&self, _engine: Engine) -> anyhow::Result<(Arch, String)> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let nodes = runtime.block_on(async {
            let nodes: Api<Node> = Api::all(client(&self.kubeconfig).await?);
            let params = ListParams::default();
            let list = tokio::time::timeout(std::time::Duration::from_secs(10), nodes.list(&params));
            anyhow::Ok(list.await.context("the API server did not answer within 10 s")??)
        });
        let nodes = nodes.with_context(|| format!("cannot list the nodes of {}", self.kubeconfig))?;
        let platforms = nodes.items.iter().filter_map(|node| {
            let info = node.status.as_ref()?.node_info.as_ref()?;
            Some(format!("{}/{}", info.operating_system, info.architecture))
        });
        let arch = one_arch(platforms)?;
        Ok((arch, "the nodes' status.nodeInfo".to_owned()))
    }

    fn cluster(&self, _exposed: &[Exposed], _engine: Engine) -> Task {
        Task::new(CLUSTER, Phase::Cluster, Kind::Api).estimate(1).kube(KubeOp::ServerVersion)
    }

    fn delivered(&self, image: &str) -> Option<Command> {
        // An image the registry has need not exist here: the cluster pulls it.
        self.registry.as_ref().map(|registry| registry.has(image))
    }

    fn readiness(&self, _timeout: std::time::Duration) -> Option<KubeOp> {
        // Its cluster task asks the API server for its version.
        None
    }

    fn deliver(&self, bin: &str, image: &str, engine: Engine, built: Option<&str>) -> Delivery {
        // Third-party images are pulled by the cluster, from where their name says.
        let (Some(registry), Some(built)) = (&self.registry, built) else {
            return Delivery { tasks: Vec::new(), ready: built.map(str::to_owned) };
        };
        // Tags are content hashes, so a tag the registry has is this very image.
        let mut push = vec!["push"];
        if engine == Engine::Podman && registry.is_local() {
            push.push("--tls-verify=false");
        }
        push.push(image);
        let id = format!("push-image-{bin}");
        let task = Task::new(&id, Phase::Images, Kind::Process)
            .after(&[built])
            .estimate(10)
            .skip_if(registry.has(image))
            .run(Command::new(engine.program(), push));
        Delivery { tasks: vec![task], ready: Some(id) }
    }

    fn expose(&self, _exposed: &Exposed) -> (Option<u16>, Option<String>) {
        (None, None)
    }

    fn teardown(&self, run_dir: &Utf8Path, _engine: Engine) -> Vec<Task> {
        let dir = run_dir.join("diagnostics");
        let mut tasks = vec![Task::teardown("diagnostics", Kind::Api, When::Failed).kube(KubeOp::Diagnostics { dir })];
        if !self.keep {
            tasks.push(
                Task::teardown("delete-namespaces", Kind::Api, When::Always)
                    .after(&["diagnostics"])
                    .estimate(5)
                    .kube(KubeOp::DeleteNamespaces { timeout: NAMESPACE_DELETE_TIMEOUT }),
            );
        }
        tasks
    }

    fn node_images(&self) -> Option<String> {
        None
    }

    fn kept(&self, _engine: Engine, namespace: &str) -> Option<String> {
        self.keep.then(|| format!("kept namespace {namespace}, kubeconfig {}", self.kubeconfig))
    }

    fn leftovers(&self, _engine: Engine, namespace: &str, run_id: &str) -> Vec<Leftover> {
        if self.keep {
            return Vec::new();
        }
        let (kubeconfig, namespace, run_id) = (self.kubeconfig.clone(), namespace.to_owned(), run_id.to_owned());
        vec![Leftover::Namespaces { kubeconfig, namespace, run_id }]
    }

    fn preflight(&self, _exposed: &[Exposed], _engine: Engine) -> anyhow::Result<()> {
        if !self.kubeconfig.is_file() {
            bail!("kubeconfig {} does not exist: pass the path of your cluster's kubeconfig", self.kubeconfig);
        }
        if let Some(registry) = &self.registry {
            registry.answers()?;
        }
        Ok(())
    }
}

/// A client of the cluster `kubeconfig` reaches.
pub async fn client(kubeconfig: &Utf8Path) -> anyhow::Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig).with_context(|| format!("cannot read kubeconfig {kubeconfig}"))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("invalid kubeconfig {kubeconfig}"))?;
    Ok(Client::try_from(config)?)
}

/// The one architecture nodes of `platforms` (`linux/amd64`) share.
fn one_arch(platforms: impl Iterator<Item = String>) -> anyhow::Result<Arch> {
    let mut archs = Vec::new();
    for platform in platforms {
        let arch = platform::linux_arch(&platform).with_context(|| format!("a node {platform}"))?;
        if !archs.contains(&arch) {
            archs.push(arch);
        }
    }
    match archs[..] {
        [arch] => Ok(arch),
        [] => bail!("the cluster has no node that says its platform"),
        _ => bail!(
            "the cluster's nodes run {}: images are built for one architecture; run on a cluster whose nodes share one",
            archs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" and ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nodes_must_share_one_architecture() {
        let nodes = |p: &[&str]| one_arch(p.iter().map(|s| s.to_string()));
        assert_eq!(nodes(&["linux/arm64", "linux/arm64"]).unwrap(), Arch::Arm64);
        let mixed = nodes(&["linux/amd64", "linux/arm64"]).unwrap_err().to_string();
        assert!(mixed.contains("amd64 and arm64"), "{mixed}");
        assert!(nodes(&[]).is_err());
        assert!(format!("{:#}", nodes(&["windows/amd64"]).unwrap_err()).contains("run Linux"));
    }
}
