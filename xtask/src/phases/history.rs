//! Durations learned from runs: each run adds its tasks' measured durations, done and cached
//! apart, to a small file per environment; a task's expected duration is the median of its
//! recent ones, or the plan's estimate without any. It also keeps the totals of the runs that
//! succeeded, which a run is compared with. The file is bounded (the last [`KEEP`] of each) and
//! a corrupt or foreign one is set aside with a warning, never an error.

use std::collections::BTreeMap;
use std::time::Duration;

use camino::Utf8Path;
use serde::{Deserialize, Serialize};

use super::plan::Plan;
use super::scheduler::{RunRecord, Status};

/// How many durations of each task and outcome a history keeps.
pub const KEEP: usize = 10;

/// The layout of the file; another is foreign.
const VERSION: u32 = 1;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    version: u32,
    tasks: BTreeMap<String, Durations>,
    /// The makespans of the runs that succeeded, in seconds, oldest first (absent in files
    /// written before they were kept).
    #[serde(default)]
    runs: Vec<f64>,
}

/// One task's recent durations in seconds, oldest first, and how its last run ended.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Durations {
    done: Vec<f64>,
    cached: Vec<f64>,
    last_cached: bool,
}

impl History {
    /// Reads `path`; a missing file is an empty history, a corrupt or foreign one too, with
    /// the warning to show.
    pub fn load(path: &Utf8Path) -> (History, Option<String>) {
        let Ok(text) = std::fs::read_to_string(path) else { return (History::empty(), None) };
        match serde_json::from_str::<History>(&text) {
            Ok(history) if history.version == VERSION => (history, None),
            Ok(other) => (History::empty(), Some(format!("ignored {path}: version {}, not {VERSION}", other.version))),
            Err(err) => (History::empty(), Some(format!("ignored {path}: not a run history ({err})"))),
        }
    }

    fn empty() -> History {
        History { version: VERSION, tasks: BTreeMap::new(), runs: Vec::new() }
    }

    /// Writes it to `path`, through a temporary file so a reader never sees half of it.
    pub fn save(&self, path: &Utf8Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let temporary = path.with_extension(format!("tmp.{}", std::process::id()));
        std::fs::write(&temporary, serde_json::to_string(self)? + "\n")?;
        std::fs::rename(&temporary, path)?;
        Ok(())
    }

    /// Adds the duration of every task of `run` that did its work or was cached, and its total
    /// when it succeeded.
    pub fn record(&mut self, plan: &Plan, run: &RunRecord) {
        if run.succeeded() {
            keep_last(&mut self.runs, run.makespan);
        }
        for (task, record) in plan.tasks().iter().zip(&run.tasks) {
            let Some(elapsed) = record.elapsed() else { continue };
            let entry = self.tasks.entry(task.id.clone()).or_default();
            let cached = match record.status {
                Status::Ok => false,
                Status::Cached => true,
                _ => continue,
            };
            keep_last(if cached { &mut entry.cached } else { &mut entry.done }, elapsed);
            entry.last_cached = cached;
        }
    }

    /// The expected duration of task `id` and how many runs it comes from: the median of its
    /// recent durations of the kind its last run had (a task cached last time is likely cached
    /// again).
    pub fn expected(&self, id: &str) -> Option<(Duration, usize)> {
        let entry = self.tasks.get(id)?;
        let list = if entry.last_cached && !entry.cached.is_empty() { &entry.cached } else { &entry.done };
        let median = median(list)?;
        Some((Duration::from_secs_f64(median), list.len()))
    }

    /// The median total of the previous runs that succeeded, and how many there are.
    pub fn usual_total(&self) -> Option<(Duration, usize)> {
        Some((Duration::from_secs_f64(median(&self.runs)?), self.runs.len()))
    }
}

