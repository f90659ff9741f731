//! How the binaries of an environment become images in the container engine, for the platform
//! the cluster's nodes run. Each builder is one file implementing [`ImageBuilder`]; [`Builder`]
//! says which one a run uses, and [`auto`] how `--builder auto` chooses it.
//!
//! Every builder tags an image with a content hash of what went into it (the builder and the
//! platform included), sets the run variables `TAG_<BIN>` and `IMAGE_<BIN>` (the whole
//! reference) in `build-image-<bin>`, and skips a build whose tag exists.

pub mod auto;
pub mod container;
pub mod elf;
pub mod host;
pub mod platform;
pub mod zig;

use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

pub use container::Container;
pub use host::Host;
pub use platform::{Arch, Glibc};
pub use zig::Zig;

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

    /// The engine that answers: `docker version` says whose server it reached (a `docker` on
    /// PATH may be podman's docker shim, or have no daemon), then podman is asked. `None` when
    /// neither is installed.
    pub fn detect() -> Option<Engine> {
        let sh = xshell::Shell::new().ok()?;
        let probe = |program: &str, args: &[&str]| {
            if which::which(program).is_err() {
                return Probe::Missing;
            }
            let out = xshell::cmd!(sh, "{program} {args...}").quiet().ignore_status().output();
            match out {
                Ok(out) if out.status.success() => Probe::Answers(String::from_utf8_lossy(&out.stdout).into_owned()),
                _ => Probe::Silent,
            }
        };
        let docker = probe("docker", &["version"]);
        let podman = || probe("podman", &["info", "--format", "{{.Version.Version}}"]);
        choose(&docker, podman)
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

/// What asking an engine's client for its server gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Missing,
    /// Installed, but its server does not answer.
    Silent,
    /// What it printed.
    Answers(String),
}

/// Which engine to use, from `docker version` and (asked only when that decides nothing)
/// podman: docker when a Docker server answered, podman when docker is podman's shim or when
/// only podman answers; an installed one that does not answer otherwise (preflight says so).
pub fn choose(docker: &Probe, podman: impl FnOnce() -> Probe) -> Option<Engine> {
    match docker {
        // podman-docker's `docker version` is podman's: "Client: Podman Engine".
        Probe::Answers(text) if text.contains("Podman") => Some(Engine::Podman),
        Probe::Answers(_) => Some(Engine::Docker),
        Probe::Silent => match podman() {
            Probe::Answers(_) => Some(Engine::Podman),
            Probe::Silent | Probe::Missing => Some(Engine::Docker),
        },
        Probe::Missing => match podman() {
            Probe::Missing => None,
            Probe::Answers(_) | Probe::Silent => Some(Engine::Podman),
        },
    }
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
    /// What the images are built for.
    pub target: &'a Target,
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

    /// The strings every image's content hash includes besides its files: what it is built
    /// onto, for which platform and by which builder.
    pub fn hashed(&self, builder: &str) -> Vec<String> {
        vec![
            format!("BASE_IMAGE={}", self.base_image),
            format!("platform={}", self.target.platform()),
            format!("builder={builder}"),
        ]
    }
}

/// What the images must run on: the nodes' architecture and the base image's glibc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub arch: Arch,
    pub glibc: Glibc,
}

impl Target {
    /// `linux/<arch>`, as `--platform` takes it.
    pub fn platform(&self) -> String {
        format!("linux/{}", self.arch)
    }
}

/// One way of building images.
pub trait ImageBuilder {
    /// What `--plan` says of it.
    fn describe(&self, engine: Engine) -> String;
    /// What it needs besides the programs its tasks run, with the install command for each
    /// that is missing.
    fn preflight(&self, engine: Engine, target: &Target) -> anyhow::Result<()>;
    /// The task that runs cargo on this machine, if one does: the specs' compile waits for it,
    /// since cargo builds one thing at a time anyway.
    fn host_cargo(&self) -> Option<&'static str>;
    /// The tasks that build `bins` into images: [`image_task`] for each, after whatever
    /// compiles them.
    fn tasks(&self, bins: &[&str], cx: &BuildCx<'_>) -> Vec<Task>;
}

/// The builder a run uses; each variant is one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Builder {
    Host(Host),
    Zig(Zig),
    Container(Container),
}

