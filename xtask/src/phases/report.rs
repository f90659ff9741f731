//! The timing report of a run: a terminal summary, `report.json` (schema in
//! docs/report-schema.md), `report.md`, `timeline.svg` and `report.html`, the last two drawn
//! from what `report.json` says.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use camino::Utf8Path;
use serde_json::json;

use super::compare::{Comparison, compare};
use super::github::Console;
use super::html;
use super::plan::{Phase, Plan};
use super::progress::human;
use super::scheduler::{RunRecord, Status};
use super::svg::{self, Bars};
use super::view::RunView;

/// The version of the `report.json` layout.
pub const SCHEMA_VERSION: u32 = 2;

/// Two events closer than this are taken as one causing the other.
const RELEASE_SLACK: Duration = Duration::from_millis(20);

/// How a spec (a test the run's tests task ran) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpecOutcome {
    Passed,
    Failed,
    Ignored,
}

/// One spec's result, from the test runner's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecResult {
    pub name: String,
    pub outcome: SpecOutcome,
    pub time: Option<Duration>,
    /// What the runner said of a failure (the panic message, with where it panicked).
    pub failure: Option<String>,
}

/// How many of the slowest specs the terminal summary names.
const SLOWEST: usize = 3;

/// A run and what can be derived from it.
pub struct Report<'a> {
    /// The service whose environment ran (`all` for `e2e all`).
    pub service: String,
    pub title: String,
    pub run_id: String,
    pub plan: &'a Plan,
    pub run: &'a RunRecord,
    /// The chain of tasks that set the end time, first to last.
    pub critical: Vec<usize>,
    /// Its specs, failures first, then the slowest first.
    pub specs: Vec<SpecResult>,
    /// How it compares with the previous runs of its environment here, when there were any.
    pub comparison: Option<Comparison>,
}

pub struct PhaseRow {
    pub phase: Phase,
    pub tasks: usize,
    /// From the phase's first start to its last end.
    pub wall: Duration,
    /// The sum of its tasks' durations.
    pub sum: Duration,
}

