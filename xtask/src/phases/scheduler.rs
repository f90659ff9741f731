//! Runs a plan: `dag` starts each task the moment its dependencies finish, `phased` runs stage
//! by stage behind barriers, `sequential` runs one task at a time in topological order.
//!
//! Build tasks run on a rayon pool of `jobs` threads, other processes on a second pool, API
//! tasks on tokio. The first failure (or the caller's cancellation) stops new starts and cancels
//! what runs; every task ends with a status.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::plan::{Kind, Plan, Task, When};
use super::progress::Progress;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Start each task as soon as its dependencies finish.
    Dag,
    /// Run stage by stage; a stage starts when the whole previous one finished.
    Phased,
    /// Run one task at a time.
    Sequential,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Dag => "dag",
            Strategy::Phased => "phased",
            Strategy::Sequential => "sequential",
        }
    }
}

/// At most three image builds at once, fewer on smaller machines (docs/performance.md).
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(3)
}

/// The error a task returns when it stopped because the run was cancelled.
#[derive(Debug)]
pub struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cancelled")
    }
}

impl std::error::Error for Cancelled {}

/// What a task that did not fail did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Its inputs were unchanged, so there was nothing to do.
    Cached,
}

/// What a task gets to run with.
#[derive(Debug, Clone)]
pub struct TaskCx {
    pub cancel: CancellationToken,
    /// `logs/<task>.log`: every command's output goes here.
    pub log: Utf8PathBuf,
    note: Arc<Mutex<Option<String>>>,
}

impl TaskCx {
    pub fn new(cancel: CancellationToken, log: Utf8PathBuf) -> TaskCx {
        TaskCx { cancel, log, note: Arc::default() }
    }

    /// What the summary says the task did, instead of its plan's [`Task::done`].
    pub fn note(&self, text: impl Into<String>) {
        *self.note.lock().unwrap() = Some(text.into());
    }

    fn take_note(&self) -> Option<String> {
        self.note.lock().unwrap().take()
    }
}

/// Carries out a task's steps. The real one drives docker/podman, kind and kube-rs; tests use
/// their own.
pub trait Executor: Send + Sync + 'static {
    /// Runs a build or process task on a pool thread.
    fn run_blocking(&self, task: &Task, cx: &TaskCx) -> anyhow::Result<Outcome>;
    /// Runs a Kubernetes API task on tokio.
    fn run_async(&self, task: &Task, cx: &TaskCx) -> impl Future<Output = anyhow::Result<Outcome>> + Send;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Cached,
    Failed,
    Cancelled,
    #[default]
    NotStarted,
    /// A teardown task whose condition did not hold.
    Skipped,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Cached => "cached",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::NotStarted => "not started",
            Status::Skipped => "skipped",
        }
    }

    fn succeeded(self) -> bool {
        matches!(self, Status::Ok | Status::Cached | Status::Skipped)
    }
}

/// One task's part in a run; times are offsets from the run's start.
#[derive(Debug, Clone, Default)]
pub struct TaskRecord {
    pub status: Status,
    pub start: Option<Duration>,
    pub end: Option<Duration>,
    pub error: Option<String>,
    /// The last lines of the task's log, for a failed task.
    pub log_tail: Vec<String>,
    /// What it did, in a line, once it succeeded.
    pub note: Option<String>,
}

impl TaskRecord {
    pub fn elapsed(&self) -> Option<Duration> {
        Some(self.end? - self.start?)
    }
}

/// Everything a run recorded, in plan order.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub strategy: Strategy,
    pub jobs: usize,
    pub started_at: jiff::Timestamp,
    /// When the last task before teardown ended.
    pub up: Duration,
    /// When the last task, teardown included, ended.
    pub makespan: Duration,
    pub interrupted: bool,
    pub tasks: Vec<TaskRecord>,
}

impl RunRecord {
    pub fn count(&self, status: Status) -> usize {
        self.tasks.iter().filter(|t| t.status == status).count()
    }

    pub fn succeeded(&self) -> bool {
        !self.interrupted && self.tasks.iter().all(|t| t.status.succeeded())
    }

