//! Where an environment runs. Each cluster backend is one file implementing [`Backend`]:
//! what the cluster task does, how a built image reaches the nodes, how the specs reach an
//! exposed port, what teardown does, what identifies the cluster and what is checked before
//! any work. [`Cluster`] says which backend a run uses; a combination a backend does not
//! support (a registry for Kind, say) has no way to be written down.

pub mod existing;
pub mod kind;
mod registry;

use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

pub use existing::ExistingCluster;
pub use kind::{KindCluster, Lifecycle};
pub use registry::Registry;

use crate::builders::{Arch, Engine};
use crate::catalog::Exposed;
use crate::phases::{Command, KubeOp, Task};

/// The task after which the cluster exists and its kubeconfig reaches it.
pub const CLUSTER: &str = "cluster";

/// How a built image gets to where pods can use it.
pub struct Delivery {
    pub tasks: Vec<Task>,
    /// The task after which pods can use the image, if there is one to wait for.
    pub ready: Option<String>,
}

/// One kind of cluster. `engine` is this machine's container engine, which builds the images
/// (and, for Kind, runs the nodes).
pub trait Backend {
    /// What `--plan` says of the cluster, and what happens to it after the run.
    fn describe(&self) -> String;
    /// What `--plan` says of how images reach it.
    fn describe_delivery(&self) -> String;
    /// The kubeconfig the API work and the specs use.
    fn kubeconfig(&self) -> &Utf8Path;
    /// Where images are named: `<repo>/<bin>:<tag>`.
    fn image_repo(&self) -> String;
    /// What identifies the cluster: the same specs passing on another one say nothing of this.
    fn identity(&self) -> String;
    /// Which runs' durations are alike enough to learn from: `kind-fresh`, `existing`...
    fn history_key(&self) -> String;
    /// The architecture the nodes run, and where that was learned ("the docker server's").
    fn node_arch(&self, engine: Engine) -> anyhow::Result<(Arch, String)>;
    /// The [`CLUSTER`] task; `exposed` are the ports the specs will reach.
    fn cluster(&self, exposed: &[Exposed], engine: Engine) -> Task;
    /// A probe that succeeds when `image` is already where the cluster gets it.
    fn delivered(&self, image: &str) -> Option<Command>;
    /// The API check that the cluster is ready for work, if the cluster task does not ensure it,
    /// put first in every task that uses the API.
    fn readiness(&self, timeout: Duration) -> Option<KubeOp>;
    /// How the image `image` of `bin` gets from `engine` to the cluster once the task `built`
    /// made it; for a third-party image (`built` is `None`), how it gets there if the engine has
    /// it, if the backend has a way.
    fn deliver(&self, bin: &str, image: &str, engine: Engine, built: Option<&str>) -> Delivery;
    /// For an exposed port: the node port to fix and the URL the host reaches it at, or `None`
    /// for an allocated port at the node's address.
    fn expose(&self, exposed: &Exposed) -> (Option<u16>, Option<String>);
    /// The tasks that run after the rest, whatever happened: diagnostics and cleanup.
    fn teardown(&self, run_dir: &Utf8Path, engine: Engine) -> Vec<Task>;
    /// Checks before any work, with a one-line cause and fix for each problem.
    fn preflight(&self, exposed: &[Exposed], engine: Engine) -> anyhow::Result<()>;
    /// A node that keeps every image loaded into it (kind turns its image garbage collection
    /// off) and outlives the run: images pruned from the engine are removed from it too.
    fn node_images(&self) -> Option<String>;
    /// After the run, what it kept for the next one, as it is now.
    fn kept(&self, engine: Engine, namespace: &str) -> Option<String>;
    /// What a run deletes in teardown, recorded before it makes it, for a later run to delete
    /// if this one cannot (killed, or the machine went down).
    fn leftovers(&self, engine: Engine, namespace: &str, run_id: &str) -> Vec<Leftover>;
}

/// Something a run makes and deletes again in teardown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Leftover {
    /// A Kind cluster the run made.
    KindCluster { name: String, engine: Engine },
    /// The run's namespace and every namespace labelled with its run id.
    Namespaces { kubeconfig: Utf8PathBuf, namespace: String, run_id: String },
}

/// The backend a run uses; each variant is one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum Cluster {
    Kind(KindCluster),
    Existing(ExistingCluster),
}

impl Cluster {
    pub fn backend(&self) -> &dyn Backend {
        match self {
            Cluster::Kind(kind) => kind,
            Cluster::Existing(existing) => existing,
        }
    }
}
