//! `cargo xtask e2e <service>`: bring up a service's environment as its task graph allows, run
//! its specs, tear down, report the timings. Everything a run does is a task of its plan.

mod all;
mod executor;
mod gc;
mod junit;
mod kube;
mod preflight;
mod prune;
mod watch;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use camino::{Utf8Path, Utf8PathBuf};
use tokio_util::sync::CancellationToken;

use crate::builders::Builder;
use crate::catalog::catalog;
use crate::envs::{self, Settings, ids};
use crate::flags::{self, Selection};
use crate::phases::github::{self, Console};
use crate::phases::history::History;
use crate::phases::progress;
use crate::phases::report::{Report, SpecResult};
use crate::phases::view::RunView;
use crate::phases::{self, Executor, Plan, RunRecord, Schedule, Status};
use executor::{RealExecutor, Target};

impl flags::E2e {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        // Paths on the command line are relative to where the user is; everything else to the
        // workspace root, where the xtask works. Every path handed on is absolute: the specs
        // run in another directory.
        let cwd = Utf8PathBuf::try_from(std::env::current_dir()?)?;
        std::env::set_current_dir(crate::project_root())?;
        if let Some(flags::E2eCmd::Gc(gc)) = &self.command {
            let lines = gc::collect(gc.dry_run);
            if lines.is_empty() {
                eprintln!("gc: no run left anything behind ({})", gc::state_dir());
            }
            lines.iter().for_each(|line| eprintln!("gc: {line}"));
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(file) = &self.settings {
            return run_one(Settings::read(&cwd.join(file))?, Mode::Run);
        }
        let mode = match (self.plan, self.watch) {
            (true, _) => Mode::Plan,
            (false, true) => Mode::Watch,
            (false, false) => Mode::Run,
        };
        match self.service.context("a service, `all` or `gc` is required")? {
            Selection::One(service) => run_one(Settings::resolve(&self, service, &cwd)?, mode),
            Selection::All if mode == Mode::Watch => bail!("--watch takes one service, not `all`"),
            Selection::All => all::run(&self, &cwd),
        }
    }
}

/// Before any work: removes what killed runs left (they may hold ports this run needs).
fn collect_garbage() {
    for line in gc::collect(false) {
        eprintln!("gc: {line}");
    }
}

/// Where the durations of runs of `name` on clusters alike (`key`) are learned: under
/// `$REMEDY_HISTORY_DIR`, else `target/e2e/history`.
fn history_path(name: &str, key: &str) -> Utf8PathBuf {
    let dir = std::env::var("REMEDY_HISTORY_DIR").ok().filter(|d| !d.is_empty()).map(Utf8PathBuf::from);
    let dir = dir.unwrap_or_else(|| crate::project_root().join("target/e2e/history"));
    dir.join(format!("{name}-{key}.json"))
}

/// Which runs of a single environment are alike enough to learn durations from: on the same
/// kind of cluster, built by the same builder (the host builder's key is the cluster's alone).
fn history_key(settings: &Settings) -> String {
    let cluster = settings.cluster.backend().history_key();
    match &settings.build.builder {
        Builder::Host(_) => cluster,
        other => format!("{cluster}-{}", other.name()),
    }
}

/// The history at `path`; a corrupt or foreign one is said and set aside.
fn history(path: &Utf8Path) -> History {
    let (history, warning) = History::load(path);
    if let Some(warning) = warning {
        eprintln!("warning: {warning}; learning durations afresh");
    }
    history
}

/// Adds the run's durations to the history at `path`; a failure to is only said.
/// Adds the run to the history, unless it ran only some of the specs (`whole` false): then its
/// specs' and total times are no whole run's, so it learns nothing.
fn learn(path: &Utf8Path, mut history: History, plan: &Plan, record: &RunRecord, whole: bool) {
    if !whole {
        return;
    }
    history.record(plan, record);
    if let Err(err) = history.save(path) {
        eprintln!("warning: cannot write the run history {path}: {err:#}");
    }
}

/// What `e2e <service>` does with its plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Print it.
    Plan,
    /// Run it once, teardown included.
    Run,
    /// Bring the environment up, then run again what each change to its inputs makes stale,
    /// until Ctrl-C tears it down.
    Watch,
}

