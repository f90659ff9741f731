//! `cargo xtask e2e <service> --watch`: the environment comes up once, its specs run, then
//! every change to what the plan is made from (`Plan::inputs()`) starts another pass that runs
//! again only the tasks the change makes stale (`Plan::stale_after`) and every task after
//! them; the others keep what they did. A change during a pass cancels it and starts the next
//! one; a failed pass leaves the environment up for the next change. Ctrl-C ends the session
//! with the plan's teardown.

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use camino::{Utf8Path, Utf8PathBuf};
use notify_debouncer_full::notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::executor::{RealExecutor, Target};
use super::{execute, learn, on_ctrl_c, specs_results};
use crate::envs::Settings;
use crate::phases::history::History;
use crate::phases::progress::{self, Ends, human};
use crate::phases::{Plan, RunRecord, Schedule, Status};

/// How long the inputs must be quiet before a burst of writes (an editor's save, a `git
/// checkout`) counts as one change.
const QUIET: Duration = Duration::from_millis(200);

/// Runs the session; says whether its teardown did all it had to.
pub async fn run(
    settings: &Settings,
    plan: Plan,
    (learned, past): (Utf8PathBuf, History),
) -> (anyhow::Result<ExitCode>, bool) {
    match session(settings, plan, learned, past).await {
        Ok((Ok(()), torn_down)) => (Ok(if torn_down { ExitCode::SUCCESS } else { ExitCode::FAILURE }), torn_down),
        Ok((Err(err), torn_down)) => (Err(err), torn_down),
        Err(err) => (Err(err), false),
    }
}

/// The session, then its teardown: whether the passes ended well (an error in one ends them),
/// and whether the teardown did all it had to.
async fn session(
    settings: &Settings,
    plan: Plan,
    learned: Utf8PathBuf,
    past: History,
) -> anyhow::Result<(anyhow::Result<()>, bool)> {
    let root = crate::project_root();
    let (tx, changes) = mpsc::unbounded_channel();
    let (_watcher, watched) = watch(&plan.inputs(), root, tx)?;
    let quit = CancellationToken::new();
    on_ctrl_c(quit.clone(), "watch: stopping, then tearing down");
    let (target, schedule) = super::prepare(settings)?;
    let mut env = Environment::new(&plan);
    let session = Session { settings, plan: &plan, target: &target, schedule, root, watched, quit };
    // Whatever ended the passes, what is up comes down.
    let passes = session.passes(&mut env, changes, (learned, past)).await;
    let down = plan.down(&env.up, &env.vars)?;
    let executor = Arc::new(RealExecutor::new(target));
    let logs = settings.run_dir.join("teardown/logs");
    let shown: HashSet<String> = down.tasks().iter().filter(|t| t.is_teardown()).map(|t| t.id.clone()).collect();
    let mut lines = Ends { out: Box::new(std::io::stderr()), tasks: shown };
    let (down, record) = execute(down, executor, schedule, &logs, &mut lines, CancellationToken::new()).await?;
    let torn_down = super::torn_down(&down, &record);
    for note in
        down.tasks().iter().zip(&record.tasks).filter(|(t, _)| t.is_teardown()).filter_map(|(_, r)| r.note.as_ref())
    {
        eprintln!("  {note}");
    }
    if let Some(kept) = settings.cluster.backend().kept(settings.engine, &settings.namespace) {
        eprintln!("  {kept}");
    }
    let passes = passes.map(|n| eprintln!("watch: {n} passes; logs in {}", settings.run_dir));
    Ok((passes, torn_down))
}

/// What a session's passes share.
struct Session<'a> {
    settings: &'a Settings,
    plan: &'a Plan,
    target: &'a Target,
    schedule: Schedule,
    root: &'a Utf8Path,
    /// How many inputs are watched.
    watched: usize,
    quit: CancellationToken,
}

