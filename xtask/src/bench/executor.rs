//! The bench's executor: a plan's real commands, run by the real process runner, resolve to a
//! shim that sleeps; Kubernetes steps sleep on tokio. Each task spends its estimate (the
//! profile's scaled duration) split evenly over its commands and API steps.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, bail};
use camino::Utf8Path;

use crate::phases::{Executor, Outcome, Plan, Step, Task, TaskCx, log_line, run_command};

/// How the shim learns how long to sleep, in seconds.
const SLEEP_VAR: &str = "REMEDY_BENCH_SLEEP";

pub struct BenchExecutor {
    /// The shim directory, then the inherited PATH (the shim needs `sleep`).
    path: String,
}

impl BenchExecutor {
    /// Links `shim` into `dir` under the name of every program the plan runs, so that with `dir`
    /// first on PATH each of them is the shim.
    pub fn new(plan: &Plan, shim: &Utf8Path, dir: &Utf8Path) -> anyhow::Result<BenchExecutor> {
        if !shim.is_file() {
            bail!("the bench's shim {shim} is missing");
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {dir}"))?;
        for program in programs(plan) {
            if program.contains('/') {
                bail!("the plan runs `{program}` by its path; the bench can only stand in for programs on PATH");
            }
            let link = dir.join(program);
            std::os::unix::fs::symlink(shim, &link).with_context(|| format!("cannot link {link} to {shim}"))?;
        }
        let inherited = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(std::iter::once(dir.into()).chain(std::env::split_paths(&inherited)))?;
        let path = path.into_string().map_err(|_| anyhow::format_err!("PATH is not UTF-8"))?;
        Ok(BenchExecutor { path })
    }
}

/// The programs of every command the plan runs, probes included.
fn programs(plan: &Plan) -> BTreeSet<&str> {
    let commands = plan.tasks().iter().flat_map(|t| &t.steps).filter_map(Step::command);
    commands.map(|cmd| cmd.program.as_str()).collect()
}

/// A task's estimate divided among the steps that take time: commands and API calls.
fn share(task: &Task) -> Duration {
    let timed = task.steps.iter().filter(|s| matches!(s, Step::Run(_) | Step::Kube(_))).count();
    task.estimate / timed.max(1) as u32
}

impl Executor for BenchExecutor {
    fn run_blocking(&self, task: &Task, cx: &TaskCx) -> anyhow::Result<Outcome> {
        let share = format!("{:.6}", share(task).as_secs_f64());
        for step in &task.steps {
            match step {
                Step::Run(cmd) => {
                    let cmd = cmd.clone().env("PATH", &self.path).env(SLEEP_VAR, &share);
                    run_command(&cmd, &cx.log, &cx.cancel)?;
                }
                // A cold run: nothing is cached, everything is there to delete, and no file needs
                // hashing, copying or writing.
                Step::Tag { .. }
                | Step::Set { .. }
                | Step::Copy { .. }
                | Step::Write { .. }
                | Step::Remove { .. }
                | Step::Prune { .. }
                | Step::Loadable { .. }
                | Step::SkipIf(_)
                | Step::OnlyIf(_)
                | Step::Try(_)
                | Step::SkipIfStamped { .. }
                | Step::Stamp { .. } => {}
                Step::Kube(op) => bail!("{}: Kubernetes step `{op}` in a {} task", task.id, task.kind.name()),
            }
        }
        Ok(Outcome::Done)
    }

    async fn run_async(&self, task: &Task, cx: &TaskCx) -> anyhow::Result<Outcome> {
        let share = share(task);
        for step in &task.steps {
            match step {
                Step::Kube(op) => {
                    log_line(&cx.log, &format!("kube: {op} (simulated: {:.3}s)", share.as_secs_f64()))?;
                    tokio::time::sleep(share).await;
                }
                Step::Set { .. } => {}
                other => bail!("{}: step `{other}` does not belong in an API task", task.id),
            }
        }
        Ok(Outcome::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::{Command, Kind, KubeOp, Phase};

    #[test]
    fn the_estimate_is_split_over_commands_and_api_steps_only() {
        let task = Task::new("load", Phase::Images, Kind::Process)
            .estimate(12)
            .tag("TAG", &[], &[])
            .run(Command::new("docker", ["save"]))
            .run(Command::new("kind", ["load"]));
        assert_eq!(share(&task), Duration::from_secs(6));
        let api = Task::new("ns", Phase::Cluster, Kind::Api).estimate(3).kube(KubeOp::Namespace);
        assert_eq!(share(&api), Duration::from_secs(3));
    }
}
