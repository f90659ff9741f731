//! How the binaries of an environment become images in the container engine. Each builder is
//! one file implementing [`ImageBuilder`]; [`Builder`] says which one a run uses.
//!
//! Every builder tags an image with a content hash of what went into it, sets the run
//! variables `TAG_<BIN>` and `IMAGE_<BIN>` (the whole reference) in `build-image-<bin>`, and
//! skips a build whose tag exists.

pub mod host;

use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

pub use host::Host;

use crate::phases::{Command, Task};

/// The container engine that builds, saves and pushes images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Docker,
    Podman,
}

impl Engine {
    pub fn program(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
        }
    }

    /// docker if it is on PATH, else podman if it is.
    pub fn detect() -> Option<Engine> {
        [Engine::Docker, Engine::Podman].into_iter().find(|e| which::which(e.program()).is_ok())
    }

    /// A probe that succeeds when the engine has `image`.
    pub fn has(self, image: &str) -> Command {
        Command::new(self.program(), ["image", "inspect", "--format", "{{.Id}}", image])
    }
}

/// The id of the task after which `bin`'s image exists in the engine.
pub fn image_task(bin: &str) -> String {
    format!("build-image-{bin}")
}

/// The run variable holding the content-hash tag of `bin`'s image.
pub fn tag_var(bin: &str) -> String {
    format!("TAG_{}", bin.to_uppercase())
}

/// The run variable holding `bin`'s whole image reference, as manifests name it.
pub fn image_var(bin: &str) -> String {
    format!("IMAGE_{}", bin.to_uppercase())
}

/// What a builder needs to know of the run.
pub struct BuildCx<'a> {
    pub engine: Engine,
    /// Build contexts go under `<run dir>/images/<bin>`.
    pub run_dir: &'a Utf8Path,
    /// Images are named `<image repo>/<bin>:<content hash>`.
    pub image_repo: &'a str,
    pub base_image: &'a str,
    /// What the compile waits for.
    pub after: &'a [&'a str],
    /// The files the binaries are built from.
    pub sources: &'a [Utf8PathBuf],
    /// A probe that succeeds when an image is already where the cluster gets it, so it need not
    /// be built here either.
    pub delivered: &'a dyn Fn(&str) -> Option<Command>,
}

impl BuildCx<'_> {
    /// `bin`'s image with its tag still a run variable.
    pub fn image(&self, bin: &str) -> String {
        format!("{}/{bin}:${{{}}}", self.image_repo, tag_var(bin))
    }
}

/// One way of building images.
pub trait ImageBuilder {
    /// What `--plan` says of it.
    fn describe(&self, engine: Engine) -> String;
    /// The task that runs cargo on this machine, if one does: the specs' compile waits for it,
    /// since cargo builds one thing at a time anyway.
    fn host_cargo(&self) -> Option<&'static str>;
    /// The tasks that build `bins` into images: [`image_task`] for each, after whatever
    /// compiles them.
    fn tasks(&self, bins: &[&str], cx: &BuildCx<'_>) -> Vec<Task>;
}

/// The builder a run uses; each variant is one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Builder {
    Host,
}

impl Builder {
    pub fn get(self) -> &'static dyn ImageBuilder {
        match self {
            Builder::Host => &Host,
        }
    }
}