impl<'a> Report<'a> {
    pub fn new(
        service: impl Into<String>,
        title: impl Into<String>,
        run_id: impl Into<String>,
        plan: &'a Plan,
        run: &'a RunRecord,
    ) -> Report<'a> {
        let critical = critical_path(plan, run);
        Report {
            service: service.into(),
            title: title.into(),
            run_id: run_id.into(),
            plan,
            run,
            critical,
            specs: Vec::new(),
            comparison: None,
        }
    }

    /// Compared with the previous runs, whose totals' median is `usual` (with how many runs),
    /// and whose tasks' medians are the plan's learned estimates; only a successful run, as
    /// those totals are successful runs' (a run that stopped early took no usual time).
    pub fn with_usual(mut self, usual: Option<(Duration, usize)>) -> Report<'a> {
        if !self.run.succeeded() || self.run.interrupted {
            return self;
        }
        let tasks = self.plan.tasks().iter().zip(&self.run.tasks).map(|(task, record)| {
            let before = task.estimate_from.map(|_| task.estimate);
            let after = matches!(record.status, Status::Ok | Status::Cached).then(|| record.elapsed()).flatten();
            (task.id.as_str(), before, after)
        });
        self.comparison = compare(usual, self.run.makespan, tasks);
        self
    }

    /// With the specs' results.
    pub fn with_specs(mut self, mut specs: Vec<SpecResult>) -> Report<'a> {
        specs.sort_by_key(|s| (s.outcome != SpecOutcome::Failed, std::cmp::Reverse(s.time), s.name.clone()));
        self.specs = specs;
        self
    }

    /// The tasks that took much longer than past runs say they usually do (half again, and a
    /// second more), slowest against their usual first: `datastorage 9.8s, usually 2.4s`.
    pub fn slower_than_usual(&self) -> Vec<String> {
        let mut slow: Vec<(f64, String)> = self
            .plan
            .tasks()
            .iter()
            .zip(&self.run.tasks)
            .filter(|(task, _)| task.estimate_from.is_some())
            .filter_map(|(task, record)| {
                let took = record.elapsed()?;
                let usual = task.estimate;
                let slow = took.as_secs_f64() > usual.as_secs_f64() * 1.5 && took > usual + Duration::from_secs(1);
                slow.then(|| {
                    (
                        took.as_secs_f64() / usual.as_secs_f64().max(0.001),
                        format!("{} {}, usually {}", task.id, human(took), human(usual)),
                    )
                })
            })
            .collect();
        slow.sort_by(|a, b| b.0.total_cmp(&a.0));
        slow.into_iter().map(|(_, line)| line).collect()
    }

    /// What the teardown tasks that succeeded said they did, in plan order.
    pub fn teardown_notes(&self) -> Vec<&str> {
        let tasks = self.plan.tasks().iter().zip(&self.run.tasks);
        tasks.filter(|(task, _)| task.is_teardown()).filter_map(|(_, record)| record.note.as_deref()).collect()
    }

    /// What running every task one after another would have cost.
    pub fn sum_of_tasks(&self) -> Duration {
        self.run.tasks.iter().filter_map(|t| t.elapsed()).sum()
    }

    pub fn critical_length(&self) -> Duration {
        self.critical.iter().filter_map(|&i| self.run.tasks[i].elapsed()).sum()
    }

    pub fn phases(&self) -> Vec<PhaseRow> {
        Phase::ALL
            .iter()
            .filter_map(|&phase| {
                let records: Vec<_> = self
                    .plan
                    .tasks()
                    .iter()
                    .zip(&self.run.tasks)
                    .filter(|(task, _)| task.phase == phase)
                    .map(|(_, record)| record)
                    .collect();
                if records.is_empty() {
                    return None;
                }
                let first = records.iter().filter_map(|r| r.start).min();
                let last = records.iter().filter_map(|r| r.end).max();
                let wall = match (first, last) {
                    (Some(a), Some(b)) => b.saturating_sub(a),
                    _ => Duration::ZERO,
                };
                let sum = records.iter().filter_map(|r| r.elapsed()).sum();
                Some(PhaseRow { phase, tasks: records.len(), wall, sum })
            })
            .collect()
    }

    fn saving(&self) -> (Duration, f64) {
        let sum = self.sum_of_tasks();
        let saved = sum.saturating_sub(self.run.makespan);
        let percent = if sum.is_zero() { 0.0 } else { 100.0 * saved.as_secs_f64() / sum.as_secs_f64() };
        (saved, percent)
    }

    fn critical_ids(&self) -> Vec<&str> {
        self.critical.iter().map(|&i| self.plan.tasks()[i].id.as_str()).collect()
    }

    /// The summary printed at the end of a run, each failed task's log tail as `console` shows
    /// logs.
    pub fn terminal(&self, console: Console) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\n{} ({} strategy, jobs {})", self.title, self.run.strategy.name(), self.run.jobs);
        let _ = writeln!(out, "  {:<10} {:>6} {:>9} {:>9}", "phase", "tasks", "wall", "sum");
        for row in self.phases() {
            let _ = writeln!(
                out,
                "  {:<10} {:>6} {:>9} {:>9}",
                row.phase.name(),
                row.tasks,
                human(row.wall),
                human(row.sum)
            );
        }
        let (saved, percent) = self.saving();
        let _ = writeln!(
            out,
            "  {:<10} {:>6} {:>9} {:>9}",
            "total",
            self.plan.len(),
            human(self.run.makespan),
            human(self.sum_of_tasks())
        );
        let chain: Vec<String> = self
            .critical
            .iter()
            .map(|&i| {
                format!("{} {}", self.plan.tasks()[i].id, self.run.tasks[i].elapsed().map(human).unwrap_or_default())
            })
            .collect();
        let _ = writeln!(out, "  critical path ({}): {}", human(self.critical_length()), chain.join(" -> "));
        let _ = writeln!(
            out,
            "  sum of task times {} (what sequential would cost), took {}: saved {} ({percent:.0}%)",
            human(self.sum_of_tasks()),
            human(self.run.makespan),
            human(saved)
        );
        let cached = self.run.count(Status::Cached);
        if cached > 0 {
            let _ = writeln!(out, "  cached: {cached} of {} tasks had nothing to do", self.plan.len());
        }
        if let Some(comparison) = &self.comparison {
            let _ = writeln!(out, "  {}", comparison.summary());
        }
        let slow = self.slower_than_usual();
        if !slow.is_empty() {
            let _ = writeln!(out, "  slower than usual: {}", slow.join("; "));
        }
        let mut slowest: Vec<&SpecResult> = self.specs.iter().filter(|s| s.time.is_some()).collect();
        slowest.sort_by_key(|s| std::cmp::Reverse(s.time));
        if !slowest.is_empty() {
            let named: Vec<String> = slowest
                .iter()
                .take(SLOWEST)
                .map(|s| format!("{} {}", s.name, s.time.map(human).unwrap_or_default()))
                .collect();
            let _ = writeln!(out, "  slowest specs: {}", named.join(", "));
        }
        for note in self.teardown_notes() {
            let _ = writeln!(out, "  {note}");
        }
        if let Some(summary) = self.run.failure_summary() {
            let _ = writeln!(out, "  {summary}");
            for (task, record) in self.plan.tasks().iter().zip(&self.run.tasks) {
                if let Some(error) = &record.error {
                    let _ = writeln!(out, "  {}: {error}", task.label());
                    out.push_str(&console.log_lines(&format!("log tail of {}", task.label()), &record.log_tail));
                }
            }
        }
        out
    }

    pub fn json(&self) -> serde_json::Value {
        let secs = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0);
        let outcome = if self.run.interrupted {
            "interrupted"
        } else if self.run.succeeded() {
            "ok"
        } else {
            "failed"
        };
        let (saved, _) = self.saving();
        let tasks: Vec<_> = self
            .plan
            .tasks()
            .iter()
            .zip(&self.run.tasks)
            .enumerate()
            .map(|(i, (task, record))| {
                json!({
                    "id": task.id,
                    "phase": task.phase,
                    "kind": task.kind,
                    "stage": task.stage,
                    "deps": task.deps,
                    "when": task.when,
                    "expected_s": secs(Some(task.estimate)),
                    "expected_from": task.estimate_from,
                    "status": record.status,
                    "note": record.note,
                    "start_s": secs(record.start),
                    "end_s": secs(record.end),
                    "duration_s": secs(record.elapsed()),
                    "critical": self.critical.contains(&i),
                    "error": record.error,
                    "log": format!("logs/{}.log", task.id),
                })
            })
            .collect();
        let phases: Vec<_> = self
            .phases()
            .iter()
            .map(|row| json!({"phase": row.phase, "tasks": row.tasks, "wall_s": secs(Some(row.wall)), "sum_s": secs(Some(row.sum))}))
            .collect();
        json!({
            "schema": SCHEMA_VERSION,
            "service": self.service,
            "title": self.title,
            "run_id": self.run_id,
            "strategy": self.run.strategy,
            "jobs": self.run.jobs,
            "started_at": self.run.started_at.to_string(),
            "outcome": outcome,
            "summary": self.run.failure_summary(),
            "makespan_s": secs(Some(self.run.makespan)),
            "up_s": secs(Some(self.run.up)),
            "sum_of_tasks_s": secs(Some(self.sum_of_tasks())),
            "saving_s": secs(Some(saved)),
            "critical_path": self.critical_ids(),
            "critical_path_s": secs(Some(self.critical_length())),
            "phases": phases,
            "tasks": tasks,
            "specs": self.specs.iter().map(|s| json!({"name": s.name, "outcome": s.outcome, "time_s": secs(s.time), "failure": s.failure})).collect::<Vec<_>>(),
            "history": self.comparison.as_ref().map(Comparison::json),
        })
    }

    /// `report.md`.
    pub fn markdown(&self) -> String {
        self.markdown_with(true)
    }

    /// The Markdown for a CI job's summary: `report.md` without the timeline, an image beside
    /// it that a summary cannot show.
    pub fn step_summary(&self) -> String {
        self.markdown_with(false)
    }

    fn markdown_with(&self, timeline: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# {}\n", self.title);
        let _ = writeln!(
            out,
            "Run `{}`, strategy `{}`, jobs {}, started {}.\n",
            self.run_id,
            self.run.strategy.name(),
            self.run.jobs,
            self.run.started_at
        );
        if let Some(summary) = self.run.failure_summary() {
            let _ = writeln!(out, "**{summary}**\n");
        }
        if let Some(comparison) = &self.comparison {
            let _ = writeln!(out, "Against the previous runs: {}.\n", comparison.summary());
        }
        let _ = writeln!(out, "| phase | tasks | wall | sum |\n|---|---:|---:|---:|");
        for row in self.phases() {
            let _ =
                writeln!(out, "| {} | {} | {} | {} |", row.phase.name(), row.tasks, human(row.wall), human(row.sum));
        }
        let (saved, percent) = self.saving();
        let _ = writeln!(
            out,
            "| **total** | {} | **{}** | {} |\n",
            self.plan.len(),
            human(self.run.makespan),
            human(self.sum_of_tasks())
        );
        let _ = writeln!(
            out,
            "Critical path ({}): {}.\n\nSaved {} ({percent:.0}%) against running every task in turn.\n",
            human(self.critical_length()),
            self.critical_ids().join(" → "),
            human(saved)
        );
        if timeline {
            let _ = writeln!(out, "![timeline](timeline.svg)\n");
        }
        let _ = writeln!(
            out,
            "| task | phase | status | start | duration | usually | critical |\n|---|---|---|---:|---:|---:|:-:|"
        );
        for (i, (task, record)) in self.plan.tasks().iter().zip(&self.run.tasks).enumerate() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                task.id,
                task.phase,
                record.status.name(),
                record.start.map(human).unwrap_or_default(),
                record.elapsed().map(human).unwrap_or_default(),
                task.estimate_from.map(|_| human(task.estimate)).unwrap_or_default(),
                if self.critical.contains(&i) { "yes" } else { "" }
            );
        }
        for (task, record) in self.plan.tasks().iter().zip(&self.run.tasks) {
            if let Some(error) = &record.error {
                let _ = writeln!(out, "\n## {} failed\n\n{error}\n\n```\n{}\n```", task.id, record.log_tail.join("\n"));
            }
        }
        if !self.specs.is_empty() {
            let _ = writeln!(out, "\n## Specs\n\n| spec | outcome | time |\n|---|---|---:|");
            for spec in &self.specs {
                let outcome = serde_json::to_value(spec.outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let _ = writeln!(out, "| {} | {outcome} | {} |", spec.name, spec.time.map(human).unwrap_or_default());
            }
        }
        out
    }

    /// Writes report.json, report.md, timeline.svg and report.html (with the task logs in
    /// `dir/logs`) into `dir`.
    pub fn write(&self, dir: &Utf8Path) -> anyhow::Result<()> {
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("cannot write {path}"))
        };
        let json = self.json();
        let view = RunView::from_json(&json)?;
        write("report.json", serde_json::to_string_pretty(&json)? + "\n")?;
        write("report.md", self.markdown())?;
        write("timeline.svg", svg::timeline(&view, Bars::Standalone))?;
        write("report.html", html::run_page(&view, dir))
    }
}