    /// "failed N of M, cancelled K, not started J", or None when every task succeeded.
    pub fn failure_summary(&self) -> Option<String> {
        if self.succeeded() {
            return None;
        }
        let head = if self.interrupted { "interrupted: ".to_owned() } else { String::new() };
        Some(format!(
            "{head}failed {} of {}, cancelled {}, not started {}",
            self.count(Status::Failed),
            self.tasks.len(),
            self.count(Status::Cancelled),
            self.count(Status::NotStarted)
        ))
    }
}

/// How a plan is run: the strategy, the build pool's size, and whether a failure stops it.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub strategy: Strategy,
    /// How many build tasks run at once.
    pub jobs: usize,
    /// A failure only stops the tasks that wait for it, as `make -k` does, instead of the run.
    pub keep_going: bool,
}

impl Schedule {
    pub fn new(strategy: Strategy, jobs: usize) -> Schedule {
        Schedule { strategy, jobs, keep_going: false }
    }
}

/// How many log lines a failed task's record keeps.
const LOG_TAIL: usize = 20;

enum Event {
    Started(usize, Duration),
    Finished { task: usize, result: anyhow::Result<(Outcome, Option<String>)>, started: bool, at: Duration },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    InFlight,
    Done,
}

/// Runs `plan` to the end: first every task but teardown, then the teardown tasks whose
/// condition holds, on their own token, as far as they get. Cancelling `cancel` (Ctrl-C)
/// stops the first part like a failure does; it never stops teardown.
pub async fn run<E: Executor>(
    plan: Arc<Plan>,
    executor: Arc<E>,
    schedule: Schedule,
    log_dir: &Utf8Path,
    progress: &mut dyn Progress,
    cancel: CancellationToken,
) -> RunRecord {
    let started_at = jiff::Timestamp::now();
    let t0 = Instant::now();
    let pool = |threads: usize, name: &'static str| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(move |i| format!("{name}-{i}"))
            .build()
            .expect("cannot start a thread pool")
    };
    let pass = Pass {
        plan: &plan,
        executor: &executor,
        remaining: plan.remaining(),
        jobs: schedule.jobs.max(1),
        build_pool: pool(schedule.jobs, "build"),
        process_pool: pool(plan.tasks().iter().filter(|t| t.kind == Kind::Process).count(), "process"),
        strategy: schedule.strategy,
        log_dir,
        t0,
    };
    let mut records = vec![TaskRecord::default(); plan.len()];
    let up: Vec<bool> = plan.tasks().iter().map(|t| !t.is_teardown()).collect();
    // What teardown is expected to add, for the time left.
    let teardown = (0..plan.len())
        .filter(|&i| !up[i] && plan.tasks()[i].when == When::Always)
        .map(|i| pass.remaining[i])
        .max()
        .unwrap_or_default();
    let first = Round { part: Part::Up, members: &up, keep_going: schedule.keep_going, then: teardown };
    let interrupted = pass.drive(first, cancel, &mut records, progress).await;
    let up_end = t0.elapsed();

    let succeeded = !interrupted && (0..plan.len()).filter(|&i| up[i]).all(|i| records[i].status.succeeded());
    let mut down = vec![false; plan.len()];
    for (i, task) in plan.tasks().iter().enumerate().filter(|(i, _)| !up[*i]) {
        if task.when.holds(succeeded) {
            down[i] = true;
        } else {
            records[i].status = Status::Skipped;
        }
    }
    let last = Round { part: Part::Teardown, members: &down, keep_going: true, then: Duration::ZERO };
    pass.drive(last, CancellationToken::new(), &mut records, progress).await;
    RunRecord {
        strategy: schedule.strategy,
        jobs: schedule.jobs,
        started_at,
        up: up_end,
        makespan: t0.elapsed(),
        interrupted,
        tasks: records,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Up,
    Teardown,
}

/// One part of a run: its tasks (`members`), whether a failure stops it, and how long what
/// comes after it is expected to take.
struct Round<'m> {
    part: Part,
    members: &'m [bool],
    keep_going: bool,
    then: Duration,
}

