//! What the rounds measured: per strategy the median makespan and the scheduler's overhead per
//! task, the critical path of the profile, the ratios and their targets.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;

use super::profile::Targets;
use crate::phases::bound::Best;
use crate::phases::{Kind, Plan, RunRecord, Strategy};

/// The strategies in the order rounds run them.
pub const STRATEGIES: [Strategy; 3] = [Strategy::Sequential, Strategy::Phased, Strategy::Dag];

/// One strategy over its rounds.
#[derive(Debug)]
pub struct Row {
    pub strategy: Strategy,
    pub makespans: Vec<Duration>,
    pub median: Duration,
    /// The makespan with no overhead at all (and no limit on parallel builds).
    pub ideal: Duration,
    /// Mean of each task's start minus the moment it could start.
    pub dispatch: Duration,
    /// Mean of each task's elapsed time minus its duration in the profile, in seconds.
    pub execution: f64,
}

/// A ratio and the target it should reach, if the profile sets one.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    pub name: &'static str,
    pub value: f64,
    pub bound: Option<Bound>,
}

#[derive(Debug, Clone, Copy)]
pub enum Bound {
    AtLeast(f64),
    AtMost(f64),
}

impl Check {
    pub fn ok(&self) -> Option<bool> {
        self.bound.map(|bound| match bound {
            Bound::AtLeast(min) => self.value >= min,
            Bound::AtMost(max) => self.value <= max,
        })
    }

    fn target(&self) -> String {
        match self.bound {
            Some(Bound::AtLeast(min)) => format!("(target >= {min})"),
            Some(Bound::AtMost(max)) => format!("(target <= {max})"),
            None => "(no target)".to_owned(),
        }
    }

    fn verdict(&self) -> &'static str {
        match self.ok() {
            Some(true) => "ok",
            Some(false) => "MISSED",
            None => "",
        }
    }
}

pub struct Summary {
    /// `key: value` lines describing the run (profile, scale, machine...).
    pub about: Vec<(&'static str, String)>,
    pub rows: Vec<Row>,
    pub critical: Vec<String>,
    pub critical_length: Duration,
    pub checks: Vec<Check>,
    /// Every round's task timings, for bench.json.
    pub rounds: Vec<serde_json::Value>,
}

impl Summary {
    /// `plan` carries the scaled durations as its estimates; `runs` are the rounds in order.
    /// `best` is the shortest makespan the pools allow, to measure dag against.
    pub fn new(
        about: Vec<(&'static str, String)>,
        plan: &Plan,
        runs: &[RunRecord],
        targets: &Targets,
        best: Best,
    ) -> Summary {
        let (chain, critical_length) = plan.critical_path_estimate();
        let rows: Vec<Row> = STRATEGIES
            .iter()
            .map(|&strategy| {
                let runs: Vec<&RunRecord> = runs.iter().filter(|r| r.strategy == strategy).collect();
                // The setup and the specs, as the profile's timings are: teardown comes after.
                let makespans: Vec<Duration> = runs.iter().map(|r| r.up).collect();
                let (mut dispatch, mut execution) = (Vec::new(), Vec::new());
                for run in &runs {
                    let ready = ready_times(plan, run);
                    for (i, record) in run.tasks.iter().enumerate() {
                        if let (Some(start), Some(ready), Some(elapsed)) = (record.start, ready[i], record.elapsed()) {
                            dispatch.push(start.saturating_sub(ready));
                            execution.push(elapsed.as_secs_f64() - plan.tasks()[i].estimate.as_secs_f64());
                        }
                    }
                }
                let ideal = match strategy {
                    Strategy::Sequential => plan.sum_of_estimates(),
                    Strategy::Phased => plan.phased_estimate(),
                    Strategy::Dag => critical_length,
                };
                Row {
                    strategy,
                    median: median(&makespans),
                    makespans,
                    ideal,
                    dispatch: dispatch.iter().sum::<Duration>() / dispatch.len().max(1) as u32,
                    execution: execution.iter().sum::<f64>() / execution.len().max(1) as f64,
                }
            })
            .collect();
        let checks = checks(rows[0].median, rows[1].median, rows[2].median, critical_length, best.duration(), targets);
        let secs = |d: Option<Duration>| d.map(|d| round3(d.as_secs_f64()));
        let rounds = runs
            .iter()
            .enumerate()
            .map(|(n, run)| {
                let tasks: Vec<_> = plan
                    .tasks()
                    .iter()
                    .zip(&run.tasks)
                    .map(|(task, r)| {
                        json!({
                            "id": task.id,
                            "status": r.status,
                            "start_s": secs(r.start),
                            "end_s": secs(r.end),
                            "expected_s": secs(Some(task.estimate)),
                        })
                    })
                    .collect();
                json!({"round": n + 1, "strategy": run.strategy, "makespan_s": secs(Some(run.up)), "tasks": tasks})
            })
            .collect();
        let critical = chain.iter().map(|&i| plan.tasks()[i].id.clone()).collect();
        Summary { about, rows, critical, critical_length, checks, rounds }
    }

    pub fn terminal(&self) -> String {
        let mut out = String::new();
        for (key, value) in &self.about {
            let _ = writeln!(out, "{key}: {value}");
        }
        let _ = writeln!(
            out,
            "\n{:<11} {:>8} {:>8} {:>8} {:>8} {:>11} {:>13} {:>13}",
            "strategy", "median", "min", "max", "ideal", "over ideal", "dispatch/task", "overhead/task"
        );
        for row in &self.rows {
            let cells = row.cells();
            let _ = writeln!(
                out,
                "{:<11} {:>8} {:>8} {:>8} {:>8} {:>11} {:>13} {:>13}",
                cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6], cells[7]
            );
        }
        let _ =
            writeln!(out, "\ncritical path {:.3}s: {}", self.critical_length.as_secs_f64(), self.critical.join(" -> "));
        for check in &self.checks {
            let _ = writeln!(out, "{:<18} {:.3}  {} {}", check.name, check.value, check.target(), check.verdict());
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = String::from("# Benchmark\n\n");
        for (key, value) in &self.about {
            let _ = writeln!(out, "- {key}: {value}");
        }
        let _ = writeln!(
            out,
            "\n| strategy | median | min | max | ideal | over ideal | dispatch/task | overhead/task |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|"
        );
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.cells().join(" | "));
        }
        let _ = writeln!(
            out,
            "\nCritical path {:.3}s: {}.\n\n| ratio | value | target | |\n|---|---:|---|---|",
            self.critical_length.as_secs_f64(),
            self.critical.join(" → ")
        );
        for check in &self.checks {
            let _ = writeln!(out, "| {} | {:.3} | {} | {} |", check.name, check.value, check.target(), check.verdict());
        }
        out
    }

