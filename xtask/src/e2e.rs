//! `cargo xtask e2e <service>`: plan a service's environment and, with `--plan`, show it.

use std::process::ExitCode;

use anyhow::bail;
use camino::{Utf8Path, Utf8PathBuf};

use crate::envs::{Delivery, Settings, Target};
use crate::flags::{self, ClusterMode, Engine, ImageDelivery};

/// The base image of the service images unless `REMEDY_IMAGE_BASE` names another.
const DEFAULT_BASE_IMAGE: &str = "debian:bookworm-slim";

impl flags::E2e {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        std::env::set_current_dir(project_root())?;
        let service = self.service.name();
        let run_id = run_id();
        let suffix = &run_id[run_id.len() - 6..];
        let run_dir = self
            .report_dir
            .clone()
            .unwrap_or_else(|| Utf8PathBuf::from(format!("target/e2e/{service}/{run_id}")));
        let (engine, engine_found) = match self.engine {
            Some(engine) => (engine, which::which(engine.program()).is_ok()),
            None => detect_engine().map_or((Engine::Docker, false), |e| (e, true)),
        };
        let target = match self.cluster {
            ClusterMode::Kind => {
                let name = self
                    .cluster_name
                    .clone()
                    .unwrap_or_else(|| format!("remedy-{service}-{suffix}"));
                check_cluster_name(&name)?;
                Target::Kind {
                    name,
                    reuse: self.reuse_cluster,
                }
            }
            ClusterMode::Existing => {
                let kubeconfig = self
                    .kubeconfig
                    .clone()
                    .expect("clap requires --kubeconfig with --cluster existing");
                Target::Existing { kubeconfig }
            }
        };
        let delivery = match (self.image_delivery, self.cluster) {
            (ImageDelivery::Auto | ImageDelivery::Kind, ClusterMode::Kind) => Delivery::KindLoad,
            (ImageDelivery::Auto | ImageDelivery::None, ClusterMode::Existing) => Delivery::None,
            (ImageDelivery::Kind, ClusterMode::Existing) => {
                bail!(
                    "--image-delivery kind needs --cluster kind; use none or registry with an existing cluster"
                )
            }
            (ImageDelivery::None, ClusterMode::Kind) => {
                bail!(
                    "--image-delivery none needs --cluster existing: a Kind node cannot see the engine's images"
                )
            }
            (ImageDelivery::Registry, _) => {
                bail!("--image-delivery registry is not available yet; use kind or none")
            }
        };
        let settings = Settings {
            run_id: run_id.clone(),
            run_dir,
            engine,
            target,
            delivery,
            namespace: format!("remedy-{service}-{suffix}"),
            base_image: std::env::var("REMEDY_IMAGE_BASE")
                .unwrap_or_else(|_| DEFAULT_BASE_IMAGE.to_owned()),
        };
        let plan = self.service.plan(&settings)?;
        let jobs = self.jobs.map_or_else(default_jobs, usize::from);

        if self.plan {
            println!("{service} end-to-end environment, run {run_id}");
            match &settings.target {
                Target::Kind { name, reuse } => println!(
                    "cluster: kind `{name}`{}, kubeconfig {}",
                    if *reuse { " (reused if it exists)" } else { "" },
                    settings.kubeconfig()
                ),
                Target::Existing { kubeconfig } => {
                    println!(
                        "cluster: existing, kubeconfig {kubeconfig}, namespace {}",
                        settings.namespace
                    )
                }
            }
            let found = if engine_found {
                ""
            } else {
                " (not found on PATH)"
            };
            println!(
                "engine: {}{found}; images delivered by {:?}; report in {}\n",
                engine.program(),
                settings.delivery,
                settings.run_dir
            );
            print!("{}", plan.describe(self.strategy, jobs));
            println!("\nteardown:");
            for line in settings.teardown(self.keep_cluster) {
                println!("    {line}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        bail!(
            "running {service}'s environment needs the Kubernetes backend, which is not built yet; \
             `cargo xtask e2e {service} --plan` shows what it will run"
        )
    }
}

/// The workspace root, from which every relative path in a plan is read.
fn project_root() -> &'static Utf8Path {
    Utf8Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
}

fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(3)
}

fn detect_engine() -> Option<Engine> {
    [Engine::Docker, Engine::Podman]
        .into_iter()
        .find(|e| which::which(e.program()).is_ok())
}

/// `YYYYMMDD-HHMMSS-xxxxxx`: sortable, and unique across concurrent runs.
fn run_id() -> String {
    let now = jiff::Zoned::now();
    let noise = (now.timestamp().subsec_nanosecond() as u32) ^ std::process::id().rotate_left(16);
    format!(
        "{}-{:06x}",
        now.strftime("%Y%m%d-%H%M%S"),
        noise & 0xff_ffff
    )
}

/// Kind names become container and host names: lowercase letters, digits and dashes.
fn check_cluster_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if !valid {
        bail!(
            "invalid --cluster-name `{name}`: use at most 40 lowercase letters, digits and dashes"
        );
    }
    Ok(())
}