/// What both parts of a run (before teardown, and teardown) run with.
struct Pass<'a, E> {
    plan: &'a Arc<Plan>,
    executor: &'a Arc<E>,
    /// Each task's expected remaining path: of the tasks ready at once, the longest starts first.
    remaining: Vec<Duration>,
    /// Build slots: the scheduler starts a build only when one is free, so what waits is its
    /// choice, not the pool's queue.
    jobs: usize,
    build_pool: rayon::ThreadPool,
    process_pool: rayon::ThreadPool,
    strategy: Strategy,
    log_dir: &'a Utf8Path,
    t0: Instant,
}

impl<E: Executor> Pass<'_, E> {
    /// Runs the tasks marked in `members` until none can start and none runs. With
    /// `keep_going` a failure stops only its dependents, which never start; otherwise it stops
    /// new starts and cancels what runs. In teardown every task runs: a dependency only orders
    /// it. Returns whether `cancel` fired.
    async fn drive(
        &self,
        round: Round<'_>,
        cancel: CancellationToken,
        records: &mut [TaskRecord],
        progress: &mut dyn Progress,
    ) -> bool {
        let Round { part, members, keep_going, then } = round;
        let (plan, t0) = (self.plan, self.t0);
        let n = plan.len();
        let mut state: Vec<State> = (0..n).map(|i| if members[i] { State::Pending } else { State::Done }).collect();
        let mut waiting_on: Vec<usize> = (0..n).map(|i| plan.deps(i).iter().filter(|&&d| members[d]).count()).collect();
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        // Tasks see `stop`: a failing task fires it itself, so not even a queued task starts after
        // it; `cancel` (the caller's, e.g. Ctrl-C) fires it too.
        let stop = cancel.child_token();
        let mut in_flight = 0usize;
        let mut builds = 0usize;
        let mut stopping = false;
        let mut interrupted = false;

        loop {
            if !stopping {
                let mut startable = ready(plan, self.strategy, &state, &waiting_on, in_flight);
                startable.sort_by_key(|&i| (std::cmp::Reverse(self.remaining[i]), i));
                for i in startable {
                    if plan.tasks()[i].kind == Kind::Build {
                        if builds == self.jobs {
                            continue;
                        }
                        builds += 1;
                    }
                    state[i] = State::InFlight;
                    in_flight += 1;
                    let cx = TaskCx::new(stop.clone(), self.log_dir.join(format!("{}.log", plan.tasks()[i].id)));
                    let (plan, executor, tx) = (plan.clone(), self.executor.clone(), tx.clone());
                    if plan.tasks()[i].kind == Kind::Api {
                        tokio::spawn(async move {
                            let _ = tx.send(Event::Started(i, t0.elapsed()));
                            let result = tokio::select! {
                                biased;
                                _ = cx.cancel.cancelled() => Err(Cancelled.into()),
                                result = executor.run_async(&plan.tasks()[i], &cx) => result,
                            };
                            let result = noted(result, &cx, &plan.tasks()[i]);
                            stop_on_failure(&result, &cx.cancel, keep_going);
                            let _ = tx.send(Event::Finished { task: i, result, started: true, at: t0.elapsed() });
                        });
                        continue;
                    }
                    let pool = if plan.tasks()[i].kind == Kind::Build { &self.build_pool } else { &self.process_pool };
                    pool.spawn(move || {
                        if cx.cancel.is_cancelled() {
                            let _ = tx.send(Event::Finished {
                                task: i,
                                result: Err(Cancelled.into()),
                                started: false,
                                at: t0.elapsed(),
                            });
                            return;
                        }
                        let _ = tx.send(Event::Started(i, t0.elapsed()));
                        let result = executor.run_blocking(&plan.tasks()[i], &cx);
                        let result = noted(result, &cx, &plan.tasks()[i]);
                        stop_on_failure(&result, &cx.cancel, keep_going);
                        let _ = tx.send(Event::Finished { task: i, result, started: true, at: t0.elapsed() });
                    });
                }
            }
            if in_flight == 0 {
                break;
            }
            let event = tokio::select! {
                event = rx.recv() => event.expect("the scheduler holds a sender"),
                _ = cancel.cancelled(), if !stopping => {
                    stopping = true;
                    interrupted = true;
                    continue;
                }
            };
            match event {
                Event::Started(i, at) => {
                    records[i].start = Some(at);
                    progress.left(self.left(at, &state, &waiting_on, records) + then);
                    progress.started(&plan.tasks()[i]);
                }
                Event::Finished { task: i, result, started, at } => {
                    in_flight -= 1;
                    if plan.tasks()[i].kind == Kind::Build {
                        builds -= 1;
                    }
                    state[i] = State::Done;
                    let record = &mut records[i];
                    if started {
                        record.end = Some(at);
                    }
                    record.status = match result {
                        Ok((Outcome::Done, note)) => {
                            record.note = note;
                            Status::Ok
                        }
                        Ok((Outcome::Cached, note)) => {
                            record.note = note;
                            Status::Cached
                        }
                        Err(_) if !started => Status::NotStarted,
                        Err(err) if err.is::<Cancelled>() => Status::Cancelled,
                        Err(err) => {
                            record.error = Some(format!("{err:#}"));
                            record.log_tail = tail(&self.log_dir.join(format!("{}.log", plan.tasks()[i].id)), LOG_TAIL);
                            stopping |= !keep_going;
                            Status::Failed
                        }
                    };
                    if record.status.succeeded() || part == Part::Teardown {
                        for &d in plan.dependents(i) {
                            waiting_on[d] = waiting_on[d].saturating_sub(1);
                        }
                    }
                    if started {
                        progress.left(self.left(at, &state, &waiting_on, records) + then);
                        progress.finished(&plan.tasks()[i], &records[i]);
                    }
                }
            }
        }
        interrupted
    }
}

