//! `cargo xtask bench`: replays a timing profile through a service's real plan, the real
//! scheduler and the real process runner, with every external program standing in as a shim
//! that sleeps the profile's durations scaled down, and compares the three strategies.

mod executor;
mod profile;
mod summary;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use camino::{Utf8Path, Utf8PathBuf};
use tokio_util::sync::CancellationToken;

use crate::flags;
use crate::phases::{self, Schedule, progress::Plain};
use executor::BenchExecutor;
use profile::Profile;
use summary::{STRATEGIES, Summary};

/// The profile `cargo xtask bench` replays unless told otherwise.
const DEFAULT_PROFILE: &str = "test/bench/profiles/seed-gateway.toml";

impl flags::Bench {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let cwd = Utf8PathBuf::try_from(std::env::current_dir()?)?;
        let root = crate::project_root();
        if !(self.scale.is_finite() && self.scale > 0.0) {
            bail!("--scale {} is not a positive number of seconds per profile minute; try --scale 1", self.scale);
        }
        let out = match &self.out {
            Some(dir) => cwd.join(dir),
            None => root.join(format!("target/bench/{}", jiff::Zoned::now().strftime("%Y%m%d-%H%M%S"))),
        };
        if out.exists() {
            bail!("{out} already exists; pass a new --out DIR");
        }
        let profile = match &self.profile_from {
            Some(report) => {
                let profile = Profile::from_report(&cwd.join(report))?;
                std::fs::create_dir_all(&out).with_context(|| format!("cannot create {out}"))?;
                let path = out.join("profile.toml");
                std::fs::write(&path, profile.to_toml()).with_context(|| format!("cannot write {path}"))?;
                eprintln!("profile from {report}: {path}");
                Profile::load(&path)?
            }
            None => Profile::load(&self.profile.as_ref().map_or_else(|| root.join(DEFAULT_PROFILE), |p| cwd.join(p)))?,
        };
        let all_jobs: Vec<usize> = if self.jobs.is_empty() {
            vec![phases::default_jobs()]
        } else {
            self.jobs.iter().map(|&j| usize::from(j)).collect()
        };
        let mut command = format!("cargo xtask bench --rounds {} --scale {}", self.rounds, self.scale);
        if let Some(path) = &self.profile {
            command.push_str(&format!(" --profile {path}"));
        }
        if let Some(report) = &self.profile_from {
            command.push_str(&format!(" --profile-from {report}"));
        }
        if !self.jobs.is_empty() {
            let list: Vec<String> = self.jobs.iter().map(u16::to_string).collect();
            command.push_str(&format!(" --jobs {}", list.join(",")));
        }
        for &jobs in &all_jobs {
            let dir = if all_jobs.len() == 1 { out.clone() } else { out.join(format!("jobs-{jobs}")) };
            let summary = bench(&profile, usize::from(self.rounds), self.scale, jobs, &dir, &command)?;
            println!("{}", summary.terminal());
            println!("report: {}\n", dir.join("bench.md"));
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Runs `rounds` rounds of each strategy, alternating, and writes bench.json and bench.md into
/// `out`. Errors (a bad profile, a failed round) are errors; missed targets are not.
fn bench(
    profile: &Profile,
    rounds: usize,
    scale: f64,
    jobs: usize,
    out: &Utf8Path,
    command: &str,
) -> anyhow::Result<Summary> {
    let plan = profile.apply(&profile.real_plan(&out.join("run"))?, scale)?;
    let shim = crate::project_root().join("test/bench/shim/shim");
    let executor = Arc::new(BenchExecutor::new(&plan, &shim, &out.join("shim"))?);
    let plan = Arc::new(plan);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let started_at = jiff::Zoned::now();
    let total = rounds * STRATEGIES.len();
    let mut runs = Vec::with_capacity(total);
    for n in 0..total {
        let strategy = STRATEGIES[n % STRATEGIES.len()];
        let logs = out.join(format!("rounds/{:02}-{}", n + 1, strategy.name()));
        std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {logs}"))?;
        let mut quiet = Plain::new(Box::new(std::io::sink()));
        let cancel = CancellationToken::new();
        let schedule = Schedule::new(strategy, jobs);
        let record = runtime.block_on(phases::run(plan.clone(), executor.clone(), schedule, &logs, &mut quiet, cancel));
        if let Some(summary) = record.failure_summary() {
            let first = plan.tasks().iter().zip(&record.tasks).find_map(|(t, r)| Some((t, r.error.as_ref()?)));
            let cause = first.map(|(t, e)| format!(": {}: {e}", t.id)).unwrap_or_default();
            bail!("round {} ({}) failed: {summary}{cause} (logs in {logs})", n + 1, strategy.name());
        }
        eprintln!("round {} of {total}: {:<10} {:.3}s", n + 1, strategy.name(), record.up.as_secs_f64());
        runs.push(record);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let about = vec![
        ("command", command.to_owned()),
        ("date", started_at.strftime("%Y-%m-%d %H:%M %Z").to_string()),
        (
            "profile",
            format!(
                "{} ({} on {}, {})",
                shown(&profile.path),
                profile.service.name,
                backend(profile),
                profile.engine.program()
            ),
        ),
        ("plan", format!("{} tasks, jobs {jobs}", plan.len())),
        ("best", {
            let best = phases::bound::best(&plan, jobs);
            format!("{:.3}s, {}", best.duration().as_secs_f64(), best.describe())
        }),
        ("scale", format!("{scale} s per profile minute, {rounds} rounds per strategy")),
        ("machine", format!("{cores} cores")),
    ];
    let summary = Summary::new(about, &plan, &runs, &profile.targets, phases::bound::best(&plan, jobs));
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {path}"))
    };
    write("bench.json", serde_json::to_string_pretty(&summary.json())? + "\n")?;
    write("bench.md", summary.markdown())?;
    Ok(summary)
}

fn backend(profile: &Profile) -> &'static str {
    match profile.backend {
        flags::ClusterMode::Kind => "kind",
        flags::ClusterMode::Existing => "an existing cluster",
    }
}

/// A path inside the workspace relative to its root, others as they are.
fn shown(path: &Utf8Path) -> &Utf8Path {
    path.strip_prefix(crate::project_root()).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::Strategy;

    #[test]
    fn the_seed_profile_runs_end_to_end_at_a_small_scale() {
        let out = Utf8PathBuf::from(std::env::temp_dir().to_str().unwrap())
            .join(format!("xtask-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let profile = Profile::load(&crate::project_root().join(DEFAULT_PROFILE)).unwrap();
        let summary = bench(&profile, 1, 0.05, 2, &out, "test").unwrap();

        let names: Vec<Strategy> = summary.rows.iter().map(|r| r.strategy).collect();
        assert_eq!(names, [Strategy::Sequential, Strategy::Phased, Strategy::Dag]);
        let [sequential, phased, dag] = [0, 1, 2].map(|i| summary.rows[i].median);
        assert!(dag >= summary.critical_length, "{dag:?} < {:?}", summary.critical_length);
        assert!(sequential >= dag && phased >= dag, "{sequential:?} {phased:?} {dag:?}");
        assert_eq!(summary.critical.first().map(String::as_str), Some("cluster"));
        assert_eq!(summary.critical.last().map(String::as_str), Some("specs"));
        for row in &summary.rows {
            assert!(row.median >= row.ideal, "{row:?}");
        }
        let text = summary.terminal();
        for line in ["sequential/dag", "phased/dag", "dag/critical-path", "dag/best"] {
            assert!(text.contains(line), "{text}");
        }
        // The real commands went through the shim.
        let log = std::fs::read_to_string(out.join("rounds/03-dag/cluster.log")).unwrap();
        assert!(log.contains("shim: kind create cluster --name remedy-bench"), "{log}");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).unwrap()).unwrap();
        assert_eq!(json["rounds"].as_array().unwrap().len(), 3);
        assert!(std::fs::read_to_string(out.join("bench.md")).unwrap().contains("| dag |"));
        std::fs::remove_dir_all(&out).unwrap();
    }
}