/// Plans the run, with the durations past runs took; then prints the plan, or checks what it
/// needs and runs it, once or watching.
fn run_one(settings: Settings, mode: Mode) -> anyhow::Result<ExitCode> {
    let service = catalog().get(&settings.service).with_context(|| format!("unknown service {}", settings.service))?;
    let mut plan = envs::plan(service, &settings)?;
    let learned = history_path(&service.name, &history_key(&settings));
    let past = history(&learned);
    plan.expect_from(&past);
    if mode == Mode::Plan {
        print(&format!(
            "{} end-to-end environment, run {}\n{}",
            service.name,
            settings.run_id,
            describe(&settings, &plan)
        ));
        return Ok(ExitCode::SUCCESS);
    }
    collect_garbage();
    preflight::check(&plan, settings.engine, &settings.build, settings.cluster.backend(), &service.exposed())?;
    let backend = settings.cluster.backend();
    let leftovers = backend.leftovers(settings.engine, &settings.namespace, &settings.run_id);
    let registration = gc::Registration::new(&settings.run_id, &settings.run_dir, leftovers)?;
    let (code, torn_down) = runtime()?.block_on(async {
        match mode {
            Mode::Watch => watch::run(&settings, plan, (learned, past)).await,
            Mode::Plan | Mode::Run => run(&settings, plan, (learned, past)).await,
        }
    });
    if torn_down {
        registration.done();
    }
    code
}

