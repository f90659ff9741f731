//! A run's `report.json` read back: what the timeline and `report.html` are drawn from, both for
//! the run just made and for runs `report merge` finds in report directories. Every field has a
//! default, so reports of schema 1 and CI fixtures with fewer fields read too.

use std::time::Duration;

use anyhow::Context;
use camino::Utf8Path;
use serde::Deserialize;

use super::compare::{Comparison, Moved};
use super::plan::Phase;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct RunView {
    pub title: String,
    pub run_id: String,
    pub strategy: String,
    pub jobs: u64,
    pub started_at: String,
    pub outcome: String,
    pub summary: Option<String>,
    pub makespan_s: f64,
    pub critical_path: Vec<String>,
    pub critical_path_s: f64,
    pub sum_of_tasks_s: f64,
    pub phases: Vec<PhaseView>,
    pub tasks: Vec<TaskView>,
    pub specs: Vec<SpecView>,
    pub history: Option<HistoryView>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct PhaseView {
    pub phase: String,
    pub tasks: u64,
    pub wall_s: f64,
    pub sum_s: f64,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct TaskView {
    pub id: String,
    pub phase: String,
    pub kind: String,
    pub status: String,
    pub start_s: Option<f64>,
    pub end_s: Option<f64>,
    pub duration_s: Option<f64>,
    pub expected_s: Option<f64>,
    pub expected_from: Option<u64>,
    pub critical: bool,
    pub error: Option<String>,
    pub note: Option<String>,
    /// Its log, relative to the report directory.
    pub log: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct SpecView {
    pub name: String,
    pub outcome: String,
    pub time_s: Option<f64>,
    pub failure: Option<String>,
}

/// How the run compares with the previous runs of its environment on this machine.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct HistoryView {
    pub runs: u64,
    pub usual_s: f64,
    pub moved: Vec<MovedView>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct MovedView {
    pub id: String,
    pub before_s: f64,
    pub after_s: f64,
}

impl RunView {
    pub fn from_json(value: &serde_json::Value) -> anyhow::Result<RunView> {
        RunView::deserialize(value).context("not a run's report")
    }

    /// Reads `<dir>/report.json`.
    pub fn read(dir: &Utf8Path) -> anyhow::Result<RunView> {
        let path = dir.join("report.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{path} is not valid JSON"))?;
        RunView::from_json(&value).with_context(|| format!("cannot read {path}"))
    }

    pub fn failed_tasks(&self) -> impl Iterator<Item = &TaskView> {
        self.tasks.iter().filter(|t| t.status == "failed")
    }
}

impl HistoryView {
    /// The comparison of a run that took `took_s` with the runs this says.
    pub fn comparison(&self, took_s: f64) -> Comparison {
        let moved = self
            .moved
            .iter()
            .map(|m| Moved { id: m.id.clone(), before: secs(m.before_s), after: secs(m.after_s) })
            .collect();
        Comparison { runs: self.runs as usize, usual: secs(self.usual_s), took: secs(took_s), moved }
    }
}

impl TaskView {
    /// `phase/id`, as progress lines name it.
    pub fn label(&self) -> String {
        if self.phase.is_empty() { self.id.clone() } else { format!("{}/{}", self.phase, self.id) }
    }

    /// The phase it is labelled with, when it is one of ours.
    pub fn phase(&self) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.name() == self.phase)
    }

    /// When it ran, as offsets from the run's start; `None` for a task that never started.
    pub fn span(&self) -> Option<(Duration, Duration)> {
        let at = |s: f64| Duration::try_from_secs_f64(s).ok();
        Some((at(self.start_s?)?, at(self.end_s?)?))
    }

    /// The status as the terminal says it (`not started`, not `not_started`).
    pub fn status_name(&self) -> String {
        self.status.replace('_', " ")
    }
}

/// Seconds from a report as a duration; a negative or odd value is none.
pub fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or_default()
}
