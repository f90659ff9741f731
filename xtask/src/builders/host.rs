//! The host builder: one `cargo build` on this machine for every binary, then a thin image per
//! binary (`services/<bin>/Dockerfile` copies it onto the base image). Right when the host is
//! Linux on the nodes' architecture with a glibc no newer than the base image's.

use super::{BuildCx, Engine, ImageBuilder, image_task, image_var, tag_var};
use crate::phases::{Command, Kind, Phase, Task};

/// The task compiling every binary, which each image build waits for.
pub const BINARIES: &str = "build-binaries";

pub struct Host;

impl ImageBuilder for Host {
    fn describe(&self, engine: Engine) -> String {
        format!("host (cargo build on this machine, then {} build onto the base image)", engine.program())
    }

    fn host_cargo(&self) -> Option<&'static str> {
        Some(BINARIES)
    }

    fn tasks(&self, bins: &[&str], cx: &BuildCx<'_>) -> Vec<Task> {
        let program = cx.engine.program();
        let mut args = vec!["build", "--locked"];
        for bin in bins {
            args.extend(["--bin", bin]);
        }
        let mut tasks = vec![
            Task::new(BINARIES, Phase::Images, Kind::Build)
                .after(cx.after)
                .estimate(60)
                .inputs(cx.sources.iter().cloned())
                .run(Command::new("cargo", args)),
        ];
        for &bin in bins {
            let context = cx.run_dir.join("images").join(bin);
            let image = cx.image(bin);
            let base = format!("BASE_IMAGE={}", cx.base_image);
            let dockerfile = format!("services/{bin}/Dockerfile");
            let binary = format!("target/debug/{bin}");
            let mut build = Task::new(image_task(bin), Phase::Images, Kind::Build)
                .after(&[BINARIES])
                .estimate(8)
                .inputs([dockerfile.as_str()])
                .tag(tag_var(bin), &[&binary, &dockerfile], &[&base])
                .set(image_var(bin), &image)
                .skip_if(cx.engine.has(&image));
            if let Some(probe) = (cx.delivered)(&image) {
                build = build.skip_if(probe);
            }
            tasks.push(build.copy(&binary, context.join(bin)).run(Command::new(
                program,
                ["build", "--tag", &image, "--build-arg", &base, "--file", &dockerfile, context.as_str()],
            )));
        }
        tasks
    }
}
