//! Where an environment runs. Each cluster backend is one file implementing [`Backend`]:
//! what the cluster task does, how a built image reaches the nodes, how the specs reach an
//! exposed port, what teardown does, what identifies the cluster and what is checked before
//! any work. [`Cluster`] says which backend a run uses; a combination a backend does not
//! support (a registry for Kind, say) has no way to be written down.

pub mod existing;
pub mod kind;
mod registry;

use camino::Utf8Path;
use serde::{Deserialize, Serialize};

pub use existing::ExistingCluster;
pub use kind::{KindCluster, Lifecycle};
pub use registry::Registry;

use crate::builders::Engine;
use crate::catalog::Exposed;
use crate::phases::{Command, Task};

/// The task after which the cluster exists and its kubeconfig reaches it.
pub const CLUSTER: &str = "cluster";

/// How a built image gets to where pods can use it.
pub struct Delivery {
    pub tasks: Vec<Task>,
    /// The task after which pods can use the image.
    pub ready: String,
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
    /// The [`CLUSTER`] task; `exposed` are the ports the specs will reach.
    fn cluster(&self, exposed: &[Exposed], engine: Engine) -> Task;
    /// A probe that succeeds when `image` is already where the cluster gets it.
    fn delivered(&self, image: &str) -> Option<Command>;
    /// How the image `image` of `bin` gets from `engine` to the cluster once the task `built`
    /// made it.
    fn deliver(&self, bin: &str, image: &str, engine: Engine, built: &str) -> Delivery;
    /// For an exposed port: the node port to fix and the URL the host reaches it at, or `None`
    /// for an allocated port at the node's address.
    fn expose(&self, exposed: &Exposed) -> (Option<u16>, Option<String>);
    /// The tasks that run after the rest, whatever happened: diagnostics and cleanup.
    fn teardown(&self, run_dir: &Utf8Path, engine: Engine) -> Vec<Task>;
    /// Checks before any work, with a one-line cause and fix for each problem.
    fn preflight(&self, exposed: &[Exposed], engine: Engine) -> anyhow::Result<()>;
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
