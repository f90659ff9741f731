//! The command line: every subcommand and flag, with `--help` examples.

use camino::Utf8PathBuf;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::builders::Engine;
use crate::builders::auto::Requested;
use crate::catalog::{Service, catalog};
use crate::phases::Strategy;

/// Build automation for the Remedy workspace.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
pub struct Xtask {
    #[command(subcommand)]
    pub subcommand: XtaskCmd,
}

#[derive(Debug, Subcommand)]
pub enum XtaskCmd {
    E2e(E2e),
    Bench(Bench),
    Test(Test),
    Codegen(Codegen),
    Hooks(Hooks),
    PrePush(PrePush),
    Report(Report),
}

/// Read and combine the reports of E2E runs.
#[derive(Debug, Args)]
pub struct Report {
    #[command(subcommand)]
    pub subcommand: ReportCmd,
}

#[derive(Debug, Subcommand)]
pub enum ReportCmd {
    Merge(ReportMerge),
}

/// Merge several E2E runs: one JUnit file with a suite per service, summary.json, summary.md,
/// and a table across services on stdout.
///
/// Each DIR is a run's report directory (it has report.json) or holds report directories one
/// level down, as a folder of downloaded CI artifacts does. "setup" is the makespan minus the
/// specs task's duration, "specs" that duration. Exits 1 when a run's outcome is not ok, a
/// spec failed, or an expected service has no run.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  cargo xtask report merge artifacts/ --out merged       every report directory in a CI artifacts folder
  cargo xtask report merge artifacts/ --expect all       ... and fail when a service has no report
  cargo xtask report merge target/e2e/gateway/20261126-120000-abc123 target/e2e/datastorage/20261126-121500-def456")]
pub struct ReportMerge {
    /// Report directories, or directories that hold them one level down.
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<Utf8PathBuf>,

    /// Where junit.xml, summary.json and summary.md go [default: target/e2e/merged].
    #[arg(long, value_name = "DIR")]
    pub out: Option<Utf8PathBuf>,

    /// Services that must each have a run, comma-separated, or `all`. One without a report is
    /// listed as missing and fails the merge, as a shard that never uploaded one should.
    #[arg(
        long,
        value_name = "SERVICE",
        value_delimiter = ',',
        value_parser = selection()
    )]
    pub expect: Vec<Selection>,
}

/// Replay a timing profile through a service's real plan and the real scheduler, with shims
/// that sleep instead of kind, docker, podman and cargo, and compare the strategies.
///
/// Runs sequential, phased and dag in turn, `--rounds` times each, and prints per strategy the
/// median makespan and the scheduler's overhead per task, the profile's critical path and the
/// ratios with the profile's targets. Missed targets do not change the exit code.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  cargo xtask bench                               the seed's gateway profile, 1 s per minute, 3 rounds each
  cargo xtask bench --rounds 5 --scale 2          longer rounds, less relative noise
  cargo xtask bench --profile my.toml --jobs 1    another profile, one image build at a time
  cargo xtask bench --profile test/bench/profiles/remediationorchestrator.toml --jobs 1,2,3
                                                  each pool size in turn, against the best each allows
  cargo xtask bench --profile-from target/e2e/gateway/20261201-120000-0a1b2c/report.json
                                                  your own run's durations")]
pub struct Bench {
    /// The timing profile (TOML) [default: test/bench/profiles/seed-gateway.toml].
    #[arg(long, value_name = "PATH", conflicts_with = "profile_from")]
    pub profile: Option<Utf8PathBuf>,

    /// Make the profile from a run's report.json (its tasks' durations), write it beside the
    /// results, and replay it.
    #[arg(long, value_name = "REPORT")]
    pub profile_from: Option<Utf8PathBuf>,

    /// Rounds per strategy.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    pub rounds: u16,

    /// Seconds the bench spends per minute of the profile.
    #[arg(long, value_name = "SECONDS_PER_MINUTE", default_value_t = 1.0)]
    pub scale: f64,

    /// The most image builds at once, or a list of them to bench one after another
    /// [default: min(3, cores), as for e2e].
    #[arg(long, short = 'j', value_name = "N,...", value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Vec<u16>,

    /// Where bench.json, bench.md and the rounds' logs go [default: target/bench/<timestamp>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<Utf8PathBuf>,
}

/// Run every test as CI does (root on Debian: installs and starts what it needs).
///
/// Lints, then each crate's tests with PostgreSQL, Redis and the local Kubernetes started for
/// them, then each service's E2E run on the local cluster.
#[derive(Debug, Args)]
pub struct Test {
    /// Skip the E2E runs on the local cluster.
    #[arg(long)]
    pub no_e2e: bool,
    /// Leave PostgreSQL, Redis and the local cluster running afterwards.
    #[arg(long)]
    pub keep_up: bool,
}

/// Regenerate checked-in files (the CRD manifests) from their sources.
#[derive(Debug, Args)]
pub struct Codegen {}

