//! The container builder: the binaries are compiled inside the engine, for the nodes' platform,
//! by `services/Dockerfile.build` from a builder image (an official Rust image by default), with
//! cache mounts for the cargo registry and the target directory so the next build is
//! incremental. One build compiles every binary and exports them here; each is checked and made
//! into a thin image as the host builder's are. Right on macOS, and wherever this machine cannot
//! make binaries the nodes run.

use anyhow::bail;
use serde::{Deserialize, Serialize};
use xshell::{Shell, cmd};

use super::{BuildCx, Engine, ImageBuilder, Target, host};
use crate::phases::{Command, Task};

/// The multi-stage Dockerfile, its context the workspace.
pub const DOCKERFILE: &str = "services/Dockerfile.build";

/// The builder image unless `--builder-image` or `REMEDY_BUILDER_IMAGE` names another: its
/// glibc is bookworm's, the default base image's.
pub const DEFAULT_IMAGE: &str = "docker.io/library/rust:1-slim-bookworm";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// The image the binaries are compiled in.
    pub image: String,
}

impl ImageBuilder for Container {
    fn describe(&self, engine: Engine) -> String {
        format!(
            "container (cargo build inside {} from {} by {DOCKERFILE}, the registry and target directory cached \
             in the engine; each binary exported, checked, and built onto the base image)",
            engine.program(),
            self.image
        )
    }

    fn preflight(&self, engine: Engine, _target: &Target) -> anyhow::Result<()> {
        let sh = Shell::new()?;
        let program = engine.program();
        let format = "{{.Client.Version}}";
        let client = cmd!(sh, "{program} version --format {format}").quiet().ignore_stderr().read().unwrap_or_default();
        match engine {
            Engine::Docker => {
                let buildx = cmd!(sh, "docker buildx version").quiet().ignore_stdout().ignore_stderr().run().is_ok();
                if !buildkit(&client, buildx) {
                    bail!(
                        "docker {client} builds with BuildKit only through the buildx plugin, which is not installed, \
                         and the container builder needs BuildKit's cache mounts: install buildx (Debian: apt-get \
                         install docker-buildx; Docker Desktop has it), or pass --builder zig"
                    );
                }
            }
            Engine::Podman => {
                if major(&client).is_some_and(|m| m < 4) {
                    bail!("podman {client} cannot mount build caches: install podman >= 4, or pass --builder zig");
                }
            }
        }
        Ok(())
    }

    fn host_cargo(&self) -> Option<&'static str> {
        // The engine compiles; cargo here is free for the specs.
        None
    }

    fn tasks(&self, bins: &[&str], cx: &BuildCx<'_>) -> Vec<Task> {
        let platform = cx.target.platform();
        let dir = format!("target/container/linux-{}", cx.target.arch);
        let mut build = Command::new(cx.engine.program(), ["build", "--platform", &platform]).args([
            "--target".to_owned(),
            "export".to_owned(),
            "--output".to_owned(),
            format!("type=local,dest={dir}"),
            "--build-arg".to_owned(),
            format!("BUILDER_IMAGE={}", self.image),
            "--build-arg".to_owned(),
            format!("BINS={}", bins.join(" ")),
            "--file".to_owned(),
            DOCKERFILE.to_owned(),
            ".".to_owned(),
        ]);
        if cx.engine == Engine::Docker {
            // docker before 23 builds with BuildKit only when asked; later ones always do.
            build = build.env("DOCKER_BUILDKIT", "1");
        }
        let compile = host::compile(cx, 120).inputs([DOCKERFILE]).run(build);
        host::onto_base(bins, cx, &format!("container {}", self.image), &dir, compile)
    }
}

/// Whether `docker build` can use BuildKit: docker before 23 has it built in (with
/// `DOCKER_BUILDKIT=1`), later ones through the buildx plugin.
fn buildkit(client_version: &str, buildx: bool) -> bool {
    buildx || major(client_version).is_some_and(|m| (18..23).contains(&m))
}

fn major(version: &str) -> Option<u32> {
    version.trim().split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_has_buildkit_built_in_before_23_and_as_buildx_after() {
        assert!(buildkit("20.10.24+dfsg1", false));
        assert!(!buildkit("28.2.2", false));
        assert!(buildkit("28.2.2", true));
        assert!(!buildkit("17.06.0-ce", false));
        assert!(!buildkit("", false));
    }
}
