//! `cargo xtask e2e <service>`: bring up a service's environment as its task graph allows, run
//! its specs, report the timings, tear down.

mod all;
mod executor;
mod junit;
mod kube;
mod preflight;
mod prune;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use camino::Utf8PathBuf;
use tokio_util::sync::CancellationToken;

use crate::envs::{Delivery, Exposed, Registry, Service, Settings, Target};
use crate::flags::{self, ClusterMode, Engine, ImageDelivery, Selection};
use crate::phases::progress::{self, human};
use crate::phases::report::Report;
use crate::phases::{self, Plan, run_command};
use executor::RealExecutor;

/// How long the run's namespace gets to disappear on an existing cluster.
const NAMESPACE_DELETE_TIMEOUT: Duration = Duration::from_secs(120);

/// The base image of the service images unless `REMEDY_IMAGE_BASE` names another.
const DEFAULT_BASE_IMAGE: &str = "debian:bookworm-slim";

impl flags::E2e {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.service {
            Selection::One(service) => self.run_one(service),
            Selection::All => all::run(&self),
        }
    }

    fn run_one(self, service_flag: Service) -> anyhow::Result<ExitCode> {
        // Paths on the command line are relative to where the user is; everything else to the
        // workspace root, where the xtask works. Every path handed on is absolute: the specs
        // run in another directory.
        let cwd = Utf8PathBuf::try_from(std::env::current_dir()?)?;
        let root = crate::project_root();
        std::env::set_current_dir(root)?;
        let service = service_flag.name();
        let run_id = run_id();
        let suffix = &run_id[run_id.len() - 6..];
        let run_dir = match &self.report_dir {
            Some(dir) => cwd.join(dir),
            None => root.join(format!("target/e2e/{service}/{run_id}")),
        };
        let (engine, engine_found) = match self.engine {
            Some(engine) => (engine, which::which(engine.program()).is_ok()),
            None => detect_engine().map_or((Engine::Docker, false), |e| (e, true)),
        };
        let target = match self.cluster {
            ClusterMode::Kind => {
                // A reused cluster keeps a stable name, so the next run finds it.
                let default =
                    if self.reuse_cluster { format!("remedy-{service}") } else { format!("remedy-{service}-{suffix}") };
                let name = self.cluster_name.clone().unwrap_or(default);
                check_cluster_name(&name)?;
                Target::Kind { name, reuse: self.reuse_cluster }
            }
            ClusterMode::Existing => {
                let kubeconfig = self.kubeconfig.as_ref().expect("clap requires --kubeconfig with --cluster existing");
                Target::Existing { kubeconfig: cwd.join(kubeconfig) }
            }
        };
        let delivery = delivery(self.image_delivery, self.cluster, self.registry.as_deref())?;
        let image_repo = match &delivery {
            Delivery::Registry(registry) => registry.image_repo(),
            Delivery::KindLoad | Delivery::None => "localhost/remedy".to_owned(),
        };
        let settings = Settings {
            run_id: run_id.clone(),
            run_dir,
            engine,
            target,
            delivery,
            // On a reused cluster the namespace is stable too, so an unchanged environment
            // re-applies as a no-op.
            namespace: if self.reuse_cluster {
                format!("remedy-{service}")
            } else {
                format!("remedy-{service}-{suffix}")
            },
            image_repo,
            base_image: std::env::var("REMEDY_IMAGE_BASE").unwrap_or_else(|_| DEFAULT_BASE_IMAGE.to_owned()),
            manifests: self.manifests.as_ref().map_or_else(|| root.join("test/manifests"), |dir| cwd.join(dir)),
            wait_timeout: Duration::from_secs(self.wait_timeout),
            skip_unchanged_tests: self.skip_unchanged_tests,
            spec_args: self.spec_args.clone(),
            builds_after_cluster: self.builds_after_cluster,
        };
        let plan = service_flag.plan(&settings)?;
        // A reused environment is kept for the next run.
        let keep = self.keep_cluster || self.reuse_cluster;
        let jobs = self.jobs.map_or_else(phases::default_jobs, usize::from);

        if self.plan {
            let delivery = match &settings.delivery {
                Delivery::KindLoad => "kind load image-archive".to_owned(),
                Delivery::None => "none (the cluster's runtime sees the engine's images)".to_owned(),
                Delivery::Registry(registry) => format!(
                    "push to registry {} as {}/<bin>:<content hash>, pulled by the cluster",
                    registry.address(),
                    settings.image_repo
                ),
            };
            let cluster = match &settings.target {
                Target::Kind { name, reuse } => format!(
                    "kind `{name}`{}, kubeconfig {}",
                    if *reuse { " (reused if it exists)" } else { "" },
                    settings.kubeconfig()
                ),
                Target::Existing { kubeconfig } => format!("existing, kubeconfig {kubeconfig}"),
            };
            let found = if engine_found { "" } else { " (not found on PATH)" };
            let mut out = format!(
                "{service} end-to-end environment, run {run_id}\ncluster: {cluster}, namespace {}\n\
                 engine: {}{found}; image delivery: {delivery}; report in {}\n\n{}\nteardown:\n",
                settings.namespace,
                engine.program(),
                settings.run_dir,
                plan.describe(self.strategy, jobs)
            );
            for line in settings.teardown(keep) {
                out.push_str(&format!("    {line}\n"));
            }
            if let Some(n) = self.keep_images.0 {
                out.push_str(&format!(
                    "    on success: remove all but the newest {n} tags of each {}/<bin> this run built \
                     (never this run's)\n",
                    settings.image_repo
                ));
            }
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
            return Ok(ExitCode::SUCCESS);
        }
        let exposed = service_flag.exposed();
        preflight::check(&settings, &plan, &exposed)?;
        for dir in ["logs", "images"] {
            let dir = settings.run_dir.join(dir);
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {dir}"))?;
        }
        if let Target::Kind { name, .. } = &settings.target {
            let config = settings.run_dir.join("kind-config.yaml");
            std::fs::write(&config, kind_config(name, &exposed)).with_context(|| format!("cannot write {config}"))?;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let options = RunOptions {
            strategy: self.strategy,
            jobs,
            keep,
            require_specs: !self.spec_args.is_empty() && !self.allow_no_specs,
            keep_images: self.keep_images.0,
        };
        runtime.block_on(run(service, settings, plan, options))
    }
}