/// Install or remove the git pre-push hook that runs `cargo xtask pre-push`.
///
/// The hook goes where git looks for hooks (`git rev-parse --git-path hooks`); nothing else is
/// touched. A pre-push hook that is not ours is never overwritten.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  cargo xtask hooks install            install the hook; refuses if another pre-push hook exists
  cargo xtask hooks install --force    keep the other hook as pre-push.remedy-backup and run it first
  cargo xtask hooks uninstall          remove our hook and put the backup back, if any")]
pub struct Hooks {
    #[command(subcommand)]
    pub subcommand: HooksCmd,
}

#[derive(Debug, Subcommand)]
pub enum HooksCmd {
    Install(HooksInstall),
    Uninstall(HooksUninstall),
}

/// Install the pre-push hook (again: it is idempotent).
#[derive(Debug, Args)]
pub struct HooksInstall {
    /// Chain an existing pre-push hook that is not ours: move it to pre-push.remedy-backup and
    /// run it before ours, with the same arguments and input.
    #[arg(long)]
    pub force: bool,
}

/// Remove our pre-push hook and restore the one it replaced, if any.
#[derive(Debug, Args)]
pub struct HooksUninstall {}

/// Check what a push changes: fmt, clippy and tests of the affected crates (run by the hook).
///
/// Reads git's pre-push lines (`<local ref> <local sha> <remote ref> <remote sha>`) on stdin;
/// from a terminal it checks HEAD against its upstream. E2E runs of the affected services only
/// when REMEDY_PRE_PUSH_E2E=1 or `git config remedy.prePushE2e true`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  cargo xtask pre-push                               check what pushing HEAD to its upstream would bring
  cargo xtask pre-push --plan                        only say what that would run, and why
  REMEDY_PRE_PUSH_E2E=1 git push                     also the E2E runs of the affected services
  git push --no-verify                               push without any of it")]
pub struct PrePush {
    /// Say what would run and why; run nothing.
    #[arg(long)]
    pub plan: bool,
    /// The remote's name, as git passes it to the hook.
    pub remote: Option<String>,
    /// The remote's URL, as git passes it to the hook (unused).
    pub url: Option<String>,
}

