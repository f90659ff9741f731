//! Runs a plan: `dag` starts each task the moment its dependencies finish, `phased` runs stage
//! by stage behind barriers, `sequential` runs one task at a time in topological order.
//!
//! Build tasks run on a rayon pool of `jobs` threads, other processes on a second pool, API
//! tasks on tokio. The first failure (or the caller's cancellation) stops new starts and cancels
//! what runs; every task ends with a status.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::plan::{Kind, Plan, Task};
use super::progress::Progress;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
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
}

/// Carries out a task's steps. The real one drives docker/podman, kind and kube-rs; tests use
/// their own.
pub trait Executor: Send + Sync + 'static {
    /// Runs a build or process task on a pool thread.
    fn run_blocking(&self, task: &Task, cx: &TaskCx) -> anyhow::Result<Outcome>;
    /// Runs a Kubernetes API task on tokio.
    fn run_async(&self, task: &Task, cx: &TaskCx) -> impl Future<Output = anyhow::Result<Outcome>> + Send;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Cached,
    Failed,
    Cancelled,
    NotStarted,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Cached => "cached",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::NotStarted => "not started",
        }
    }
}

/// One task's part in a run; times are offsets from the run's start.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    pub status: Status,
    pub start: Option<Duration>,
    pub end: Option<Duration>,
    pub error: Option<String>,
    /// The last lines of the task's log, for a failed task.
    pub log_tail: Vec<String>,
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
    pub makespan: Duration,
    pub interrupted: bool,
    pub tasks: Vec<TaskRecord>,
}

impl RunRecord {
    pub fn count(&self, status: Status) -> usize {
        self.tasks.iter().filter(|t| t.status == status).count()
    }

    pub fn succeeded(&self) -> bool {
        !self.interrupted && self.tasks.iter().all(|t| matches!(t.status, Status::Ok | Status::Cached))
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

/// How many log lines a failed task's record keeps.
const LOG_TAIL: usize = 20;

enum Event {
    Started(usize, Duration),
    Finished { task: usize, result: anyhow::Result<Outcome>, started: bool, at: Duration },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    InFlight,
    Done,
}

/// Runs `plan` to the end. Cancelling `cancel` (Ctrl-C) stops the run like a failure does.
pub async fn run<E: Executor>(
    plan: Arc<Plan>,
    executor: Arc<E>,
    strategy: Strategy,
    jobs: usize,
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
    let build_pool = pool(jobs, "build");
    let process_pool = pool(plan.tasks().iter().filter(|t| t.kind == Kind::Process).count(), "process");

    let n = plan.len();
    let mut state = vec![State::Pending; n];
    let mut waiting_on: Vec<usize> = (0..n).map(|i| plan.deps(i).len()).collect();
    let mut records: Vec<TaskRecord> = (0..n)
        .map(|_| TaskRecord { status: Status::NotStarted, start: None, end: None, error: None, log_tail: Vec::new() })
        .collect();
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    // Tasks see `stop`: a failing task fires it itself, so not even a queued task starts after
    // it; `cancel` (the caller's, e.g. Ctrl-C) fires it too.
    let stop = cancel.child_token();
    let mut in_flight = 0usize;
    let mut stopping = false;
    let mut interrupted = false;

    loop {
        if !stopping {
            for i in ready(&plan, strategy, &state, &waiting_on, in_flight) {
                state[i] = State::InFlight;
                in_flight += 1;
                let cx = TaskCx { cancel: stop.clone(), log: log_dir.join(format!("{}.log", plan.tasks()[i].id)) };
                let (plan, executor, tx) = (plan.clone(), executor.clone(), tx.clone());
                if plan.tasks()[i].kind == Kind::Api {
                    tokio::spawn(async move {
                        let _ = tx.send(Event::Started(i, t0.elapsed()));
                        let result = tokio::select! {
                            biased;
                            _ = cx.cancel.cancelled() => Err(Cancelled.into()),
                            result = executor.run_async(&plan.tasks()[i], &cx) => result,
                        };
                        stop_on_failure(&result, &cx.cancel);
                        let _ = tx.send(Event::Finished { task: i, result, started: true, at: t0.elapsed() });
                    });
                    continue;
                }
                let pool = if plan.tasks()[i].kind == Kind::Build { &build_pool } else { &process_pool };
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
                    stop_on_failure(&result, &cx.cancel);
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
                progress.started(&plan.tasks()[i]);
            }
            Event::Finished { task: i, result, started, at } => {
                in_flight -= 1;
                state[i] = State::Done;
                let record = &mut records[i];
                if started {
                    record.end = Some(at);
                }
                record.status = match result {
                    Ok(Outcome::Done) => Status::Ok,
                    Ok(Outcome::Cached) => Status::Cached,
                    Err(_) if !started => Status::NotStarted,
                    Err(err) if err.is::<Cancelled>() => Status::Cancelled,
                    Err(err) => {
                        record.error = Some(format!("{err:#}"));
                        record.log_tail = tail(&log_dir.join(format!("{}.log", plan.tasks()[i].id)), LOG_TAIL);
                        stopping = true;
                        Status::Failed
                    }
                };
                if matches!(record.status, Status::Ok | Status::Cached) {
                    for &d in plan.dependents(i) {
                        waiting_on[d] -= 1;
                    }
                }
                if started {
                    progress.finished(&plan.tasks()[i], &records[i]);
                }
            }
        }
    }
    RunRecord { strategy, jobs, started_at, makespan: t0.elapsed(), interrupted, tasks: records }
}

fn stop_on_failure(result: &anyhow::Result<Outcome>, stop: &CancellationToken) {
    if result.as_ref().is_err_and(|err| !err.is::<Cancelled>()) {
        stop.cancel();
    }
}

/// The tasks that may start now under `strategy`, in plan order.
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
