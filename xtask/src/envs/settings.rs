//! What a run depends on besides its service, resolved once from the flags. `e2e all` hands
//! each of its runs its settings as a file, so a child run has exactly the parent's.

use anyhow::{Context, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::backends::{Cluster, ExistingCluster, KindCluster, Lifecycle, Registry};
use crate::builders::auto::{self, Facts};
use crate::builders::platform::{self, Machine};
use crate::builders::{Arch, Build, Engine, Learned, Target, container, zig};
use crate::catalog::Service;
use crate::flags::{self, ClusterMode};
use crate::phases::{Strategy, default_jobs};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub service: String,
    /// `YYYYMMDD-HHMMSS-xxxxxx`; labels what the run creates.
    pub run_id: String,
    /// Where the report, the logs and the files the run makes go.
    pub run_dir: Utf8PathBuf,
    pub namespace: String,
    pub cluster: Cluster,
    /// This machine's container engine.
    pub engine: Engine,
    /// How the images are built, and for what.
    pub build: Build,
    pub images: Images,
    /// Where the manifests are read from.
    pub manifests: Utf8PathBuf,
    /// How long a rollout or a Job may take.
    pub wait_timeout_secs: u64,
    /// Skip the specs when their inputs are unchanged since they last passed here.
    pub skip_unchanged_tests: bool,
    /// Handed to the specs' test harness after `--` (a name filter, `--skip`...).
    pub spec_args: Vec<String>,
    /// Fail when the spec arguments match no spec (`e2e all` decides that across suites).
    pub require_specs: bool,
    /// Start the builds only once the cluster exists, instead of alongside its creation.
    pub builds_after_cluster: bool,
    pub strategy: Strategy,
    /// How many builds run at once.
    pub jobs: usize,
    /// After a successful run, how many images per repository the engine keeps; `None` keeps all.
    pub keep_images: Option<usize>,
}

/// The images that are not built: the services' base and the third-party ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Images {
    pub base: String,
    pub postgres: String,
    pub redis: String,
}

impl Default for Images {
    fn default() -> Images {
        Images { base: "debian:bookworm-slim".into(), postgres: "postgres:16".into(), redis: "redis:7".into() }
    }
}

impl Images {
    /// The defaults, or what `REMEDY_IMAGE_BASE`, `REMEDY_IMAGE_POSTGRES` and
    /// `REMEDY_IMAGE_REDIS` name.
    fn from_env() -> Images {
        let var = |name: &str, default: String| std::env::var(name).unwrap_or(default);
        let d = Images::default();
        Images {
            base: var("REMEDY_IMAGE_BASE", d.base),
            postgres: var("REMEDY_IMAGE_POSTGRES", d.postgres),
            redis: var("REMEDY_IMAGE_REDIS", d.redis),
        }
    }
}

impl Settings {
    /// Every default: what the bench, pre-push and the tests make plans with.
    pub fn defaults(service: &str, run_id: &str, run_dir: &Utf8Path, cluster: Cluster) -> Settings {
        Settings {
            service: service.to_owned(),
            run_id: run_id.to_owned(),
            run_dir: run_dir.to_owned(),
            namespace: format!("remedy-{service}-{}", suffix(run_id)),
            cluster,
            engine: Engine::Docker,
            build: Build::default_host(),
            images: Images::default(),
            manifests: crate::project_root().join("test/manifests"),
            wait_timeout_secs: 180,
            skip_unchanged_tests: false,
            spec_args: Vec::new(),
            require_specs: false,
            builds_after_cluster: false,
            strategy: Strategy::Dag,
            jobs: default_jobs(),
            keep_images: Some(3),
        }
    }

    /// A run of `service` as the flags say. Paths on the command line are relative to `cwd`.
    pub fn resolve(flags: &flags::E2e, service: &Service, cwd: &Utf8Path) -> anyhow::Result<Settings> {
        let run_id = run_id();
        let run_dir = match &flags.report_dir {
            Some(dir) => cwd.join(dir),
            None => crate::project_root().join(format!("target/e2e/{}/{run_id}", service.name)),
        };
        let cluster = match flags.cluster {
            ClusterMode::Kind => {
                let name = cluster_name(flags, &format!("remedy-{}", service.name), &run_id);
                Cluster::Kind(KindCluster::new(name, lifecycle(flags), &run_dir)?)
            }
            ClusterMode::Existing => Cluster::Existing(existing(flags, cwd)?),
        };
        Settings::from_flags(flags, service, cwd, run_id, run_dir, cluster)
    }

    /// `e2e all`'s run of `service` in `dir/<service>`, with the same flags: on `shared`, the
    /// Kind cluster `e2e all` makes, in the namespace `remedy-<service>`, or on the existing
    /// cluster. Whether its spec arguments matched is decided across every run.
    pub fn resolve_for_all(
        flags: &flags::E2e,
        service: &Service,
        cwd: &Utf8Path,
        dir: &Utf8Path,
        shared: Option<&KindCluster>,
    ) -> anyhow::Result<Settings> {
        let run_dir = dir.join(&service.name);
        let cluster = match shared {
            Some(kind) => Cluster::Kind(KindCluster::new(kind.name.clone(), Lifecycle::Shared, &run_dir)?),
            None => Cluster::Existing(existing(flags, cwd)?),
        };
        let mut settings = Settings::from_flags(flags, service, cwd, run_id(), run_dir, cluster)?;
        if shared.is_some() {
            settings.namespace = format!("remedy-{}", service.name);
        }
        settings.require_specs = false;
        Ok(settings)
    }