impl<E> Pass<'_, E> {
    /// How long this part is expected to take still, at `now`: the longest expected path from
    /// a running task (less what it has run) or from a task ready to start. Pools are taken as
    /// free: a slight underestimate when builds queue.
    fn left(&self, now: Duration, state: &[State], waiting_on: &[usize], records: &[TaskRecord]) -> Duration {
        let tasks = self.plan.tasks();
        (0..tasks.len())
            .filter_map(|i| match state[i] {
                State::InFlight => {
                    let ran = now.saturating_sub(records[i].start.unwrap_or(now));
                    let after = self.remaining[i] - tasks[i].estimate;
                    Some(tasks[i].estimate.saturating_sub(ran) + after)
                }
                State::Pending if waiting_on[i] == 0 => Some(self.remaining[i]),
                _ => None,
            })
            .max()
            .unwrap_or_default()
    }
}

/// A successful result with what the task says it did: its own note, or the plan's when it did
/// its work.
fn noted(result: anyhow::Result<Outcome>, cx: &TaskCx, task: &Task) -> anyhow::Result<(Outcome, Option<String>)> {
    result.map(|outcome| {
        let planned = (outcome == Outcome::Done).then(|| task.done.clone()).flatten();
        (outcome, cx.take_note().or(planned))
    })
}

fn stop_on_failure<T>(result: &anyhow::Result<T>, stop: &CancellationToken, keep_going: bool) {
    if !keep_going && result.as_ref().is_err_and(|err| !err.is::<Cancelled>()) {
        stop.cancel();
    }
}

/// The tasks that may start now under `strategy`, in plan order (their pools may still be full).
fn ready(plan: &Plan, strategy: Strategy, state: &[State], waiting_on: &[usize], in_flight: usize) -> Vec<usize> {
    let startable = |i: usize| state[i] == State::Pending && waiting_on[i] == 0;
    match strategy {
        Strategy::Dag => (0..plan.len()).filter(|&i| startable(i)).collect(),
        Strategy::Phased => {
            let tasks = plan.tasks();
            let Some(stage) = (0..plan.len()).filter(|&i| state[i] != State::Done).map(|i| tasks[i].stage).min() else {
                return Vec::new();
            };
            (0..plan.len()).filter(|&i| startable(i) && tasks[i].stage == stage).collect()
        }
        Strategy::Sequential if in_flight == 0 => {
            plan.topological().iter().copied().find(|&i| startable(i)).into_iter().collect()
        }
        Strategy::Sequential => Vec::new(),
    }
}

/// The last `n` lines of a file, or nothing if it cannot be read.
fn tail(path: &Utf8Path, n: usize) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| l.to_string()).collect()
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
