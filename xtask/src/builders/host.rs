//! The host builder: one `cargo build` on this machine for every binary, each checked to load on
//! the base image, then a thin image per binary (`services/<bin>/Dockerfile` copies it onto the
//! base image). Right when the host is Linux on the nodes' architecture with a glibc no newer
//! than the base image's.

use serde::{Deserialize, Serialize};

use super::{BuildCx, Engine, ImageBuilder, Target, image_task, image_var, tag_var};
use crate::phases::{Command, Kind, Phase, Step, Task};

/// The task compiling every binary, which each image build waits for.
pub const BINARIES: &str = "build-binaries";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host;

impl ImageBuilder for Host {
    fn describe(&self, engine: Engine) -> String {
        format!(
            "host (cargo build on this machine, each binary checked to load on the base image, then {} build onto it)",
            engine.program()
        )
    }

    fn preflight(&self, _engine: Engine, _target: &Target) -> anyhow::Result<()> {
        // Whether this machine can build for the target is decided with the builder.
        Ok(())
    }

    fn host_cargo(&self) -> Option<&'static str> {
        Some(BINARIES)
    }

    fn tasks(&self, bins: &[&str], cx: &BuildCx<'_>) -> Vec<Task> {
        let cargo = Command::new("cargo", ["build", "--locked"]).args(bin_args(bins));
        onto_base(bins, cx, "host", "target/debug", compile(cx, 60).run(cargo))
    }
}

/// `--bin <bin>` for each of `bins`.
pub(super) fn bin_args<'a>(bins: &'a [&'a str]) -> impl Iterator<Item = String> + 'a {
    bins.iter().flat_map(|bin| ["--bin".to_owned(), (*bin).to_owned()])
}

/// The task that compiles every binary (its steps still to add), from the sources of `cx`.
pub(super) fn compile(cx: &BuildCx<'_>, estimate: u64) -> Task {
    Task::new(BINARIES, Phase::Images, Kind::Build)
        .after(cx.after)
        .estimate(estimate)
        .inputs(cx.sources.iter().cloned())
}

/// The tasks of a builder whose `compile` task leaves every binary in `dir` on this machine: it,
/// with each binary then checked to load on the base image for the target, and a thin image per
/// binary.
pub(super) fn onto_base(bins: &[&str], cx: &BuildCx<'_>, builder: &str, dir: &str, compile: Task) -> Vec<Task> {
    let binaries: Vec<String> = bins.iter().map(|bin| format!("{dir}/{bin}")).collect();
    let loadable = Step::Loadable {
        binaries: binaries.iter().map(Into::into).collect(),
        arch: cx.target.arch.to_string(),
        glibc: cx.target.glibc.to_string(),
        image: cx.base_image.to_owned(),
    };
    let mut tasks = vec![compile.step(loadable)];
    let hashed = cx.hashed(builder);
    let hashed: Vec<&str> = hashed.iter().map(String::as_str).collect();
    let platform = cx.target.platform();
    for (&bin, binary) in bins.iter().zip(&binaries) {
        let context = cx.run_dir.join("images").join(bin);
        let image = cx.image(bin);
        let base = format!("BASE_IMAGE={}", cx.base_image);
        let dockerfile = format!("services/{bin}/Dockerfile");
        let mut build = Task::new(image_task(bin), Phase::Images, Kind::Build)
            .after(&[BINARIES])
            .estimate(8)
            .inputs([dockerfile.as_str()])
            .tag(tag_var(bin), &[binary, &dockerfile], &hashed)
            .set(image_var(bin), &image)
            .skip_if(cx.engine.has(&image));
        if let Some(probe) = (cx.delivered)(&image) {
            build = build.skip_if(probe);
        }
        let args = ["build", "--platform", &platform, "--tag", &image, "--build-arg", &base, "--file", &dockerfile];
        let args = args.into_iter().chain([context.as_str()]);
        tasks.push(build.copy(binary, context.join(bin)).run(Command::new(cx.engine.program(), args)));
    }
    tasks
}