    /// The Kind cluster `e2e all` makes for its runs to share.
    pub fn shared_cluster(flags: &flags::E2e, run_id: &str, dir: &Utf8Path) -> anyhow::Result<Option<KindCluster>> {
        match flags.cluster {
            ClusterMode::Kind => {
                Ok(Some(KindCluster::new(cluster_name(flags, "remedy-all", run_id), lifecycle(flags), dir)?))
            }
            ClusterMode::Existing => Ok(None),
        }
    }

    /// The settings `e2e all` wrote for one of its runs.
    pub fn read(path: &Utf8Path) -> anyhow::Result<Settings> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the run's settings {path}"))?;
        serde_json::from_str(&text).with_context(|| format!("malformed run settings {path}"))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("settings serialize") + "\n"
    }

    fn from_flags(
        flags: &flags::E2e,
        service: &Service,
        cwd: &Utf8Path,
        run_id: String,
        run_dir: Utf8PathBuf,
        cluster: Cluster,
    ) -> anyhow::Result<Settings> {
        if flags.registry.is_some() && flags.cluster == ClusterMode::Kind {
            bail!(
                "--registry needs --cluster existing: a Kind node reaches no registry on this host without extra setup"
            );
        }
        let mut s = Settings::defaults(&service.name, &run_id, &run_dir, cluster);
        if flags.reuse_cluster {
            // A stable namespace, so an unchanged environment re-applies as a no-op.
            s.namespace = format!("remedy-{}", service.name);
        }
        s.engine = flags.engine.or_else(Engine::detect).unwrap_or(Engine::Docker);
        s.images = Images::from_env();
        s.build = build(flags, &s.cluster, s.engine, &s.images.base)?;
        if let Some(dir) = &flags.manifests {
            s.manifests = cwd.join(dir);
        }
        s.wait_timeout_secs = flags.wait_timeout;
        s.skip_unchanged_tests = flags.skip_unchanged_tests;
        s.spec_args = flags.spec_args.clone();
        s.require_specs = !flags.spec_args.is_empty();
        s.builds_after_cluster = flags.builds_after_cluster;
        s.strategy = flags.strategy;
        s.jobs = flags.jobs.map_or(s.jobs, usize::from);
        s.keep_images = flags.keep_images.0;
        Ok(s)
    }
}

/// How the images are built: for the architecture the backend's nodes run (assumed this
/// machine's when that cannot be asked), onto the base image's glibc, by the builder `--builder`
/// asks for or `auto` chooses.
fn build(flags: &flags::E2e, cluster: &Cluster, engine: Engine, base: &str) -> anyhow::Result<Build> {
    let machine = Machine::this();
    let (arch, learned) = cluster
        .backend()
        .node_arch(engine)
        .unwrap_or_else(|err| (machine.arch.unwrap_or(Arch::Amd64), format!("assumed this machine's, as {err}")));
    let (glibc, glibc_learned) = platform::base_glibc(engine, base, arch)?;
    let builder_image = match &flags.builder_image {
        Some(image) => image.clone(),
        None => std::env::var("REMEDY_BUILDER_IMAGE").unwrap_or_else(|_| container::DEFAULT_IMAGE.to_owned()),
    };
    let facts = Facts {
        rust_std: zig::tools::rust_std(&arch.linux_gnu()),
        zigbuild: zig::tools::zigbuild(),
        machine,
        target: Target { arch, glibc },
        learned: Learned { arch: learned, glibc: glibc_learned },
        engine,
        builder_image,
    };
    auto::decide(flags.builder, &facts)
}

/// `--cluster-name`, or `<prefix>` for a reused cluster (so the next run finds it), or
/// `<prefix>-<6 hex of the run id>`.
fn cluster_name(flags: &flags::E2e, prefix: &str, run_id: &str) -> String {
    let default = if flags.reuse_cluster { prefix.to_owned() } else { format!("{prefix}-{}", suffix(run_id)) };
    flags.cluster_name.clone().unwrap_or(default)
}

fn lifecycle(flags: &flags::E2e) -> Lifecycle {
    if flags.reuse_cluster { Lifecycle::Reused } else { Lifecycle::Fresh { keep: flags.keep_cluster } }
}

fn existing(flags: &flags::E2e, cwd: &Utf8Path) -> anyhow::Result<ExistingCluster> {
    let kubeconfig = flags.kubeconfig.as_ref().context("--cluster existing needs --kubeconfig PATH")?;
    Ok(ExistingCluster {
        kubeconfig: cwd.join(kubeconfig),
        registry: flags.registry.as_deref().map(Registry::parse).transpose()?,
        keep: flags.keep_cluster || flags.reuse_cluster,
    })
}

/// `YYYYMMDD-HHMMSS-xxxxxx`: sortable, and unique across concurrent runs and across the runs
/// one process starts.
pub fn run_id() -> String {
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let now = jiff::Zoned::now();
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed).wrapping_mul(0x9e37_79b9);
    let noise = (now.timestamp().subsec_nanosecond() as u32) ^ std::process::id().rotate_left(16) ^ call;
    format!("{}-{:06x}", now.strftime("%Y%m%d-%H%M%S"), noise & 0xff_ffff)
}

/// The last 6 characters of a run id, for names that must stay short.
fn suffix(run_id: &str) -> &str {
    &run_id[run_id.len().saturating_sub(6)..]
}
