//! Scheduler tests: every claim is measured from the timestamps the run recorded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::phases::plan::{Command, Phase, Task, When};
use crate::phases::process::run_command;
use crate::phases::progress::Quiet;

/// What a test task does.
#[derive(Clone)]
enum Act {
    /// Sleep in-process, waking up for cancellation.
    Sleep(u64),
    /// Run a real child process through the production runner.
    Spawn(Command),
    /// Sleep, then fail.
    Fail(u64),
    Cached,
}

#[derive(Default)]
struct TestExecutor {
    acts: HashMap<String, Act>,
    running_builds: AtomicUsize,
    max_builds: AtomicUsize,
}

impl TestExecutor {
    fn new(acts: &[(&str, Act)]) -> TestExecutor {
        TestExecutor {
            acts: acts.iter().map(|(id, act)| (id.to_string(), act.clone())).collect(),
            ..Default::default()
        }
    }

    fn act(&self, task: &Task, cx: &TaskCx) -> anyhow::Result<Outcome> {
        let sleep = |ms: u64| -> anyhow::Result<()> {
            let until = Instant::now() + Duration::from_millis(ms);
            while Instant::now() < until {
                if cx.cancel.is_cancelled() {
                    return Err(Cancelled.into());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        };
        match &self.acts[&task.id] {
            Act::Sleep(ms) => sleep(*ms).map(|()| Outcome::Done),
            Act::Spawn(cmd) => run_command(cmd, &cx.log, &cx.cancel).map(|()| Outcome::Done),
            Act::Fail(ms) => {
                sleep(*ms)?;
                anyhow::bail!("{} broke on purpose", task.id)
            }
            Act::Cached => Ok(Outcome::Cached),
        }
    }
}

impl Executor for TestExecutor {
    fn run_blocking(&self, task: &Task, cx: &TaskCx) -> anyhow::Result<Outcome> {
        if task.kind != Kind::Build {
            return self.act(task, cx);
        }
        let now = self.running_builds.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_builds.fetch_max(now, Ordering::SeqCst);
        let result = self.act(task, cx);
        self.running_builds.fetch_sub(1, Ordering::SeqCst);
        result
    }

    async fn run_async(&self, task: &Task, cx: &TaskCx) -> anyhow::Result<Outcome> {
        match self.acts[&task.id].clone() {
            Act::Sleep(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(Outcome::Done)
            }
            Act::Fail(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                anyhow::bail!("{} broke on purpose", task.id)
            }
            Act::Cached => Ok(Outcome::Cached),
            Act::Spawn(_) => unreachable!("api tasks spawn nothing: {}", cx.log),
        }
    }
}

fn task(id: &str, kind: Kind, stage: u8, deps: &[&str]) -> Task {
    Task::new(id, Phase::Infra, kind).stage(stage).after(deps)
}

struct Outcome2 {
    plan: Arc<Plan>,
    run: RunRecord,
    max_builds: usize,
    _logs: tempdir::TempDir,
}

impl Outcome2 {
    fn rec(&self, id: &str) -> &TaskRecord {
        &self.run.tasks[self.plan.index_of(id).unwrap()]
    }

    fn span(&self, id: &str) -> (Duration, Duration) {
        let r = self.rec(id);
        (r.start.unwrap_or_else(|| panic!("{id} never started")), r.end.unwrap())
    }

    fn overlap(&self, a: &str, b: &str) -> bool {
        let ((sa, ea), (sb, eb)) = (self.span(a), self.span(b));
        sa < eb && sb < ea
    }
}

async fn run_plan(tasks: Vec<Task>, acts: &[(&str, Act)], strategy: Strategy, jobs: usize) -> Outcome2 {
    run_plan_with(tasks, acts, strategy, jobs, CancellationToken::new()).await
}

async fn run_plan_with(
    tasks: Vec<Task>,
    acts: &[(&str, Act)],
    strategy: Strategy,
    jobs: usize,
    cancel: CancellationToken,
) -> Outcome2 {
    let plan = Arc::new(Plan::new(tasks).unwrap());
    let exec = Arc::new(TestExecutor::new(acts));
    let logs = tempdir::TempDir::new();
    let schedule = Schedule::new(strategy, jobs);
    let run = super::run(plan.clone(), exec.clone(), schedule, logs.path(), &mut Quiet, cancel).await;
    Outcome2 { plan, run, max_builds: exec.max_builds.load(Ordering::SeqCst), _logs: logs }
}

/// A small scratch directory, removed on drop.
mod tempdir {
    use camino::{Utf8Path, Utf8PathBuf};

    pub struct TempDir(Utf8PathBuf);

    impl TempDir {
        pub fn new() -> TempDir {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let dir = Utf8PathBuf::from(std::env::temp_dir().to_str().unwrap())
                .join(format!("xtask-sched-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        pub fn path(&self) -> &Utf8Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A small graph with builds, processes and API work: two roots, a join, a tail.
fn diamond() -> (Vec<Task>, Vec<(&'static str, Act)>) {
    let tasks = vec![
        task("cluster", Kind::Process, 1, &[]),
        task("build-a", Kind::Build, 2, &[]),
        task("build-b", Kind::Build, 2, &[]),
        task("ns", Kind::Api, 1, &["cluster"]),
        task("db", Kind::Api, 2, &["ns"]),
        task("app", Kind::Api, 3, &["db", "build-a", "build-b"]),
        task("specs", Kind::Process, 4, &["app"]),
    ];
    let acts = vec![
        ("cluster", Act::Sleep(150)),
        ("build-a", Act::Sleep(200)),
        ("build-b", Act::Sleep(200)),
        ("ns", Act::Sleep(30)),
        ("db", Act::Sleep(60)),
        ("app", Act::Sleep(40)),
        ("specs", Act::Sleep(30)),
    ];
    (tasks, acts)
}

fn assert_dependencies_honoured(out: &Outcome2) {
    for (i, task) in out.plan.tasks().iter().enumerate() {
        let start = out.run.tasks[i].start.unwrap();
        for &d in out.plan.deps(i) {
            let dep_end = out.run.tasks[d].end.unwrap();
            assert!(
                dep_end <= start,
                "{} started at {start:?} before {} ended at {dep_end:?}",
                task.id,
                out.plan.tasks()[d].id
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dag_honours_dependencies_and_overlaps_independent_work() {
    let (tasks, acts) = diamond();
    let out = run_plan(tasks, &acts, Strategy::Dag, 2).await;
    assert!(out.run.succeeded(), "{:?}", out.run.failure_summary());
    assert_dependencies_honoured(&out);
    // The builds run beside cluster creation and beside each other.
    assert!(out.overlap("build-a", "cluster"));
    assert!(out.overlap("build-a", "build-b"));
    assert!(out.overlap("db", "build-a"), "db does not wait for the builds");
    // The run is as short as its critical path (builds 200 + app 40 + specs 30), not the sum.
    let sum: Duration = out.run.tasks.iter().filter_map(|t| t.elapsed()).sum();
    assert!(out.run.makespan < Duration::from_millis(400), "makespan {:?}", out.run.makespan);
    assert!(sum > Duration::from_millis(700));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_starts_the_moment_its_last_dependency_ends() {
    let (tasks, acts) = diamond();
    let out = run_plan(tasks, &acts, Strategy::Dag, 2).await;
    let app_start = out.span("app").0;
    let last_dep_end = ["db", "build-a", "build-b"].iter().map(|d| out.span(d).1).max().unwrap();
    assert!(app_start - last_dep_end < Duration::from_millis(25), "waited {:?}", app_start - last_dep_end);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_bounds_concurrent_builds() {
    let tasks: Vec<Task> = (0..4).map(|i| task(&format!("b{i}"), Kind::Build, 1, &[])).collect();
    let acts: Vec<(String, Act)> = (0..4).map(|i| (format!("b{i}"), Act::Sleep(80))).collect();
    let acts: Vec<(&str, Act)> = acts.iter().map(|(id, a)| (id.as_str(), a.clone())).collect();

    let one = run_plan(tasks.clone(), &acts, Strategy::Dag, 1).await;
    assert_eq!(one.max_builds, 1);
    for i in 0..4 {
        for j in i + 1..4 {
            assert!(!one.overlap(&format!("b{i}"), &format!("b{j}")));
        }
    }
    let two = run_plan(tasks, &acts, Strategy::Dag, 2).await;
    assert_eq!(two.max_builds, 2);
    assert!(two.run.makespan < one.run.makespan);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phased_waits_at_each_barrier() {
    let (tasks, acts) = diamond();
    let out = run_plan(tasks, &acts, Strategy::Phased, 2).await;
    assert!(out.run.succeeded());
    assert_dependencies_honoured(&out);
    for (i, a) in out.plan.tasks().iter().enumerate() {
        for (j, b) in out.plan.tasks().iter().enumerate() {
            if a.stage < b.stage {
                assert!(
                    out.run.tasks[i].end.unwrap() <= out.run.tasks[j].start.unwrap(),
                    "{} (stage {}) overlaps {} (stage {})",
                    a.id,
                    a.stage,
                    b.id,
                    b.stage
                );
            }
        }
    }
    // Inside a stage, independent work still overlaps.
    assert!(out.overlap("build-a", "build-b"));
    assert!(out.overlap("db", "build-a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_runs_one_task_at_a_time_in_topological_order() {
    let (tasks, acts) = diamond();
    let out = run_plan(tasks, &acts, Strategy::Sequential, 2).await;
    assert!(out.run.succeeded());
    let mut by_start: Vec<usize> = (0..out.plan.len()).collect();
    by_start.sort_by_key(|&i| out.run.tasks[i].start);
    assert_eq!(by_start, out.plan.topological());
    for pair in by_start.windows(2) {
        assert!(out.run.tasks[pair[0]].end.unwrap() <= out.run.tasks[pair[1]].start.unwrap());
    }
    assert!(out.run.makespan >= out.run.tasks.iter().filter_map(|t| t.elapsed()).sum::<Duration>());
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The third field is the state; a zombie is dead and only waits to be reaped.
        Ok(stat) => stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_cancels_siblings_and_kills_their_process_groups() {
    let dir = tempdir::TempDir::new();
    let pidfile = dir.path().join("grandchild.pid");
    // The child starts a grandchild in its process group, then waits for it.
    let script = format!("sleep 30 & echo $! > {pidfile}; wait");
    let tasks = vec![
        task("doomed", Kind::Process, 1, &[]),
        task("long-build", Kind::Build, 1, &[]),
        task("long-api", Kind::Api, 1, &[]),
        task("after", Kind::Api, 1, &["long-build"]),
    ];
    // It fails once the grandchild is there, so no delay decides the order.
    let fail_when_started = format!("while [ ! -s {pidfile} ]; do sleep 0.01; done; exit 1");
    let acts = [
        ("doomed", Act::Spawn(Command::new("sh", ["-c", &fail_when_started]))),
        ("long-build", Act::Spawn(Command::new("sh", ["-c", &script]))),
        ("long-api", Act::Sleep(30_000)),
        ("after", Act::Sleep(10)),
    ];
    let started = Instant::now();
    let out = run_plan(tasks, &acts, Strategy::Dag, 2).await;
    assert!(started.elapsed() < Duration::from_secs(5), "the run did not wait for the 30 s tasks");

    assert_eq!(out.rec("doomed").status, Status::Failed);
    assert!(
        out.rec("doomed").error.as_deref().is_some_and(|e| e.ends_with("exit status: 1")),
        "{:?}",
        out.rec("doomed")
    );
    assert_eq!(out.rec("long-build").status, Status::Cancelled);
    assert_eq!(out.rec("long-api").status, Status::Cancelled);
    assert_eq!(out.rec("after").status, Status::NotStarted);
    assert_eq!(out.run.failure_summary().unwrap(), "failed 1 of 4, cancelled 2, not started 1");

    let failed_at = out.span("doomed").1;
    for id in ["long-build", "long-api"] {
        let stopped = out.span(id).1.saturating_sub(failed_at);
        assert!(stopped < Duration::from_millis(200), "{id} took {stopped:?} to stop");
    }
    let grandchild: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    // SIGKILL is sent; on a loaded machine the process may take a moment to be scheduled and die.
    let killed_by = Instant::now() + Duration::from_millis(200);
    while alive(grandchild) && Instant::now() < killed_by {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!alive(grandchild), "grandchild {grandchild} survived the cancellation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_builds_are_not_started_after_a_failure() {
    let tasks = vec![task("fail", Kind::Build, 1, &[]), task("queued", Kind::Build, 1, &[])];
    let out = run_plan(tasks, &[("fail", Act::Fail(20)), ("queued", Act::Sleep(10))], Strategy::Dag, 1).await;
    assert_eq!(out.rec("fail").status, Status::Failed);
    assert_eq!(out.rec("queued").status, Status::NotStarted);
    assert!(out.rec("queued").start.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_command_reports_its_exit_and_log_tail() {
    let tasks = vec![task("noisy", Kind::Process, 1, &[])];
    let cmd = Command::new("sh", ["-c", "echo first; echo 'last words' >&2; exit 3"]);
    let out = run_plan(tasks, &[("noisy", Act::Spawn(cmd))], Strategy::Dag, 1).await;
    let rec = out.rec("noisy");
    assert_eq!(rec.status, Status::Failed);
    let error = rec.error.as_deref().unwrap();
    assert!(error.contains("exit status: 3") && error.contains("sh -c"), "{error}");
    assert_eq!(rec.log_tail.last().map(String::as_str), Some("last words"));
    assert!(rec.log_tail[0].starts_with("$ sh -c"), "{:?}", rec.log_tail);
}

/// A token cancelled from outside the run, as Ctrl-C would, after `delay`.
fn cancelled_after(delay: Duration) -> CancellationToken {
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        trigger.cancel();
    });
    cancel
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_from_outside_interrupts_the_run() {
    let tasks = vec![task("slow", Kind::Process, 1, &[]), task("next", Kind::Api, 1, &["slow"])];
    let cancel = cancelled_after(Duration::from_millis(100));
    let acts = [("slow", Act::Spawn(Command::new("sleep", ["30"]))), ("next", Act::Sleep(1))];
    let out = run_plan_with(tasks, &acts, Strategy::Dag, 1, cancel).await;
    assert!(out.run.interrupted);
    assert_eq!(out.rec("slow").status, Status::Cancelled);
    assert_eq!(out.rec("next").status, Status::NotStarted);
    assert!(out.run.makespan < Duration::from_secs(1));
    assert_eq!(out.run.failure_summary().unwrap(), "interrupted: failed 0 of 2, cancelled 1, not started 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_tasks_release_their_dependents() {
    let tasks = vec![task("image", Kind::Build, 1, &[]), task("deploy", Kind::Api, 1, &["image"])];
    let out = run_plan(tasks, &[("image", Act::Cached), ("deploy", Act::Sleep(5))], Strategy::Dag, 1).await;
    assert_eq!(out.rec("image").status, Status::Cached);
    assert_eq!(out.rec("deploy").status, Status::Ok);
    assert!(out.run.succeeded());
}

#[test]
fn progress_lines_are_timestamped() {
    use crate::phases::progress::{Plain, Progress};
    let buf = std::sync::Arc::new(Mutex::new(Vec::new()));
    struct Shared(std::sync::Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut plain = Plain::new(Box::new(Shared(buf.clone())));
    let mut t = Task::new("build-gateway", Phase::Images, Kind::Build);
    plain.started(&t);
    let rec = TaskRecord {
        status: Status::Ok,
        start: Some(Duration::ZERO),
        end: Some(Duration::from_millis(6400)),
        ..TaskRecord::default()
    };
    plain.finished(&t, &rec);
    // With what past runs expect, and the time left.
    t.estimate = Duration::from_millis(5100);
    t.estimate_from = Some(4);
    plain.left(Duration::from_secs(42));
    plain.finished(&t, &rec);
    let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    let (clock, rest) = lines[0].split_at(12);
    assert!(clock.chars().filter(|c| *c == ':').count() == 2 && clock.contains('.'), "{clock}");
    assert_eq!(rest, " start     images/build-gateway");
    assert!(lines[1].ends_with("ok        images/build-gateway 6.4s"), "{}", lines[1]);
    assert!(lines[2].ends_with("ok        images/build-gateway 6.4s (usually 5.1s); about 42.0s left"), "{}", lines[2]);
}

fn teardown(id: &str, when: When, deps: &[&str]) -> Task {
    Task::teardown(id, Kind::Api, when).after(deps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_runs_after_a_failure_whatever_its_condition_says() {
    let tasks = vec![
        task("doomed", Kind::Api, 1, &[]),
        task("long", Kind::Api, 1, &[]),
        teardown("diagnostics", When::Failed, &[]),
        teardown("delete", When::Always, &["diagnostics"]).done("deleted it"),
        teardown("prune", When::Succeeded, &[]),
    ];
    let acts = [
        ("doomed", Act::Fail(20)),
        ("long", Act::Sleep(5_000)),
        ("diagnostics", Act::Sleep(30)),
        ("delete", Act::Sleep(10)),
        ("prune", Act::Sleep(10)),
    ];
    let out = run_plan(tasks, &acts, Strategy::Dag, 2).await;
    assert_eq!(out.rec("long").status, Status::Cancelled);
    assert_eq!(out.rec("diagnostics").status, Status::Ok, "teardown is not cancelled by the failure");
    assert_eq!(out.rec("delete").status, Status::Ok);
    assert_eq!(out.rec("prune").status, Status::Skipped);
    assert!(out.rec("prune").start.is_none());
    assert_eq!(out.rec("delete").note.as_deref(), Some("deleted it"));
    let up_end = out.span("doomed").1.max(out.span("long").1);
    assert!(out.span("diagnostics").0 >= up_end, "teardown started before the rest ended");
    assert!(out.span("delete").0 >= out.span("diagnostics").1, "teardown's own order");
    assert!(out.run.up <= out.span("diagnostics").0 && out.run.makespan >= out.span("delete").1);
    assert_eq!(out.run.failure_summary().unwrap(), "failed 1 of 5, cancelled 1, not started 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_success_teardown_skips_diagnostics_and_prunes() {
    let tasks = vec![
        task("ok", Kind::Api, 1, &[]),
        teardown("diagnostics", When::Failed, &[]),
        teardown("delete", When::Always, &["diagnostics"]),
        teardown("prune", When::Succeeded, &[]),
    ];
    let acts =
        [("ok", Act::Sleep(5)), ("diagnostics", Act::Sleep(5)), ("delete", Act::Sleep(5)), ("prune", Act::Sleep(5))];
    let out = run_plan(tasks, &acts, Strategy::Sequential, 1).await;
    let statuses: Vec<Status> = out.run.tasks.iter().map(|t| t.status).collect();
    assert_eq!(statuses, [Status::Ok, Status::Skipped, Status::Ok, Status::Ok]);
    assert!(out.run.succeeded(), "a skipped teardown task is no failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_stops_the_run_but_not_its_teardown() {
    let tasks = vec![task("slow", Kind::Process, 1, &[]), teardown("delete", When::Always, &[])];
    let cancel = cancelled_after(Duration::from_millis(100));
    let acts = [("slow", Act::Spawn(Command::new("sleep", ["30"]))), ("delete", Act::Sleep(200))];
    let out = run_plan_with(tasks, &acts, Strategy::Dag, 1, cancel).await;
    assert!(out.run.interrupted);
    assert_eq!(out.rec("slow").status, Status::Cancelled);
    assert_eq!(out.rec("delete").status, Status::Ok, "the cancelled token never reaches teardown");
    assert!(out.span("delete").1 - out.span("delete").0 >= Duration::from_millis(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_teardown_task_does_not_stop_the_next() {
    let tasks = vec![
        task("ok", Kind::Api, 1, &[]),
        teardown("logs", When::Always, &[]),
        teardown("delete", When::Always, &["logs"]),
    ];
    let acts = [("ok", Act::Sleep(5)), ("logs", Act::Fail(5)), ("delete", Act::Sleep(5))];
    let out = run_plan(tasks, &acts, Strategy::Dag, 1).await;
    assert_eq!(out.rec("logs").status, Status::Failed);
    assert_eq!(out.rec("delete").status, Status::Ok);
    assert!(!out.run.succeeded(), "a failed teardown fails the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_going_stops_only_what_waits_for_the_failure() {
    let tasks = vec![
        task("doomed", Kind::Build, 1, &[]),
        task("other", Kind::Build, 1, &[]),
        task("after", Kind::Api, 1, &["doomed"]),
    ];
    let acts = [("doomed", Act::Fail(10)), ("other", Act::Sleep(150)), ("after", Act::Sleep(1))];
    let plan = Arc::new(Plan::new(tasks).unwrap());
    let logs = tempdir::TempDir::new();
    let schedule = Schedule { strategy: Strategy::Dag, jobs: 2, keep_going: true };
    let exec = Arc::new(TestExecutor::new(&acts));
    let run = super::run(plan.clone(), exec, schedule, logs.path(), &mut Quiet, CancellationToken::new()).await;
    let status = |id: &str| run.tasks[plan.index_of(id).unwrap()].status;
    assert_eq!((status("doomed"), status("other"), status("after")), (Status::Failed, Status::Ok, Status::NotStarted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_to_interrupt_gets_sigint_and_finishes_its_cleanup() {
    let dir = tempdir::TempDir::new();
    let (cleaned, ready) = (dir.path().join("cleaned"), dir.path().join("ready"));
    // Cleans up on SIGINT, after a moment: a child run tearing down its environment. It says
    // when its trap is set, and only then does the other task fail and the run cancel it, so no
    // delay decides the order.
    let script =
        format!("trap 'sleep 0.2; echo done > {cleaned}; exit 0' INT; touch {ready}; sleep 30 & wait; sleep 30");
    let fail_when_ready = format!("while [ ! -e {ready} ]; do sleep 0.01; done; exit 1");
    let tasks = vec![task("child", Kind::Build, 1, &[]), task("doomed", Kind::Process, 1, &[])];
    let acts = [
        ("child", Act::Spawn(Command::new("sh", ["-c", &script]).interrupt_on_cancel())),
        ("doomed", Act::Spawn(Command::new("sh", ["-c", &fail_when_ready]))),
    ];
    let out = run_plan(tasks, &acts, Strategy::Dag, 1).await;
    assert_eq!(out.rec("child").status, Status::Cancelled);
    assert_eq!(
        std::fs::read_to_string(&cleaned).unwrap_or_default(),
        "done\n",
        "the child was killed before its cleanup"
    );
    assert!(out.span("child").1 < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_build_slot_the_build_on_the_longer_path_starts_first() {
    // Declared first, `short` would start first in plan order; `long` leads to 300 ms more.
    let mut tasks = vec![
        task("short", Kind::Build, 1, &[]),
        task("long", Kind::Build, 1, &[]),
        task("after", Kind::Api, 1, &["long"]),
    ];
    for (task, ms) in tasks.iter_mut().zip([100, 100, 300]) {
        task.estimate = Duration::from_millis(ms);
    }
    let acts = [("short", Act::Sleep(100)), ("long", Act::Sleep(100)), ("after", Act::Sleep(300))];
    let out = run_plan(tasks, &acts, Strategy::Dag, 1).await;
    assert!(out.span("long").0 < out.span("short").0, "the longer path waited");
    assert!(
        out.run.makespan < Duration::from_millis(480),
        "{:?}: the tail did not overlap the other build",
        out.run.makespan
    );
    // Ties go to plan order.
    let tie = vec![task("first", Kind::Build, 1, &[]), task("second", Kind::Build, 1, &[])];
    let out = run_plan(tie, &[("first", Act::Sleep(20)), ("second", Act::Sleep(20))], Strategy::Dag, 1).await;
    assert!(out.span("first").0 < out.span("second").0);
}

#[test]
fn a_command_to_interrupt_sees_sigint_even_when_the_xtask_ignores_it() {
    // As under `nohup cargo xtask ... &`: SIGINT ignored here, and children inherit that.
    // SAFETY: a disposition, set and put back; no test here sends this process SIGINT.
    let before = unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let dir = tempdir::TempDir::new();
    let status = dir.path().join("status");
    let script = format!("grep ^SigIgn /proc/self/status > {status}");
    let ran = run_command(
        &Command::new("sh", ["-c", &script]).interrupt_on_cancel(),
        &dir.path().join("log"),
        &CancellationToken::new(),
    );
    unsafe { libc::signal(libc::SIGINT, before) };
    ran.unwrap();
    let text = std::fs::read_to_string(&status).unwrap();
    let ignored = u64::from_str_radix(text.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(ignored & (1 << (libc::SIGINT - 1)), 0, "the command inherited SIGINT ignored: {text}");
}
