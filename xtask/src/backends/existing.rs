//! The existing-cluster backend: a cluster someone else runs, reached through its kubeconfig.
//! The run gets a namespace of its own and deletes it afterwards. Images are already in the
//! cluster's container runtime (a single-node cluster on this host), or pushed to a registry
//! the cluster pulls from.

use anyhow::bail;
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use super::{Backend, CLUSTER, Delivery, Leftover, Registry};
use crate::builders::Engine;
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