/// Walks back from the task that ended last: each step goes to the task whose end released it,
/// a dependency if one ended then, else whatever freed a barrier or a pool slot.
pub fn critical_path(plan: &Plan, run: &RunRecord) -> Vec<usize> {
    let records = &run.tasks;
    let Some(mut current) = (0..records.len()).filter(|&i| records[i].end.is_some()).max_by_key(|&i| records[i].end)
    else {
        return Vec::new();
    };
    let mut chain = vec![current];
    while let Some(start) = records[current].start {
        let ended_before =
            |i: usize| records[i].end.is_some_and(|end| end <= start + RELEASE_SLACK) && !chain.contains(&i);
        let Some(latest) = (0..records.len()).filter(|&i| ended_before(i)).filter_map(|i| records[i].end).max() else {
            break;
        };
        let near = |i: usize| records[i].end.is_some_and(|end| end + RELEASE_SLACK >= latest);
        let dep =
            plan.deps(current).iter().copied().filter(|&d| ended_before(d) && near(d)).max_by_key(|&d| records[d].end);
        let releaser =
            dep.or_else(|| (0..records.len()).filter(|&i| ended_before(i) && near(i)).max_by_key(|&i| records[i].end));
        match releaser {
            Some(prev) => {
                chain.push(prev);
                current = prev;
            }
            None => break,
        }
    }
    chain.reverse();
    chain
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::plan::{Kind, Task};
    use crate::phases::scheduler::{Strategy, TaskRecord};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn record(start: u64, end: u64) -> TaskRecord {
        TaskRecord { status: Status::Ok, start: Some(ms(start)), end: Some(ms(end)), ..TaskRecord::default() }
    }

    fn run_of(tasks: Vec<TaskRecord>) -> RunRecord {
        let makespan = tasks.iter().filter_map(|t| t.end).max().unwrap_or_default();
        RunRecord {
            strategy: Strategy::Dag,
            jobs: 2,
            started_at: jiff::Timestamp::UNIX_EPOCH,
            up: makespan,
            makespan,
            interrupted: false,
            tasks,
        }
    }

    fn plan(spec: &[(&str, &[&str])]) -> Plan {
        Plan::new(spec.iter().map(|(id, deps)| Task::new(*id, Phase::Infra, Kind::Api).after(deps)).collect()).unwrap()
    }

    fn ids(plan: &Plan, chain: &[usize]) -> Vec<String> {
        chain.iter().map(|&i| plan.tasks()[i].id.clone()).collect()
    }

    #[test]
    fn critical_path_follows_the_dependency_that_finished_last() {
        // cluster 0-1500, build 0-600, load (cluster, build) 1500-1600, db (cluster) 1500-1800,
        // app (load, db) 1800-2000: the chain is cluster -> db -> app.
        let plan = plan(&[
            ("cluster", &[]),
            ("build", &[]),
            ("load", &["cluster", "build"]),
            ("db", &["cluster"]),
            ("app", &["load", "db"]),
        ]);
        let run =
            run_of(vec![record(0, 1500), record(0, 600), record(1501, 1600), record(1501, 1800), record(1801, 2000)]);
        assert_eq!(ids(&plan, &critical_path(&plan, &run)), ["cluster", "db", "app"]);
    }

    #[test]
    fn critical_path_crosses_a_barrier_to_the_task_that_held_it() {
        // Phased: b depends on nothing but started when the slow a2 of the previous stage ended.
        let plan = plan(&[("a1", &[]), ("a2", &[]), ("b", &["a1"])]);
        let run = run_of(vec![record(0, 100), record(0, 900), record(901, 1000)]);
        assert_eq!(ids(&plan, &critical_path(&plan, &run)), ["a2", "b"]);
    }

    #[test]
    fn sequential_critical_path_is_every_task() {
        let plan = plan(&[("a", &[]), ("b", &[]), ("c", &["a"])]);
        let run = run_of(vec![record(0, 100), record(101, 300), record(301, 400)]);
        assert_eq!(ids(&plan, &critical_path(&plan, &run)), ["a", "b", "c"]);
    }

    #[test]
    fn summary_counts_and_saving() {
        let plan = plan(&[("a", &[]), ("b", &[]), ("c", &["a", "b"])]);
        let run = run_of(vec![record(0, 1000), record(0, 1000), record(1000, 2000)]);
        let report = Report::new("t", "t", "r", &plan, &run);
        assert_eq!(report.sum_of_tasks(), ms(3000));
        let json = report.json();
        assert_eq!(json["saving_s"], 1.0);
        assert_eq!(json["outcome"], "ok");
        assert_eq!(json["phases"][0]["wall_s"], 2.0);
        assert_eq!(json["phases"][0]["sum_s"], 3.0);
        assert!(report.terminal(Console::Plain).contains("saved 1.0s (33%)"), "{}", report.terminal(Console::Plain));
    }

    #[test]
    fn a_task_much_slower_than_usual_is_named() {
        let mut p = plan(&[("rollout", &[]), ("quick", &[]), ("new", &[])]);
        let mut tasks: Vec<Task> = p.tasks().to_vec();
        tasks[0].estimate = ms(2400);
        tasks[0].estimate_from = Some(5);
        tasks[1].estimate = ms(900);
        tasks[1].estimate_from = Some(5);
        tasks[2].estimate = ms(100);
        p = Plan::new(tasks).unwrap();
        let run = run_of(vec![record(0, 9800), record(0, 1200), record(0, 9000)]);
        let report = Report::new("t", "t", "r", &p, &run);
        // Only a task with a history can be slower than usual; 1.2 s against 0.9 s is noise.
        assert_eq!(report.slower_than_usual(), ["rollout 9.8s, usually 2.4s"]);
        assert!(
            report.terminal(Console::Plain).contains("  slower than usual: rollout 9.8s, usually 2.4s"),
            "{}",
            report.terminal(Console::Plain)
        );
        assert_eq!(report.json()["tasks"][0]["expected_s"], 2.4);
        assert_eq!(report.json()["tasks"][0]["expected_from"], 5);
        assert!(
            report.markdown().contains("| rollout | infra | ok | 0ms | 9.8s | 2.4s | yes |"),
            "{}",
            report.markdown()
        );
    }

    #[test]
    fn failure_summary_names_counts() {
        let plan = plan(&[("a", &[]), ("b", &[]), ("c", &["a"])]);
        let mut failed = record(0, 100);
        failed.status = Status::Failed;
        failed.error = Some("boom".into());
        let mut cancelled = record(0, 120);
        cancelled.status = Status::Cancelled;
        let not_started = TaskRecord::default();
        let run = run_of(vec![failed, cancelled, not_started]);
        let report = Report::new("t", "t", "r", &plan, &run);
        assert_eq!(run.failure_summary().unwrap(), "failed 1 of 3, cancelled 1, not started 1");
        assert!(report.terminal(Console::Plain).contains("infra/a: boom"));
        assert_eq!(report.json()["outcome"], "failed");
    }

    fn scratch(name: &str) -> camino::Utf8PathBuf {
        let dir = camino::Utf8PathBuf::from(std::env::temp_dir().to_str().unwrap())
            .join(format!("xtask-report-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        dir
    }

    #[test]
    fn the_page_of_a_failed_run_opens_with_the_failure_and_links_each_bar_to_its_log() {
        let plan = plan(&[("cluster", &[]), ("build", &[]), ("deploy", &["cluster", "build"])]);
        let mut failed = record(0, 1500);
        failed.status = Status::Failed;
        failed.error = Some("`kind create cluster` failed: exit status: 1".into());
        let mut cancelled = record(0, 1600);
        cancelled.status = Status::Cancelled;
        let run = run_of(vec![failed, cancelled, TaskRecord::default()]);
        let dir = scratch("page");
        std::fs::write(dir.join("logs/cluster.log"), "$ kind create cluster\nERROR: <node> & \"co\" failed\n").unwrap();
        let long: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(dir.join("logs/build.log"), &long).unwrap();
        let report = Report::new("t", "gateway end-to-end", "r", &plan, &run);
        report.write(&dir).unwrap();
        let page = std::fs::read_to_string(dir.join("report.html")).unwrap();

        let failure = page.find("<div class=\"failure\">").expect("a failure box");
        assert!(failure < page.find("<svg").unwrap(), "the failure comes before the timeline");
        assert!(page[failure..].contains("ERROR: &lt;node&gt; &amp; &quot;co&quot; failed"), "the log tail, escaped");
        let bar = page.find(r#"data-log="log-cluster"><title>infra/cluster failed: 1.5s from 0ms (api)</title>"#);
        assert!(bar.is_some(), "the failed bar opens its log and says its times: {page}");
        assert!(page.contains(r#"<details id="log-cluster"><summary>infra/cluster (failed, 1.5s)</summary>"#));
        assert!(page.contains(r#"<details id="log-deploy"><summary>infra/deploy (not started)</summary>"#));
        assert!(
            page.contains("the last 64 KiB of 204 KiB") && page.contains("line 19999\n") && !page.contains("line 0\n")
        );
        for outside in ["http:", "https:", "src=", "<link", "@import", "url("] {
            assert!(!page.contains(outside), "the page refers to something outside it: {outside}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_run_is_compared_with_the_previous_ones_only_when_there_were_some() {
        let mut tasks: Vec<Task> = plan(&[("rollout", &[]), ("quick", &[])]).tasks().to_vec();
        tasks[0].estimate = ms(2400);
        tasks[0].estimate_from = Some(5);
        let p = Plan::new(tasks).unwrap();
        let run = run_of(vec![record(0, 9800), record(0, 1200)]);
        let first = Report::new("t", "t", "r", &p, &run).with_usual(None);
        assert_eq!(first.json()["history"], serde_json::Value::Null);
        assert!(!first.terminal(Console::Plain).contains("usually 12"), "{}", first.terminal(Console::Plain));
        let later = Report::new("t", "t", "r", &p, &run).with_usual(Some((ms(12_000), 5)));
        let line =
            "took 9.8s, usually 12.0s over the last 5 runs here (-2.2s); moved most: rollout 2.4s -> 9.8s (+7.4s)";
        assert!(later.terminal(Console::Plain).contains(&format!("  {line}\n")), "{}", later.terminal(Console::Plain));
        assert!(later.markdown().contains(&format!("Against the previous runs: {line}.")), "{}", later.markdown());
        let view = RunView::from_json(&later.json()).unwrap();
        let dir = scratch("compared");
        assert!(html::run_page(&view, &dir).contains(&html::escape(line)));
        std::fs::remove_dir_all(&dir).unwrap();
        // A failed run is not compared: it stopped early.
        let mut failed = run_of(vec![record(0, 9800), record(0, 1200)]);
        failed.tasks[1].status = Status::Failed;
        let report = Report::new("t", "t", "r", &p, &failed).with_usual(Some((ms(12_000), 5)));
        assert_eq!(report.json()["history"], serde_json::Value::Null);
    }
}