    pub fn json(&self) -> serde_json::Value {
        let about: serde_json::Map<String, serde_json::Value> =
            self.about.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        let strategies: Vec<_> = self
            .rows
            .iter()
            .map(|row| {
                json!({
                    "strategy": row.strategy,
                    "makespans_s": row.makespans.iter().map(|d| round3(d.as_secs_f64())).collect::<Vec<_>>(),
                    "median_s": round3(row.median.as_secs_f64()),
                    "ideal_s": round3(row.ideal.as_secs_f64()),
                    "dispatch_ms_per_task": round3(row.dispatch.as_secs_f64() * 1000.0),
                    "overhead_ms_per_task": round3(row.execution * 1000.0),
                })
            })
            .collect();
        let checks: Vec<_> = self
            .checks
            .iter()
            .map(|c| {
                let (min, max) = match c.bound {
                    Some(Bound::AtLeast(min)) => (Some(min), None),
                    Some(Bound::AtMost(max)) => (None, Some(max)),
                    None => (None, None),
                };
                json!({"ratio": c.name, "value": round3(c.value), "min": min, "max": max, "ok": c.ok()})
            })
            .collect();
        json!({
            "schema": 1,
            "about": about,
            "strategies": strategies,
            "critical_path": self.critical,
            "critical_path_s": round3(self.critical_length.as_secs_f64()),
            "ratios": checks,
            "rounds": self.rounds,
        })
    }
}

impl Row {
    fn cells(&self) -> [String; 8] {
        let s = |d: Duration| format!("{:.3}s", d.as_secs_f64());
        let min = self.makespans.iter().min().copied().unwrap_or_default();
        let max = self.makespans.iter().max().copied().unwrap_or_default();
        let over = 100.0 * (self.median.as_secs_f64() / self.ideal.as_secs_f64() - 1.0);
        [
            self.strategy.name().to_owned(),
            s(self.median),
            s(min),
            s(max),
            s(self.ideal),
            format!("{over:+.1}%"),
            format!("{:.1} ms", self.dispatch.as_secs_f64() * 1000.0),
            format!("{:.1} ms", self.execution * 1000.0),
        ]
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The middle value; the mean of the two middle ones for an even count.
pub fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    match sorted.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    }
}

