//! `cargo xtask e2e all`: every environment and its specs, each in its own namespace of one
//! shared cluster, `--parallel` at a time, then one table across services.
//!
//! It is a plan like any run's: on Kind the shared cluster (with every environment's port
//! mappings, which the port table keeps apart), then one task per environment, longest first,
//! each a child `cargo xtask e2e <service>` run with the settings resolved here (its own report
//! directory, log and teardown), then the shared cluster's teardown. A failed environment does
//! not stop the others; Ctrl-C interrupts each running child, which tears down its own.

use std::cmp::Reverse;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;
use camino::{Utf8Path, Utf8PathBuf};

use super::executor::{RealExecutor, Target};
use super::{execute, print, runtime};
use crate::backends::{Backend, CLUSTER, KindCluster};
use crate::builders::Engine;
use crate::catalog::{Exposed, Service, catalog};
use crate::envs::{self, Settings, run_id};
use crate::flags;
use crate::phases::github::Console;
use crate::phases::history::History;
use crate::phases::report::Report;
use crate::phases::view::RunView;
use crate::phases::{Command, Kind, Phase, Plan, Schedule, Status, Strategy, Task};

pub fn run(flags: &flags::E2e, cwd: &Utf8Path) -> anyhow::Result<ExitCode> {
    let run_id = run_id();
    let dir = match &flags.report_dir {
        Some(dir) => cwd.join(dir),
        None => crate::project_root().join(format!("target/e2e/all/{run_id}")),
    };
    let shared = Settings::shared_cluster(flags, &run_id, &dir)?;
    let runs: Vec<(&Service, Settings)> = catalog()
        .services()
        .iter()
        .map(|service| Ok((service, Settings::resolve_for_all(flags, service, cwd, &dir, shared.as_ref())?)))
        .collect::<anyhow::Result<_>>()?;
    let engine = runs.first().map_or(Engine::Docker, |(_, s)| s.engine);
    // Resolved now: a rebuild during the run would leave `/proc/self/exe` pointing at a
    // deleted file.
    let exe = Utf8PathBuf::try_from(std::env::current_exe()?)?;
    let key = shared.as_ref().map_or_else(
        || runs.first().map(|(_, s)| s.cluster.backend().history_key()).unwrap_or_default(),
        |k| k.history_key(),
    );
    let learned = super::history_path("all", &key);
    let past = super::history(&learned);
    let plan = plan(&runs, shared.as_ref(), engine, &dir, &exe, &past)?;
    let schedule = Schedule { strategy: Strategy::Dag, jobs: usize::from(flags.parallel), keep_going: true };
    if flags.plan {
        let cluster =
            shared.as_ref().map_or_else(|| "existing, a namespace per environment".to_owned(), |k| k.describe());
        print(&format!(
            "all environments, run {run_id}, {} at a time; report in {dir}\ncluster: {cluster}\n\n{}",
            flags.parallel,
            plan.describe(schedule.strategy, schedule.jobs)
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let exposed = catalog().exposed();
    let Some((_, first)) = runs.first() else { bail!("no service is declared") };
    let backend: &dyn Backend = match &shared {
        Some(kind) => kind,
        None => first.cluster.backend(),
    };
    // Before anything is made: a missing tool or a busy port leaves nothing behind.
    super::collect_garbage();
    super::preflight::check(&plan, engine, &first.build, backend, &exposed)?;
    let leftovers = shared.as_ref().map(|kind| kind.leftovers(engine, "", &run_id)).unwrap_or_default();
    let registration = super::gc::Registration::new(&run_id, &dir, leftovers)?;
    let target =
        Target { kubeconfig: backend.kubeconfig().to_owned(), namespace: String::new(), run_id: run_id.clone() };
    let (plan, record) = runtime()?.block_on(async {
        let cancel = tokio_util::sync::CancellationToken::new();
        super::on_ctrl_c(cancel.clone(), "interrupted: stopping running tasks, then tearing down");
        let executor = Arc::new(RealExecutor::new(target));
        execute(plan, executor, schedule, &dir.join("logs"), super::progress::for_stderr().as_mut(), cancel).await
    })?;
    if super::torn_down(&plan, &record) {
        registration.done();
    }
    let whole = flags.spec_args.is_empty();
    let usual = past.usual_total().filter(|_| whole);
    super::learn(&learned, past, &plan, &record, whole);
    let report = Report::new("all", "all environments", &run_id, &plan, &record).with_usual(usual);
    report.write(&dir)?;

    // One table (and merged JUnit) of the runs that wrote a report; the others are listed as
    // missing, then with the last error in their log.
    let reported: Vec<Utf8PathBuf> =
        runs.iter().map(|(_, s)| s.run_dir.clone()).filter(|d| d.join("report.json").is_file()).collect();
    let mut summary = crate::report_merge::summarize(&reported)?;
    summary.expect(&runs.iter().map(|(service, _)| *service).collect::<Vec<_>>());
    let console = Console::detect();
    eprint!("{}", report.terminal(console));
    eprint!("{}", summary.table());
    summary.write(&dir)?;
    eprintln!("  merged junit.xml, summary.md, summary.json and summary.html in {dir}");
    if console == Console::GithubActions {
        // Each run appended its own summary; their annotations went to their logs, so they are
        // made here, from their reports.
        let views = reported.iter().map(|d| RunView::read(d)).collect::<anyhow::Result<Vec<_>>>()?;
        super::tell_github(&views, &summary.markdown());
    }
    for (service, _) in runs.iter().filter(|(_, s)| !s.run_dir.join("report.json").is_file()) {
        let log = dir.join("logs").join(format!("{}.log", service.name));
        eprintln!("  {:<24} no report: {} (log {log})", service.name, last_error(&log));
    }
    if record.interrupted {
        return Ok(ExitCode::from(130));
    }
    let failed: Vec<&str> = plan
        .tasks()
        .iter()
        .zip(&record.tasks)
        .filter(|(task, r)| task.phase == Phase::Tests && r.status != Status::Ok)
        .map(|(task, _)| task.id.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("e2e all: {} failed; see each one's log and report above", failed.join(", "));
    }
    if let Some(summary) = record.failure_summary() {
        bail!("e2e all failed: {summary}");
    }
    if !flags.spec_args.is_empty() && summary.totals().total() == 0 {
        bail!(
            "e2e all: no spec of any suite matched `{}`: list a suite's with `cargo nextest list -p remedy-e2e --test <service>`",
            flags.spec_args.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The plan of `e2e all`: on Kind the shared cluster, then each run as a child `exe e2e
/// <service>` with its settings written beside it, longest first (by how long it took in past
/// `e2e all` runs, else by its own plan's expected critical path), then the shared cluster's
/// teardown.
fn plan(
    runs: &[(&Service, Settings)],
    shared: Option<&KindCluster>,
    engine: Engine,
    dir: &Utf8Path,
    exe: &Utf8Path,
    history: &History,
) -> anyhow::Result<Plan> {
    let mut tasks = Vec::new();
    if let Some(kind) = shared {
        let exposed: Vec<Exposed> = runs.iter().flat_map(|(service, _)| service.exposed()).collect();
        tasks.push(kind.cluster(&exposed, engine));
    }
    let mut ordered = Vec::new();
    for (service, settings) in runs {
        let expected = match history.expected(&service.name) {
            Some((took, runs)) => (took, Some(runs)),
            None => {
                let mut own = envs::plan(service, settings)?;
                own.expect_from(&super::history(&super::history_path(
                    &service.name,
                    &settings.cluster.backend().history_key(),
                )));
                (own.critical_path_estimate().1, None)
            }
        };
        ordered.push((expected, *service, settings));
    }
    // Longest first, so the last to start are the short ones; ties keep the declaration order.
    ordered.sort_by_key(|((estimate, _), _, _)| Reverse(*estimate));
    let after: &[&str] = if shared.is_some() { &[CLUSTER] } else { &[] };
    for ((estimate, from), service, settings) in ordered {
        let file = settings.run_dir.join("settings.json");
        let child = Command::new(exe.as_str(), ["e2e", &service.name, "--settings", file.as_str()]);
        let mut task = Task::new(&service.name, Phase::Tests, Kind::Build)
            .after(after)
            .write(&file, settings.to_json())
            .run(child.interrupt_on_cancel());
        task.estimate = estimate;
        task.estimate_from = from;
        tasks.push(task);
    }
    if let Some(kind) = shared {
        tasks.extend(kind.teardown(dir, engine));
    }
    Plan::new(tasks)
}

/// The child's `error: ...` line, or its last line.
fn last_error(log: &Utf8Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let line = text.lines().rev().find(|l| l.starts_with("error: ")).or_else(|| text.lines().last());
    line.unwrap_or("no output").trim_start_matches("error: ").to_owned()
}

#[cfg(test)]
mod tests;