impl Session<'_> {
    /// Runs a pass whenever something is not up, until Ctrl-C; how many ran.
    async fn passes(
        &self,
        env: &mut Environment,
        mut changes: mpsc::UnboundedReceiver<Vec<Utf8PathBuf>>,
        (learned, past): (Utf8PathBuf, History),
    ) -> anyhow::Result<usize> {
        let (settings, plan, root) = (self.settings, self.plan, self.root);
        let mut passes = 0;
        let mut history = Some((learned, past));
        while !self.quit.is_cancelled() {
            let Some(stale) = env.stale(plan) else {
                eprintln!(
                    "watch: waiting for a change to {} ({} inputs; Ctrl-C ends and tears down)",
                    settings.service, self.watched
                );
                tokio::select! {
                    Some(paths) = changes.recv() => {
                        eprintln!("watch: {} changed", shown(&paths, root));
                        env.changed(plan, &paths, root);
                    }
                    () = self.quit.cancelled() => {}
                }
                continue;
            };
            passes += 1;
            let pass = plan.again(&stale, &env.vars)?;
            if passes > 1 {
                eprintln!("watch: pass {passes} runs again {}", labels(plan, &stale));
            }
            let cancel = self.quit.child_token();
            let executor = Arc::new(RealExecutor::new(self.target.clone()));
            let logs =
                settings.run_dir.join(if passes == 1 { "logs".to_owned() } else { format!("passes/{passes}/logs") });
            let mut lines: Box<dyn progress::Progress> = if passes == 1 {
                progress::for_stderr()
            } else {
                Box::new(Ends { out: Box::new(std::io::stderr()), tasks: ids(plan, &stale) })
            };
            let running = execute(pass, executor.clone(), self.schedule, &logs, lines.as_mut(), cancel.clone());
            tokio::pin!(running);
            let mut during: Vec<Utf8PathBuf> = Vec::new();
            let (pass, record) = loop {
                tokio::select! {
                    ended = &mut running => break ended?,
                    Some(paths) = changes.recv() => {
                        if !cancel.is_cancelled() {
                            eprintln!("watch: {} changed: cancelling this pass", shown(&paths, root));
                            cancel.cancel();
                        }
                        during.extend(paths);
                    }
                }
            };
            env.passed(plan, &pass, &record, executor.vars());
            env.changed(plan, &during, root);
            let specs = specs_results(&settings.run_dir, &pass, &record);
            if let Some((learned, past)) = history.take().filter(|_| passes == 1) {
                // The first pass brings everything up, as a run does: its report, and what it
                // teaches.
                let whole = settings.spec_args.is_empty();
                let usual = past.usual_total().filter(|_| whole);
                learn(&learned, past, &pass, &record, whole);
                let specs = specs.as_ref().map(|(_, _, s)| s.clone()).unwrap_or_default();
                super::report(settings, &pass, &record, specs, usual)?;
            }
            let cancelled = !during.is_empty() || self.quit.is_cancelled();
            let line = specs.as_ref().map(|(line, _, _)| line.as_str());
            eprintln!("{}", verdict(passes, &pass, &record, line, cancelled));
        }
        Ok(passes)
    }
}

/// The ids of the tasks `marked` marks.
fn ids(plan: &Plan, marked: &[bool]) -> HashSet<String> {
    plan.tasks().iter().zip(marked).filter(|(_, m)| **m).map(|(t, _)| t.id.clone()).collect()
}

/// The labels of the tasks `marked` marks, for a line.
fn labels(plan: &Plan, marked: &[bool]) -> String {
    let labels: Vec<String> = plan.tasks().iter().zip(marked).filter(|(_, m)| **m).map(|(t, _)| t.label()).collect();
    labels.join(", ")
}

/// What a session knows of its environment: which tasks' work is up and current, and the run
/// variables they set.
struct Environment {
    up: Vec<bool>,
    vars: HashMap<String, String>,
}

impl Environment {
    fn new(plan: &Plan) -> Environment {
        Environment { up: vec![false; plan.len()], vars: HashMap::new() }
    }

    /// The tasks before teardown that must run again, if any.
    fn stale(&self, plan: &Plan) -> Option<Vec<bool>> {
        let stale: Vec<bool> = plan.tasks().iter().zip(&self.up).map(|(t, up)| !t.is_teardown() && !up).collect();
        stale.contains(&true).then_some(stale)
    }

    /// What `changed` makes stale is no longer up.
    fn changed(&mut self, plan: &Plan, changed: &[Utf8PathBuf], root: &Utf8Path) {
        let changed: Vec<Utf8PathBuf> = changed.iter().filter(|p| !scratch(p)).cloned().collect();
        for (up, stale) in self.up.iter_mut().zip(plan.stale_after(&changed, root)) {
            *up &= !stale;
        }
    }