impl Builder {
    pub fn get(&self) -> &dyn ImageBuilder {
        match self {
            Builder::Host(host) => host,
            Builder::Zig(zig) => zig,
            Builder::Container(container) => container,
        }
    }

    /// Its `--builder` name.
    pub fn name(&self) -> &'static str {
        match self {
            Builder::Host(_) => "host",
            Builder::Zig(_) => "zig",
            Builder::Container(_) => "container",
        }
    }
}

/// Where a [`Target`]'s architecture and glibc were learned, as `--plan` says it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Learned {
    pub arch: String,
    pub glibc: String,
}

/// How a run builds its images, and why: resolved once, before planning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    pub builder: Builder,
    pub target: Target,
    pub learned: Learned,
    /// Why this builder.
    pub why: String,
}

impl Build {
    /// What `--plan` says: the platform and where it was learned, the builder and why.
    pub fn describe(&self, engine: Engine, base_image: &str) -> String {
        format!(
            "platform: {} ({})\nbase image: {base_image}, glibc {} ({})\nbuilder: {}, because {}\n  {}",
            self.target.platform(),
            self.learned.arch,
            self.target.glibc,
            self.learned.glibc,
            self.builder.name(),
            self.why,
            self.builder.get().describe(engine)
        )
    }

    /// The host builder for Linux on amd64 onto Debian bookworm: what the bench, the tests and
    /// pre-push plan with.
    pub fn default_host() -> Build {
        Build {
            builder: Builder::Host(Host),
            target: Target { arch: Arch::Amd64, glibc: Glibc::new(2, 36) },
            learned: Learned { arch: "assumed".to_owned(), glibc: "assumed".to_owned() },
            why: "the default".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER_CE: &str = "Client: Docker Engine - Community\n Version: 28.2.2\n\nServer: Docker Engine - Community\n Engine:\n  Version: 28.2.2\n";
    const DOCKER_DESKTOP: &str = "Client:\n Version: 28.3.2\n Context: desktop-linux\n\nServer: Docker Desktop 4.44.3 (202357)\n Engine:\n  Version: 28.3.2\n  OS/Arch: linux/arm64\n";
    const PODMAN_DOCKER: &str = "Client:       Podman Engine\nVersion:      5.2.2\nAPI Version:  5.2.2\nOS/Arch:      darwin/arm64\n\nServer:       Podman Engine\nVersion:      5.2.2\nOS/Arch:      linux/arm64\n";

    fn answers(text: &str) -> Probe {
        Probe::Answers(text.to_owned())
    }

    #[test]
    fn the_engine_is_the_one_that_answers() {
        let unasked = || -> Probe { panic!("podman asked although docker decided") };
        assert_eq!(choose(&answers(DOCKER_CE), unasked), Some(Engine::Docker));
        // Docker Desktop on macOS on arm64.
        assert_eq!(choose(&answers(DOCKER_DESKTOP), unasked), Some(Engine::Docker));
        // podman's docker shim (podman-docker, or podman machine's docker socket on macOS).
        assert_eq!(choose(&answers(PODMAN_DOCKER), unasked), Some(Engine::Podman));
        // docker installed, its daemon down: podman if it answers.
        assert_eq!(choose(&Probe::Silent, || answers("5.2.2")), Some(Engine::Podman));
        assert_eq!(choose(&Probe::Silent, || Probe::Silent), Some(Engine::Docker));
        assert_eq!(choose(&Probe::Missing, || Probe::Silent), Some(Engine::Podman));
        assert_eq!(choose(&Probe::Missing, || Probe::Missing), None);
    }
}