/// Bring up a service's end-to-end environment, run its specs, report the timings, tear down.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  cargo xtask e2e gateway --plan                  print the task graph and critical path, run nothing
  cargo xtask e2e gateway --strategy phased --plan
                                                  the seed's barrier phases, for comparison
  cargo xtask e2e gateway                         fresh Kind cluster, run the specs, tear down
  cargo xtask e2e gateway --keep-cluster --cluster-name dev
                                                  keep the cluster for a later --reuse-cluster run
  cargo xtask e2e gateway --reuse-cluster -- dedup --skip restart
                                                  only the specs named *dedup*, but not *restart*
  cargo xtask e2e gateway --watch -- dedup        edit, save, see: rebuild, redeploy and re-run what a change affects
  cargo xtask e2e datastorage --cluster existing --kubeconfig ~/.kube/ci.yaml
                                                  deploy into a fresh namespace of an existing cluster
  cargo xtask e2e datastorage --cluster existing --kubeconfig ~/.kube/ci.yaml --registry localhost:5000
                                                  push the images to a registry the cluster pulls from
  cargo xtask e2e all                             every environment in one Kind cluster, a table at the end
  cargo xtask e2e gc --dry-run                    what killed runs left behind, removed by the next run")]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct E2e {
    #[command(subcommand)]
    pub command: Option<E2eCmd>,

    /// The service whose environment and specs to run, or `all` for every one, each in its own
    /// namespace of one shared cluster.
    #[arg(value_parser = selection(), required = true)]
    pub service: Option<Selection>,

    /// With `all`: how many environments come up at once.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,

    /// Print the task graph, the commands each task runs and the critical path; run nothing.
    #[arg(long)]
    pub plan: bool,

    /// Bring the environment up and run the specs, then on every change to what it is made
    /// from (sources, Dockerfiles, manifests, specs) run again only what the change affects,
    /// until Ctrl-C tears it down (unless --keep-cluster / --reuse-cluster).
    #[arg(long, conflicts_with = "plan")]
    pub watch: bool,

    /// How tasks are scheduled: as soon as their dependencies finish, phase by phase behind
    /// barriers, or one at a time.
    #[arg(long, value_enum, default_value_t = Strategy::Dag)]
    pub strategy: Strategy,

    /// Start the builds only once the cluster exists. By default they run alongside its
    /// creation; on a machine with few cores they compete with `kind create` for CPU.
    #[arg(long)]
    pub builds_after_cluster: bool,

    /// The most image builds at once [default: min(3, cores)].
    #[arg(long, short = 'j', value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,

    /// Keep the cluster (or namespace) after the run instead of deleting it.
    #[arg(long)]
    pub keep_cluster: bool,

    /// Reuse the environment and keep it afterwards: the named Kind cluster if it exists, and
    /// a stable namespace (`remedy-<service>`), so unchanged manifests re-apply as no-ops.
    #[arg(long)]
    pub reuse_cluster: bool,

    /// Skip the specs when nothing they depend on (images, manifests, spec sources, the
    /// environment) changed since they last passed; reported as cached. Useful with
    /// --reuse-cluster.
    #[arg(long)]
    pub skip_unchanged_tests: bool,

    /// Name of the Kind cluster [default: remedy-<service>-<run id>].
    #[arg(long, value_name = "NAME")]
    pub cluster_name: Option<String>,

    /// Container engine that builds and saves images [default: docker if found, else podman].
    #[arg(long, value_enum)]
    pub engine: Option<Engine>,

    /// How the binaries become images for the nodes' platform: `host` (cargo build here), `zig`
    /// (cargo zigbuild for the nodes' target and the base image's glibc), `container` (compiled
    /// inside the engine); `auto` takes the first that makes binaries the nodes run.
    #[arg(long, value_enum, default_value_t = Requested::Auto)]
    pub builder: Requested,

    /// The image `--builder container` compiles in [default: $REMEDY_BUILDER_IMAGE, else
    /// docker.io/library/rust:1-slim-bookworm].
    #[arg(long, value_name = "IMAGE")]
    pub builder_image: Option<String>,

    /// Where the environment runs: a fresh Kind cluster, or an existing cluster.
    #[arg(long, value_enum, default_value_t = ClusterMode::Kind)]
    pub cluster: ClusterMode,

    /// Kubeconfig of the existing cluster (required with --cluster existing).
    #[arg(long, value_name = "PATH", required_if_eq("cluster", "existing"))]
    pub kubeconfig: Option<Utf8PathBuf>,

    /// Push the images to this registry (`host[:port][/path]`) as `<registry>/remedy/<bin>:<hash>`
    /// and let the cluster pull them (--cluster existing only). Without it an existing cluster's
    /// runtime must already see the engine's images (a single-node cluster on this machine).
    #[arg(long, value_name = "REGISTRY")]
    pub registry: Option<String>,

    /// Directory of the manifests to deploy [default: test/manifests].
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<Utf8PathBuf>,

    /// After a successful run, keep this many of the newest images of each repository it built
    /// and remove older tags from the engine (never the run's own, nor one a container uses);
    /// `all` keeps every image.
    #[arg(long, value_name = "N|all", default_value = "3", value_parser = parse_keep_images)]
    pub keep_images: KeepImages,

    /// Arguments for the specs' test harness, after `--`: a name filter, `--exact`, `--skip
    /// NAME`, `--test-threads N`... A filtered run never skips as unchanged nor marks the suite
    /// passed, and fails when no spec matched.
    #[arg(last = true, value_name = "SPEC ARGS")]
    pub spec_args: Vec<String>,

    /// How long one rollout or Job may take, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 180)]
    pub wait_timeout: u64,

    /// Where the report, timeline and logs go [default: target/e2e/<service>/<run id>].
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<Utf8PathBuf>,

    /// Run with the settings `e2e all` resolved for this run, written to FILE; every other flag
    /// is then ignored.
    #[arg(long, hide = true, value_name = "FILE")]
    pub settings: Option<Utf8PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum E2eCmd {
    Gc(Gc),
}

/// Remove what runs that were killed (or whose machine went down) left behind: their Kind
/// clusters, namespaces, processes and image archives. Every run does this first; a live run's,
/// and what a run kept (`--keep-cluster`, `--reuse-cluster`), are never touched.
#[derive(Debug, Args)]
pub struct Gc {
    /// Say what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// How many images per repository `e2e` keeps after a successful run; `None` keeps all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepImages(pub Option<usize>);

fn parse_keep_images(value: &str) -> Result<KeepImages, String> {
    match value {
        "all" => Ok(KeepImages(None)),
        n => match n.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(KeepImages(Some(n))),
            _ => Err("a number of at least 1, or `all`".to_owned()),
        },
    }
}

/// What `cargo xtask e2e` runs.
#[derive(Debug, Clone, Copy)]
pub enum Selection {
    One(&'static Service),
    All,
}

impl Selection {
    /// The services selected: one, or every one.
    pub fn services(self) -> Vec<&'static Service> {
        match self {
            Selection::One(service) => vec![service],
            Selection::All => catalog().services().iter().collect(),
        }
    }
}

/// A service's name, or `all`.
fn selection() -> impl TypedValueParser<Value = Selection> {
    let services = catalog().services().iter().map(|s| PossibleValue::new(s.name.as_str()).help(s.about.as_str()));
    let values: Vec<PossibleValue> = services.chain([PossibleValue::new("all").help("every one of them")]).collect();
    PossibleValuesParser::new(values).map(|name| catalog().get(&name).map_or(Selection::All, Selection::One))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClusterMode {
    Kind,
    Existing,
}