    /// After `pass` (made from `plan` by `Plan::again`) ran as `record` says: what succeeded is
    /// up, what did not is not, and the variables it set are known.
    fn passed(&mut self, plan: &Plan, pass: &Plan, record: &RunRecord, vars: HashMap<String, String>) {
        let succeeded: HashMap<&str, bool> = pass
            .tasks()
            .iter()
            .zip(&record.tasks)
            .map(|(t, r)| (t.id.as_str(), matches!(r.status, Status::Ok | Status::Cached)))
            .collect();
        for (up, task) in self.up.iter_mut().zip(plan.tasks()) {
            if let Some(&ok) = succeeded.get(task.id.as_str()) {
                *up = ok;
            }
        }
        self.vars.extend(vars);
    }
}

/// A pass's one-line verdict.
fn verdict(n: usize, pass: &Plan, record: &RunRecord, specs: Option<&str>, cancelled: bool) -> String {
    let took = human(record.up);
    if cancelled {
        return format!("watch: pass {n} cancelled after {took}");
    }
    let failed = pass.tasks().iter().zip(&record.tasks).find(|(_, r)| r.status == Status::Failed);
    match failed {
        None => format!("watch: pass {n} ok in {took}{}", specs.map(|s| format!("; {s}")).unwrap_or_default()),
        Some((task, r)) => format!(
            "watch: pass {n} FAILED in {took}: {} failed{}{}; the environment stays up for the next change",
            task.label(),
            r.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default(),
            specs.map(|s| format!("; {s}")).unwrap_or_default(),
        ),
    }
}

/// Whether a changed path is an editor's scratch file rather than a source: hidden files,
/// backups (`x~`), swap files, and the file vim writes to probe a directory (`4913`).
fn scratch(path: &Utf8Path) -> bool {
    let name = path.file_name().unwrap_or_default();
    name.starts_with('.')
        || name.ends_with('~')
        || [".swp", ".swx", ".tmp"].iter().any(|ext| name.ends_with(ext))
        || name == "4913"
}

/// The changed paths, relative to `root` where they are under it, for a line.
fn shown(paths: &[Utf8PathBuf], root: &Utf8Path) -> String {
    let names: Vec<&str> = paths.iter().map(|p| p.strip_prefix(root).unwrap_or(p).as_str()).collect();
    match &names[..] {
        [one] => (*one).to_owned(),
        [first, rest @ ..] => format!("{first} and {} more", rest.len()),
        [] => "nothing".to_owned(),
    }
}