/// What `--plan` prints after its first line: the backend, the builder, the tasks.
fn describe(settings: &Settings, plan: &Plan) -> String {
    let backend = settings.cluster.backend();
    let engine = settings.engine.program();
    let found = if which::which(engine).is_ok() { "" } else { " (not found on PATH)" };
    format!(
        "cluster: {}, namespace {}\nengine: {engine}{found}\n{}\nimage delivery: {}\nreport in {}\n\n{}",
        backend.describe(),
        settings.namespace,
        settings.build.describe(settings.engine, &settings.images.base),
        backend.describe_delivery(),
        settings.run_dir,
        plan.describe(settings.strategy, settings.jobs)
    )
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn print(text: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// Runs the plan (its teardown included), then reports; and says whether teardown did all it
/// had to.
async fn run(settings: &Settings, plan: Plan, history: (Utf8PathBuf, History)) -> (anyhow::Result<ExitCode>, bool) {
    match execute_and_report(settings, plan, history).await {
        Ok((code, torn_down)) => (code, torn_down),
        Err(err) => (Err(err), false),
    }
}

async fn execute_and_report(
    settings: &Settings,
    plan: Plan,
    (learned, past): (Utf8PathBuf, History),
) -> anyhow::Result<(anyhow::Result<ExitCode>, bool)> {
    let (target, schedule) = prepare(settings)?;
    let cancel = CancellationToken::new();
    on_ctrl_c(cancel.clone(), "interrupted: stopping running tasks, then tearing down");
    let logs = settings.run_dir.join("logs");
    let executor = Arc::new(RealExecutor::new(target));
    let (plan, record) = execute(plan, executor, schedule, &logs, progress::for_stderr().as_mut(), cancel).await?;
    // A run of some of the specs is compared with nothing, as it learns nothing.
    let whole = settings.spec_args.is_empty();
    let usual = past.usual_total().filter(|_| whole);
    learn(&learned, past, &plan, &record, whole);
    let (line, ran, specs) =
        specs_results(&settings.run_dir, &plan, &record).map_or((None, None, Vec::new()), |(l, r, s)| (Some(l), r, s));
    report(settings, &plan, &record, specs, usual)?;
    if let Some(kept) = settings.cluster.backend().kept(settings.engine, &settings.namespace) {
        eprintln!("  {kept}");
    }
    if let Some(line) = &line {
        eprintln!("  {line}");
    }
    eprintln!("  report: {} ({})", settings.run_dir.join("report.html"), settings.run_dir.join("report.md"));
    let torn_down = torn_down(&plan, &record);
    Ok((verdict(settings, &record, ran), torn_down))
}

/// What a run of `settings` works on and how it is scheduled, once its run directory (with
/// `images/`, where image builds put their context) exists.
fn prepare(settings: &Settings) -> anyhow::Result<(Target, Schedule)> {
    std::fs::create_dir_all(settings.run_dir.join("images"))
        .with_context(|| format!("cannot create {}", settings.run_dir))?;
    let target = Target {
        kubeconfig: settings.cluster.backend().kubeconfig().to_owned(),
        namespace: settings.namespace.clone(),
        run_id: settings.run_id.clone(),
    };
    Ok((target, Schedule::new(settings.strategy, settings.jobs)))
}

/// Writes the run's report into its directory and prints its summary, on GitHub Actions with
/// annotations and the job summary.
fn report(
    settings: &Settings,
    plan: &Plan,
    record: &RunRecord,
    specs: Vec<SpecResult>,
    usual: Option<(Duration, usize)>,
) -> anyhow::Result<()> {
    let service = &settings.service;
    let report = Report::new(service, format!("{service} end-to-end"), &settings.run_id, plan, record)
        .with_specs(specs)
        .with_usual(usual);
    report.write(&settings.run_dir)?;
    let console = Console::detect();
    eprint!("{}", report.terminal(console));
    if console == Console::GithubActions {
        tell_github(&[RunView::from_json(&report.json())?], &report.step_summary());
    }
    Ok(())
}

/// On GitHub Actions: an annotation for each failure of `runs`, and `summary` appended to the
/// job's summary (a failure to is only said).
fn tell_github(runs: &[RunView], summary: &str) {
    for line in runs.iter().flat_map(github::annotations) {
        eprintln!("{line}");
    }
    let Some(path) = std::env::var("GITHUB_STEP_SUMMARY").ok().filter(|p| !p.is_empty()) else { return };
    if let Err(err) = github::append_summary(Utf8Path::new(&path), summary) {
        eprintln!("warning: {err:#}");
    }
}

/// Whether every teardown task did its part (succeeded, or had nothing to do).
fn torn_down(plan: &Plan, record: &RunRecord) -> bool {
    let teardown = plan.tasks().iter().zip(&record.tasks).filter(|(task, _)| task.is_teardown());
    teardown.into_iter().all(|(_, r)| matches!(r.status, Status::Ok | Status::Cached | Status::Skipped))
}

/// The exit code of a run that has reported.
fn verdict(settings: &Settings, record: &RunRecord, specs_ran: Option<usize>) -> anyhow::Result<ExitCode> {
    let service = &settings.service;
    if record.interrupted {
        return Ok(ExitCode::from(130));
    }
    if let Some(summary) = record.failure_summary() {
        bail!("{service} end-to-end run failed: {summary}");
    }
    if settings.require_specs && specs_ran == Some(0) {
        bail!(
            "no {service} spec matched `{}`: list them with `cargo nextest list -p remedy-e2e --test {service}`",
            settings.spec_args.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `plan` with its task logs in `logs` until it ends or `cancel` stops it (teardown still
/// runs).
async fn execute<E: Executor>(
    plan: Plan,
    executor: Arc<E>,
    schedule: Schedule,
    logs: &Utf8Path,
    progress: &mut dyn progress::Progress,
    cancel: CancellationToken,
) -> anyhow::Result<(Arc<Plan>, RunRecord)> {
    std::fs::create_dir_all(logs).with_context(|| format!("cannot create {logs}"))?;
    let plan = Arc::new(plan);
    let record = phases::run(plan.clone(), executor, schedule, logs, progress, cancel).await;
    Ok((plan, record))
}

/// The first Ctrl-C says `what` and cancels `cancel`; the second exits at once.
fn on_ctrl_c(cancel: CancellationToken, what: &'static str) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("{what} (Ctrl-C again exits at once)");
            cancel.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
}

/// When the specs ran: a line with their counts, how many ran, and each spec; nextest's JUnit
/// report goes to the report directory as `junit.xml`.
fn specs_results(
    run_dir: &Utf8Path,
    plan: &Plan,
    record: &RunRecord,
) -> Option<(String, Option<usize>, Vec<SpecResult>)> {
    let specs = plan.tasks().iter().position(|t| t.id == ids::SPECS)?;
    record.tasks[specs].start?;
    if record.tasks[specs].status == Status::Cached {
        let line = "specs: skipped, unchanged since they last passed against this environment".to_owned();
        return Some((line, None, Vec::new()));
    }
    let junit = run_dir.join("junit.xml");
    Some(match junit::read(&envs::nextest_junit(run_dir), &junit) {
        Ok((c, specs)) => (
            format!("specs: {} passed, {} failed, {} ignored ({junit})", c.passed, c.failed, c.ignored),
            Some(c.total()),
            specs,
        ),
        Err(err) => (format!("specs: no results ({err:#})"), None, Vec::new()),
    })
}