/// Appends `took` (in seconds, to the millisecond), keeping the last [`KEEP`].
fn keep_last(list: &mut Vec<f64>, took: Duration) {
    list.push((took.as_secs_f64() * 1000.0).round() / 1000.0);
    if list.len() > KEEP {
        list.drain(..list.len() - KEEP);
    }
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite() && *v >= 0.0).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::plan::{Kind, Phase, Task};
    use crate::phases::scheduler::{Strategy, TaskRecord};

    fn run(records: Vec<TaskRecord>) -> RunRecord {
        RunRecord {
            strategy: Strategy::Dag,
            jobs: 1,
            started_at: jiff::Timestamp::UNIX_EPOCH,
            up: Duration::ZERO,
            makespan: Duration::ZERO,
            interrupted: false,
            tasks: records,
        }
    }

    fn took(status: Status, ms: u64) -> TaskRecord {
        TaskRecord {
            status,
            start: Some(Duration::ZERO),
            end: Some(Duration::from_millis(ms)),
            ..TaskRecord::default()
        }
    }

    fn scratch(name: &str) -> camino::Utf8PathBuf {
        let dir = camino::Utf8PathBuf::from(std::env::temp_dir().to_str().unwrap())
            .join(format!("xtask-history-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_expectation_is_the_median_of_the_recent_runs_kept_bounded() {
        let plan = Plan::new(vec![Task::new("build", Phase::Images, Kind::Build)]).unwrap();
        let mut history = History::empty();
        assert_eq!(history.expected("build"), None);
        for ms in [1000, 9000, 2000] {
            history.record(&plan, &run(vec![took(Status::Ok, ms)]));
        }
        assert_eq!(history.expected("build"), Some((Duration::from_secs(2), 3)));
        // Cached last time: expected cached again.
        history.record(&plan, &run(vec![took(Status::Cached, 50)]));
        assert_eq!(history.expected("build"), Some((Duration::from_millis(50), 1)));
        history.record(&plan, &run(vec![took(Status::Ok, 3000)]));
        assert_eq!(history.expected("build"), Some((Duration::from_millis(2500), 4)));
        // Failed and never-started tasks teach nothing.
        history.record(&plan, &run(vec![took(Status::Failed, 99_000)]));
        assert_eq!(history.expected("build"), Some((Duration::from_millis(2500), 4)));
        for _ in 0..30 {
            history.record(&plan, &run(vec![took(Status::Ok, 4000)]));
        }
        assert_eq!(history.tasks["build"].done.len(), KEEP);
        assert_eq!(history.expected("build"), Some((Duration::from_secs(4), KEEP)));
    }

    #[test]
    fn the_usual_total_is_the_median_of_the_runs_that_succeeded() {
        let plan = Plan::new(vec![Task::new("specs", Phase::Tests, Kind::Process)]).unwrap();
        let mut history = History::empty();
        assert_eq!(history.usual_total(), None);
        let total = |status, secs| RunRecord { makespan: Duration::from_secs(secs), ..run(vec![took(status, 10)]) };
        for (status, secs) in [(Status::Ok, 60), (Status::Failed, 5), (Status::Ok, 80), (Status::Cached, 70)] {
            history.record(&plan, &total(status, secs));
        }
        assert_eq!(history.usual_total(), Some((Duration::from_secs(70), 3)), "the failed run's 5 s is not usual");
        // A file from before totals were kept reads, with none.
        let old: History = serde_json::from_str(r#"{"version": 1, "tasks": {}}"#).unwrap();
        assert_eq!(old.usual_total(), None);
    }

    #[test]
    fn a_history_survives_being_saved_corrupted_or_foreign() {
        let dir = scratch("files");
        let path = dir.join("history.json");
        let (empty, warning) = History::load(&path);
        assert_eq!((empty.tasks.len(), warning), (0, None));
        let plan = Plan::new(vec![Task::new("specs", Phase::Tests, Kind::Process)]).unwrap();
        let mut history = History::empty();
        history.record(&plan, &run(vec![took(Status::Ok, 1234)]));
        history.save(&path).unwrap();
        assert_eq!(History::load(&path), (history, None));
        std::fs::write(&path, "{\"version\": 1, \"tasks\": ").unwrap();
        let (read, warning) = History::load(&path);
        assert!(read.tasks.is_empty() && warning.unwrap().starts_with(&format!("ignored {path}: not a run history")));
        std::fs::write(&path, "{\"version\": 7, \"tasks\": {}}").unwrap();
        assert_eq!(History::load(&path).1.unwrap(), format!("ignored {path}: version 7, not 1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