/// Watches `inputs` (relative to `root`, or absolute): a directory with all it holds, a file
/// through its directory (editors replace files rather than write them); each burst of changes
/// under them goes to `tx`, for as long as the watcher returned lives; and how many inputs.
fn watch(
    inputs: &[Utf8PathBuf],
    root: &Utf8Path,
    tx: mpsc::UnboundedSender<Vec<Utf8PathBuf>>,
) -> anyhow::Result<(Debouncer<RecommendedWatcher, RecommendedCache>, usize)> {
    let inputs: Vec<Utf8PathBuf> = inputs.iter().map(|p| root.join(p)).collect();
    let wanted = inputs.clone();
    let handler = move |events: DebounceEventResult| {
        let Ok(events) = events else { return };
        let mut paths: Vec<Utf8PathBuf> = events
            .into_iter()
            // Reads (cargo's, the run's own) are no change.
            .filter(|e| !matches!(e.event.kind, EventKind::Access(_)))
            .flat_map(|e| e.event.paths)
            .filter_map(|p| Utf8PathBuf::from_path_buf(p).ok())
            .filter(|p| wanted.iter().any(|input| p.starts_with(input)) && !scratch(p))
            .collect();
        paths.sort();
        paths.dedup();
        if !paths.is_empty() {
            let _ = tx.send(paths);
        }
    };
    let mut debouncer = new_debouncer(QUIET, None, handler).context("cannot start watching files")?;
    let mut dirs: Vec<(&Utf8Path, RecursiveMode)> = Vec::new();
    for input in &inputs {
        if input.is_dir() {
            dirs.push((input, RecursiveMode::Recursive));
        } else if let Some(parent) = input.parent().filter(|p| p.is_dir()) {
            dirs.push((parent, RecursiveMode::NonRecursive));
        }
    }
    dirs.sort_by(|a, b| a.0.cmp(b.0));
    dirs.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    for (dir, mode) in dirs {
        debouncer.watch(dir.as_std_path(), mode).with_context(|| format!("cannot watch {dir}"))?;
    }
    Ok((debouncer, inputs.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::{Command, Kind, Phase, Task, TaskRecord};

    fn plan() -> Plan {
        Plan::new(vec![
            Task::new("bin", Phase::Images, Kind::Build).inputs(["services/x"]).set("BIN", "1"),
            Task::new("deploy", Phase::Services, Kind::Api)
                .after(&["bin"])
                .inputs(["/m/x.yaml"])
                .run(Command::new("apply", ["${BIN}"])),
            Task::new("specs", Phase::Tests, Kind::Process).after(&["deploy"]),
            Task::teardown("delete", Kind::Process, crate::phases::When::Always),
        ])
        .unwrap()
    }

    fn record(statuses: &[Status]) -> RunRecord {
        RunRecord {
            strategy: crate::phases::Strategy::Dag,
            jobs: 1,
            started_at: jiff::Timestamp::UNIX_EPOCH,
            up: Duration::from_millis(2500),
            makespan: Duration::from_millis(2500),
            interrupted: false,
            tasks: statuses.iter().map(|&status| TaskRecord { status, ..TaskRecord::default() }).collect(),
        }
    }

    #[test]
    fn a_session_reruns_what_failed_or_changed_and_nothing_else() {
        let plan = plan();
        let root = Utf8Path::new("/ws");
        let mut env = Environment::new(&plan);
        assert_eq!(env.stale(&plan), Some(vec![true, true, true, false]), "everything comes up first");
        let first = plan.again(&env.stale(&plan).unwrap(), &env.vars).unwrap();
        env.passed(
            &plan,
            &first,
            &record(&[Status::Ok, Status::Failed, Status::NotStarted]),
            [("BIN".into(), "1".into())].into(),
        );
        // The deployment failed: the next pass starts from it, the binary is kept.
        assert_eq!(env.stale(&plan), Some(vec![false, true, true, false]));
        let second = plan.again(&env.stale(&plan).unwrap(), &env.vars).unwrap();
        assert_eq!(second.tasks()[0].steps, [crate::phases::Step::Set { var: "BIN".into(), value: "1".into() }]);
        env.passed(&plan, &second, &record(&[Status::Ok, Status::Ok, Status::Ok]), HashMap::new());
        assert_eq!(env.stale(&plan), None, "all up: wait for a change");
        // Scratch files change nothing; a manifest, its task and what follows.
        env.changed(&plan, &["/m/.x.yaml.swp".into(), "/ws/services/x/src/4913".into()], root);
        assert_eq!(env.stale(&plan), None);
        env.changed(&plan, &["/m/x.yaml".into()], root);
        assert_eq!(env.stale(&plan), Some(vec![false, true, true, false]));
    }

    #[test]
    fn the_verdict_names_the_failure_and_says_the_environment_stays() {
        let plan = plan();
        let pass = plan.again(&[true, true, true, false], &HashMap::new()).unwrap();
        let ok = verdict(
            2,
            &pass,
            &record(&[Status::Cached, Status::Ok, Status::Ok]),
            Some("specs: 7 passed, 0 failed, 0 ignored"),
            false,
        );
        assert_eq!(ok, "watch: pass 2 ok in 2.5s; specs: 7 passed, 0 failed, 0 ignored");
        let mut failed = record(&[Status::Failed, Status::NotStarted, Status::NotStarted]);
        failed.tasks[0].error = Some("cargo build exited with 101".into());
        assert_eq!(
            verdict(3, &pass, &failed, None, false),
            "watch: pass 3 FAILED in 2.5s: images/bin failed (cargo build exited with 101); the environment stays up for the next change"
        );
        assert_eq!(verdict(4, &pass, &failed, None, true), "watch: pass 4 cancelled after 2.5s");
    }

    #[test]
    fn editor_scratch_files_are_not_sources() {
        for name in ["/ws/a/.main.rs.swp", "/ws/a/main.rs~", "/ws/a/4913", "/ws/a/x.tmp", "/ws/a/.#main.rs"] {
            assert!(scratch(Utf8Path::new(name)), "{name}");
        }
        for name in ["/ws/a/main.rs", "/ws/a/Dockerfile", "/m/gateway.yaml"] {
            assert!(!scratch(Utf8Path::new(name)), "{name}");
        }
        let root = Utf8Path::new("/ws");
        assert_eq!(shown(&["/ws/a/main.rs".into()], root), "a/main.rs");
        assert_eq!(shown(&["/m/x.yaml".into(), "/ws/b".into(), "/ws/c".into()], root), "/m/x.yaml and 2 more");
    }
}