/// sequential/dag, phased/dag and dag/critical-path, with the profile's targets.
pub fn checks(
    sequential: Duration,
    phased: Duration,
    dag: Duration,
    critical: Duration,
    best: Duration,
    t: &Targets,
) -> Vec<Check> {
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    vec![
        Check {
            name: "sequential/dag",
            value: ratio(sequential, dag),
            bound: t.min_sequential_over_dag.map(Bound::AtLeast),
        },
        Check { name: "phased/dag", value: ratio(phased, dag), bound: t.min_phased_over_dag.map(Bound::AtLeast) },
        Check {
            name: "dag/critical-path",
            value: ratio(dag, critical),
            bound: t.max_dag_over_critical_path.map(Bound::AtMost),
        },
        Check { name: "dag/best", value: ratio(dag, best), bound: t.max_dag_over_best.map(Bound::AtMost) },
    ]
}

/// For each task of a run, the moment it could have started: when its dependencies had ended
/// and, under phased, every earlier stage; under sequential, the task before it; for teardown,
/// every other task. A build task
/// that found all `jobs` build slots taken could start when the slot it got was freed.
pub fn ready_times(plan: &Plan, run: &RunRecord) -> Vec<Option<Duration>> {
    let (tasks, records) = (plan.tasks(), &run.tasks);
    (0..plan.len())
        .map(|i| {
            let start = records[i].start?;
            let latest_end = |pick: &dyn Fn(usize) -> bool| {
                (0..plan.len()).filter(|&j| j != i && pick(j)).filter_map(|j| records[j].end).max().unwrap_or_default()
            };
            let mut ready = latest_end(&|j| plan.deps(i).contains(&j));
            if tasks[i].is_teardown() {
                // Teardown waits for every other task.
                ready = ready.max(run.up);
            }
            ready = ready.max(match run.strategy {
                Strategy::Dag => Duration::ZERO,
                Strategy::Phased => latest_end(&|j| tasks[j].stage < tasks[i].stage),
                Strategy::Sequential => latest_end(&|j| records[j].end.is_some_and(|end| end <= start)),
            });
            if tasks[i].kind == Kind::Build {
                let holders: Vec<usize> = (0..plan.len())
                    .filter(|&j| j != i && tasks[j].kind == Kind::Build)
                    .filter(|&j| {
                        records[j].start.is_some_and(|s| s < start) && records[j].end.is_some_and(|e| e > ready)
                    })
                    .collect();
                if holders.len() >= run.jobs {
                    ready = ready.max(latest_end(&|j| holders.contains(&j) && records[j].end.unwrap() <= start));
                }
            }
            Some(ready)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::{Phase, Status, Task, TaskRecord};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn record(start: u64, end: u64) -> TaskRecord {
        TaskRecord { status: Status::Ok, start: Some(ms(start)), end: Some(ms(end)), ..TaskRecord::default() }
    }

    fn run(strategy: Strategy, jobs: usize, tasks: Vec<TaskRecord>) -> RunRecord {
        let makespan = tasks.iter().filter_map(|t| t.end).max().unwrap_or_default();
        let up = makespan;
        RunRecord { strategy, jobs, started_at: jiff::Timestamp::UNIX_EPOCH, up, makespan, interrupted: false, tasks }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[ms(30), ms(10), ms(20)]), ms(20));
        assert_eq!(median(&[ms(40), ms(10), ms(20), ms(30)]), ms(25));
        assert_eq!(median(&[ms(7)]), ms(7));
        assert_eq!(median(&[]), Duration::ZERO);
    }

    #[test]
    fn ratios_divide_the_right_way_and_meet_their_bounds() {
        let targets = Targets {
            max_dag_over_critical_path: Some(1.03),
            max_dag_over_best: Some(1.03),
            min_sequential_over_dag: Some(1.65),
            min_phased_over_dag: Some(1.2),
        };
        let met = checks(ms(7600), ms(6400), ms(4250), ms(4200), ms(4225), &targets);
        let values: Vec<(&str, f64)> = met.iter().map(|c| (c.name, (c.value * 1000.0).round() / 1000.0)).collect();
        assert_eq!(
            values,
            [("sequential/dag", 1.788), ("phased/dag", 1.506), ("dag/critical-path", 1.012), ("dag/best", 1.006)]
        );
        assert!(met.iter().all(|c| c.ok() == Some(true)));
        let slow = checks(ms(7600), ms(6400), ms(4400), ms(4200), ms(4200), &targets);
        assert_eq!(slow[2].ok(), Some(false), "1.048 > 1.03");
        assert_eq!(slow[2].verdict(), "MISSED");
        assert_eq!(checks(ms(2), ms(2), ms(1), ms(1), ms(1), &Targets::default())[0].ok(), None);
    }

    fn plan(spec: &[(&str, Kind, u8, &[&str])]) -> Plan {
        Plan::new(
            spec.iter()
                .map(|(id, kind, stage, deps)| Task::new(*id, Phase::Infra, *kind).stage(*stage).after(deps))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn ready_is_the_last_dependency_end_under_dag() {
        let plan = plan(&[("a", Kind::Api, 1, &[]), ("b", Kind::Api, 1, &[]), ("c", Kind::Api, 1, &["a", "b"])]);
        let ready = ready_times(&plan, &run(Strategy::Dag, 2, vec![record(1, 100), record(2, 300), record(303, 400)]));
        assert_eq!(ready, [Some(ms(0)), Some(ms(0)), Some(ms(300))]);
    }

    #[test]
    fn ready_waits_for_the_barrier_under_phased_and_the_previous_task_under_sequential() {
        let plan = plan(&[("a", Kind::Api, 1, &[]), ("b", Kind::Api, 1, &[]), ("c", Kind::Api, 2, &["a"])]);
        let phased = run(Strategy::Phased, 2, vec![record(0, 100), record(0, 300), record(302, 400)]);
        assert_eq!(ready_times(&plan, &phased)[2], Some(ms(300)));
        let sequential = run(Strategy::Sequential, 2, vec![record(0, 100), record(101, 300), record(304, 400)]);
        assert_eq!(ready_times(&plan, &sequential), [Some(ms(0)), Some(ms(100)), Some(ms(300))]);
    }

    #[test]
    fn teardown_is_ready_when_every_other_task_has_ended() {
        let tasks = vec![
            Task::new("a", Phase::Infra, Kind::Api),
            Task::new("b", Phase::Infra, Kind::Api),
            Task::teardown("delete", Kind::Process, crate::phases::When::Always),
        ];
        let plan = Plan::new(tasks).unwrap();
        let mut run = run(Strategy::Dag, 2, vec![record(0, 100), record(0, 300), record(301, 320)]);
        run.up = ms(300);
        assert_eq!(ready_times(&plan, &run)[2], Some(ms(300)));
    }

    #[test]
    fn a_build_waiting_for_a_slot_is_ready_when_the_slot_frees() {
        let plan = plan(&[
            ("bin", Kind::Build, 1, &[]),
            ("img-a", Kind::Build, 1, &["bin"]),
            ("img-b", Kind::Build, 1, &["bin"]),
            ("specs", Kind::Build, 1, &["bin"]),
        ]);
        let records = vec![record(0, 100), record(101, 200), record(101, 250), record(201, 300)];
        let two = ready_times(&plan, &run(Strategy::Dag, 2, records.clone()));
        assert_eq!(two[3], Some(ms(200)), "img-a freed the slot");
        let three = ready_times(&plan, &run(Strategy::Dag, 3, records));
        assert_eq!(three[3], Some(ms(100)), "a free slot: waiting was the scheduler's");
    }

    #[test]
    fn summary_reports_overheads_against_the_profile() {
        let mut tasks =
            vec![Task::new("a", Phase::Infra, Kind::Api), Task::new("b", Phase::Infra, Kind::Api).after(&["a"])];
        tasks[0].estimate = ms(100);
        tasks[1].estimate = ms(200);
        let plan = Plan::new(tasks).unwrap();
        let runs: Vec<RunRecord> =
            STRATEGIES.iter().map(|&s| run(s, 2, vec![record(2, 104), record(108, 310)])).collect();
        let summary =
            Summary::new(vec![("profile", "p".into())], &plan, &runs, &Targets::default(), Best::Exact(ms(300)));
        let dag = &summary.rows[2];
        assert_eq!(dag.median, ms(310));
        assert_eq!(dag.ideal, ms(300));
        assert_eq!(dag.dispatch, ms(3), "(2 + 4) / 2");
        assert!((dag.execution - 0.002).abs() < 1e-9, "{}", dag.execution);
        assert_eq!(summary.critical, ["a", "b"]);
        assert!(summary.terminal().contains("dag/critical-path  1.033  (no target)"), "{}", summary.terminal());
        assert_eq!(summary.json()["strategies"][2]["dispatch_ms_per_task"], 3.0);
    }
}