/// How a run schedules its plan and what it does after.
struct RunOptions {
    strategy: phases::Strategy,
    jobs: usize,
    /// Keep the cluster or namespace.
    keep: bool,
    /// Fail when the spec arguments matched no spec.
    require_specs: bool,
    /// After a successful run, how many images per repository the engine keeps.
    keep_images: Option<usize>,
}

/// Runs the plan, then tears down on a fresh context whatever happened, then reports.
async fn run(service: &str, settings: Settings, plan: Plan, options: RunOptions) -> anyhow::Result<ExitCode> {
    let RunOptions { strategy, jobs, keep, require_specs, keep_images } = options;
    let cancel = CancellationToken::new();
    let interrupt = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: stopping running tasks, then tearing down (Ctrl-C again exits at once)");
            interrupt.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let images = [
        ("IMAGE_POSTGRES", std::env::var("REMEDY_IMAGE_POSTGRES").unwrap_or_else(|_| "postgres:16".to_owned())),
        ("IMAGE_REDIS", std::env::var("REMEDY_IMAGE_REDIS").unwrap_or_else(|_| "redis:7".to_owned())),
    ];
    let executor = Arc::new(RealExecutor::new(settings.clone(), &images)?);
    let plan = Arc::new(plan);
    let logs = settings.run_dir.join("logs");
    let mut progress = progress::for_stderr();
    let record = phases::run(plan.clone(), executor.clone(), strategy, jobs, &logs, progress.as_mut(), cancel).await;

    let report = Report::new(format!("{service} end-to-end"), &settings.run_id, &plan, &record);
    report.write(&settings.run_dir)?;
    let (specs, specs_run) = specs_results(&settings, &plan, &record, service).unzip();
    let started = Instant::now();
    let mut teardown = teardown(&settings, &executor, !record.succeeded(), keep).await;
    if let (Some(n), true, Ok(lines)) = (keep_images, record.succeeded(), &mut teardown) {
        lines.push(match prune::prune(settings.engine, &executor.images(), n) {
            Ok(removed) if removed.is_empty() => format!("no image to prune (keeping the newest {n} per repository)"),
            Ok(removed) => format!("pruned {} older image(s), keeping the newest {n} per repository", removed.len()),
            Err(err) => format!("could not prune old images: {err:#}"),
        });
    }
    eprint!("{}", report.terminal());
    if let Some(line) = specs {
        eprintln!("  {line}");
    }
    match &teardown {
        Ok(lines) => {
            for line in lines {
                eprintln!("  {line}");
            }
            eprintln!("  teardown took {}", human(started.elapsed()));
        }
        Err(err) => eprintln!("  teardown failed: {err:#}"),
    }
    eprintln!("  report: {}", settings.run_dir.join("report.md"));
    if record.interrupted {
        return Ok(ExitCode::from(130));
    }
    if let Some(summary) = record.failure_summary() {
        bail!("{service} end-to-end run failed: {summary}");
    }
    teardown?;
    if require_specs && specs_run.flatten() == Some(0) {
        bail!(
            "no {service} spec matched `{}`: list them with `cargo test -p remedy-e2e --test {service} -- --list`",
            settings.spec_args.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// When the specs ran: a line with their counts, and how many ran; their JUnit XML goes to
/// the report directory.
fn specs_results(
    settings: &Settings,
    plan: &Plan,
    record: &phases::RunRecord,
    suite: &str,
) -> Option<(String, Option<usize>)> {
    let specs = plan.tasks().iter().position(|t| t.id == crate::envs::ids::SPECS)?;
    record.tasks[specs].start?;
    if record.tasks[specs].status == phases::Status::Cached {
        return Some(("specs: skipped, unchanged since they last passed against this environment".to_owned(), None));
    }
    let log = settings.run_dir.join("logs").join(format!("{}.log", crate::envs::ids::SPECS));
    let junit = settings.run_dir.join("junit.xml");
    Some(match junit::write(&log, &junit, suite) {
        Ok(c) => (
            format!("specs: {} passed, {} failed, {} ignored ({junit})", c.passed, c.failed, c.ignored),
            Some(c.total()),
        ),
        Err(err) => (format!("specs: no results ({err:#})"), None),
    })
}

/// Saves diagnostics when the run failed, then deletes what the run created unless it is to be
/// kept. Runs after cancellation, so it never uses the run's token.
async fn teardown(
    settings: &Settings,
    executor: &RealExecutor,
    failed: bool,
    keep: bool,
) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    let never = CancellationToken::new();
    let log = settings.run_dir.join("logs").join("teardown.log");
    match &settings.target {
        Target::Kind { name, reuse } => {
            if failed {
                let dir = settings.run_dir.join("kind-logs");
                match run_command(&settings.kind_export_logs(name), &log, &never) {
                    Ok(()) => done.push(format!("diagnostics saved in {dir}")),
                    Err(err) => done.push(format!("could not export kind logs: {err:#}")),
                }
            }
            if keep || *reuse {
                done.push(format!("kept kind cluster {name}, kubeconfig {}", settings.kubeconfig()));
            } else {
                let kubeconfig = settings.kubeconfig();
                run_command(&settings.kind_delete(name), &log, &never)?;
                let _ = std::fs::remove_file(&kubeconfig);
                done.push(format!("deleted kind cluster {name}"));
            }
        }
        Target::Existing { .. } => {
            let ns = &settings.namespace;
            let client = executor.client().await?;
            if failed {
                let dir = settings.run_dir.join("diagnostics");
                match kube::save_diagnostics(client, ns, &dir).await {
                    Ok(()) => done.push(format!("diagnostics saved in {dir}")),
                    Err(err) => done.push(format!("could not save diagnostics: {err:#}")),
                }
            }
            if keep {
                done.push(format!("kept namespace {ns}"));
            } else {
                let deleted = kube::delete_namespaces(client, ns, &settings.run_id, NAMESPACE_DELETE_TIMEOUT).await?;
                done.push(format!("deleted namespaces {}", deleted.join(", ")));
            }
        }
    }
    Ok(done)
}

/// A Kind config whose port mappings come from the port table.
fn kind_config(name: &str, exposed: &[Exposed]) -> String {
    let mut out =
        format!("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nname: {name}\nnodes:\n- role: control-plane\n");
    if !exposed.is_empty() {
        out.push_str("  extraPortMappings:\n");
        for e in exposed {
            out.push_str(&format!(
                "  - containerPort: {}\n    hostPort: {}\n    listenAddress: 127.0.0.1\n    protocol: TCP\n",
                e.node_port, e.host_port
            ));
        }
    }
    out
}

/// How images reach the cluster, from `--image-delivery`, `--cluster` and `--registry`; an
/// inconsistent combination is a one-line error.
fn delivery(delivery: ImageDelivery, cluster: ClusterMode, registry: Option<&str>) -> anyhow::Result<Delivery> {
    Ok(match (delivery, cluster, registry) {
        (ImageDelivery::Auto | ImageDelivery::Registry, ClusterMode::Existing, Some(registry)) => {
            Delivery::Registry(Registry::parse(registry)?)
        }
        (_, ClusterMode::Kind, Some(_)) => bail!(
            "--registry needs --cluster existing: a Kind node reaches no registry on this host without extra setup"
        ),
        (ImageDelivery::Kind | ImageDelivery::None, _, Some(_)) => {
            bail!("--registry pushes the images: drop --image-delivery or make it registry")
        }
        (ImageDelivery::Registry, _, None) => {
            bail!("--image-delivery registry needs --registry host[:port][/path], e.g. --registry localhost:5000")
        }
        (ImageDelivery::Auto | ImageDelivery::Kind, ClusterMode::Kind, None) => Delivery::KindLoad,
        (ImageDelivery::Auto | ImageDelivery::None, ClusterMode::Existing, None) => Delivery::None,
        (ImageDelivery::Kind, ClusterMode::Existing, None) => {
            bail!("--image-delivery kind needs --cluster kind; use none or registry with an existing cluster")
        }
        (ImageDelivery::None, ClusterMode::Kind, None) => {
            bail!("--image-delivery none needs --cluster existing: a Kind node cannot see the engine's images")
        }
    })
}

fn detect_engine() -> Option<Engine> {
    [Engine::Docker, Engine::Podman].into_iter().find(|e| which::which(e.program()).is_ok())
}

/// `YYYYMMDD-HHMMSS-xxxxxx`: sortable, and unique across concurrent runs.
fn run_id() -> String {
    let now = jiff::Zoned::now();
    let noise = (now.timestamp().subsec_nanosecond() as u32) ^ std::process::id().rotate_left(16);
    format!("{}-{:06x}", now.strftime("%Y%m%d-%H%M%S"), noise & 0xff_ffff)
}

/// Kind names become container and host names: lowercase letters, digits and dashes.
fn check_cluster_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 40
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if !valid {
        bail!("invalid --cluster-name `{name}`: use at most 40 lowercase letters, digits and dashes");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_flags_choose_the_delivery_or_say_what_is_inconsistent() {
        let registry = Delivery::Registry(Registry::parse("localhost:5000").unwrap());
        for flag in [ImageDelivery::Auto, ImageDelivery::Registry] {
            assert_eq!(delivery(flag, ClusterMode::Existing, Some("localhost:5000")).unwrap(), registry);
        }
        let error = |d, c, r| delivery(d, c, r).unwrap_err().to_string();
        assert_eq!(
            error(ImageDelivery::Registry, ClusterMode::Existing, None),
            "--image-delivery registry needs --registry host[:port][/path], e.g. --registry localhost:5000"
        );
        assert!(
            error(ImageDelivery::Auto, ClusterMode::Kind, Some("localhost:5000"))
                .starts_with("--registry needs --cluster existing")
        );
        assert!(
            error(ImageDelivery::None, ClusterMode::Existing, Some("localhost:5000")).starts_with("--registry pushes")
        );
        assert!(error(ImageDelivery::Auto, ClusterMode::Existing, Some("http://x:1")).contains("without a scheme"));
        assert_eq!(delivery(ImageDelivery::Auto, ClusterMode::Existing, None).unwrap(), Delivery::None);
        assert_eq!(delivery(ImageDelivery::Auto, ClusterMode::Kind, None).unwrap(), Delivery::KindLoad);
    }
}
