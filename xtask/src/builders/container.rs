//! The container builder: the binaries are compiled inside the engine, for the nodes' platform,
//! by the multi-stage `services/Dockerfile.build` from a builder image (an official Rust image
//! by default), with cache mounts for the cargo registry and the target directory so the next
//! build is incremental. One `--target build` compiles every binary; each image's `--target
//! <bin>` then finds that stage in the engine's build cache. Right on macOS, and wherever this
//! machine cannot make binaries the nodes run.

use anyhow::bail;
use serde::{Deserialize, Serialize};
use xshell::{Shell, cmd};

use super::{BuildCx, Engine, ImageBuilder, Target, host::BINARIES, image_task, image_var, tag_var};
use crate::phases::{Command, Kind, Phase, Task};

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
            "container (cargo build inside {} from {}, {DOCKERFILE}, with cached registry and target directory; \
             then an image per binary from that stage)",
            engine.program(),
            self.image
        )
    }

    fn preflight(&self, engine: Engine, _target: &Target) -> anyhow::Result<()> {
        let sh = Shell::new()?;
        let version = |format: &str| {
            let program = engine.program();
            cmd!(sh, "{program} version --format {format}").quiet().ignore_stderr().read().unwrap_or_default()
        };
        match engine {
            Engine::Docker => {
                let buildx = cmd!(sh, "docker buildx version").quiet().ignore_stdout().ignore_stderr().run().is_ok();
                if !buildkit(&version("{{.Client.Version}}"), buildx) {
                    bail!(
                        "docker's BuildKit (the buildx plugin) is not installed, and the container builder needs its cache \
                         mounts: install it (Debian: apt-get install docker-buildx; Docker Desktop has it)"
                    );
                }
            }
            Engine::Podman => {
                let client = version("{{.Client.Version}}");
                if major(&client).is_some_and(|m| m < 4) {
                    bail!("podman {client} cannot mount build caches: install podman >= 4, or pass --builder zig");
                }
            }
        }
        Ok(())
    }

    fn host_cargo(&self) -> Option<&'static str> {
        None
    }

    fn tasks(&self, bins: &[&str], cx: &BuildCx<'_>) -> Vec<Task> {
        let program = cx.engine.program();
        let platform = cx.target.platform();
        let build_args = [
            format!("BUILDER_IMAGE={}", self.image),
            format!("BASE_IMAGE={}", cx.base_image),
            // The same for every image, so each one's build stage is the cached one.
            format!("BINS={}", bins.join(" ")),
        ];
        let build = |target: &str, tag: Option<&str>| {
            let mut args = vec!["build".to_owned(), "--platform".to_owned(), platform.clone()];
            args.extend(["--target".to_owned(), target.to_owned()]);
            args.extend(tag.into_iter().flat_map(|tag| ["--tag".to_owned(), tag.to_owned()]));
            args.extend(build_args.iter().flat_map(|arg| ["--build-arg".to_owned(), arg.clone()]));
            args.extend(["--file".to_owned(), DOCKERFILE.to_owned(), ".".to_owned()]);
            let cmd = Command::new(program, args);
            match cx.engine {
                Engine::Docker => cmd.env("DOCKER_BUILDKIT", "1"),
                Engine::Podman => cmd,
            }
        };
        let mut tasks = vec![
            Task::new(BINARIES, Phase::Images, Kind::Build)
                .after(cx.after)
                .estimate(120)
                .inputs(cx.sources.iter().cloned())
                .inputs([DOCKERFILE])
                .run(build("build", None)),
        ];
        let mut hashed = cx.hashed("container");
        hashed.push(format!("BUILDER_IMAGE={}", self.image));
        let hashed: Vec<&str> = hashed.iter().map(String::as_str).collect();
        let mut files: Vec<&str> = cx.sources.iter().map(|p| p.as_str()).collect();
        files.push(DOCKERFILE);
        for &bin in bins {
            let image = cx.image(bin);
            let mut task = Task::new(image_task(bin), Phase::Images, Kind::Build)
                .after(&[BINARIES])
                .estimate(5)
                .tag(tag_var(bin), &files, &hashed)
                .set(image_var(bin), &image)
                .skip_if(cx.engine.has(&image));
            if let Some(probe) = (cx.delivered)(&image) {
                task = task.skip_if(probe);
            }
            tasks.push(task.run(build(bin, Some(&image))));
        }
        tasks
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
