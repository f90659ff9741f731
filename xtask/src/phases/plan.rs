//! Tasks, their steps, and the plan: a DAG validated when it is built.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use anyhow::{bail, format_err};
use camino::Utf8PathBuf;
use serde::Serialize;

use super::scheduler::Strategy;

/// The reporting label of a task, in the order phases usually happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Cluster,
    Images,
    Infra,
    Services,
    Tests,
}

impl Phase {
    pub const ALL: [Phase; 5] = [Phase::Cluster, Phase::Images, Phase::Infra, Phase::Services, Phase::Tests];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Cluster => "cluster",
            Phase::Images => "images",
            Phase::Infra => "infra",
            Phase::Services => "services",
            Phase::Tests => "tests",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a task runs: image builds on the `--jobs` rayon pool, other external commands on a
/// process pool, Kubernetes API work on tokio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Build,
    Process,
    Api,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Build => "build",
            Kind::Process => "process",
            Kind::Api => "api",
        }
    }
}

/// An external command, run as a child process in its own process group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Command {
    pub fn new(program: impl Into<String>, args: impl IntoIterator<Item = impl Into<String>>) -> Command {
        Command { program: program.into(), args: args.into_iter().map(Into::into).collect(), env: Vec::new() }
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Command {
        self.env.push((key.into(), value.into()));
        self
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, value) in &self.env {
            write!(f, "{key}={} ", quote(value))?;
        }
        f.write_str(&quote(&self.program))?;
        for arg in &self.args {
            write!(f, " {}", quote(arg))?;
        }
        Ok(())
    }
}

/// Quotes a word for display the way a POSIX shell would need it.
fn quote(word: &str) -> String {
    let plain = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+${}<>".contains(c));
    if plain { word.to_owned() } else { format!("'{}'", word.replace('\'', r"'\''")) }
}

/// Kubernetes API work, carried out through kube-rs by the executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeOp {
    /// Server-side apply of every document of a manifest file, placeholders filled in.
    Apply { manifest: Utf8PathBuf },
    /// Create the run's namespace, labelled with the run id.
    Namespace,
    /// Create a Secret in the run's namespace: `literal` keys as given, `random` keys with a
    /// fresh random value that is never shown.
    Secret { name: String, literal: Vec<(String, String)>, random: Vec<String> },
    /// Wait until these CustomResourceDefinitions are Established.
    CrdsEstablished { names: Vec<String> },
    /// Wait until a Deployment or StatefulSet has rolled out.
    Rollout { workload: Workload, name: String, timeout: Duration },
    /// Wait until a Job has completed; a failed Job is an error.
    JobComplete { job: String, timeout: Duration },
    /// Check that the API server answers, and which version it runs.
    ServerVersion,
    /// Make a Service port reachable from the host through a NodePort Service `<service>-e2e`
    /// (the node port fixed when given, else allocated), and set the run variable `var` to its
    /// URL.
    Expose { service: String, port: String, node_port: Option<u16>, url: Option<String>, var: String },
}

impl fmt::Display for KubeOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KubeOp::Apply { manifest } => write!(f, "server-side apply {manifest}"),
            KubeOp::Namespace => write!(f, "create the namespace"),
            KubeOp::Secret { name, literal, random } => {
                let keys: Vec<&str> = literal.iter().map(|(k, _)| k.as_str()).collect();
                write!(f, "create Secret {name} ({}; generated: {})", keys.join(", "), random.join(", "))
            }
            KubeOp::CrdsEstablished { names } => {
                write!(f, "wait until established: {}", names.join(", "))
            }
            KubeOp::Rollout { workload, name, timeout } => {
                write!(f, "wait for rollout of {}/{name} (timeout {}s)", workload.name(), timeout.as_secs())
            }
            KubeOp::JobComplete { job, timeout } => {
                write!(f, "wait for job/{job} to complete (timeout {}s)", timeout.as_secs())
            }
            KubeOp::ServerVersion => write!(f, "check the API server answers (GET /version)"),
            KubeOp::Expose { service, port, node_port, url, var } => {
                write!(f, "expose service/{service} port {port} as NodePort service/{service}-e2e")?;
                if let Some(node_port) = node_port {
                    write!(f, " (node port {node_port})")?;
                }
                match url {
                    Some(url) => write!(f, "; {var}={url}"),
                    None => write!(f, "; {var}=http://<node InternalIP>:<node port>"),
                }
            }
        }
    }
}

/// The kinds of workload a rollout waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Deployment,
    StatefulSet,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Deployment => "deployment",
            Workload::StatefulSet => "statefulset",
        }
    }
}

/// One step of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Run(Command),
    Kube(KubeOp),
    /// Copy a file the xtask made (a binary, a generated config) to where a command reads it.
    Copy {
        from: Utf8PathBuf,
        to: Utf8PathBuf,
    },
    /// Set the run variable `var` (used as `${var}` by later steps and tasks) to a content hash
    /// of these files (directories: every file under them) and strings (`${...}` filled in).
    Tag {
        var: String,
        files: Vec<Utf8PathBuf>,
        strings: Vec<String>,
    },
    /// When this probe succeeds the result already exists: skip the task's remaining steps and
    /// report it cached.
    SkipIf(Command),
    /// When the file `stamp` holds `value`, these inputs already succeeded: skip the task's
    /// remaining steps and report it cached.
    SkipIfStamped {
        stamp: Utf8PathBuf,
        value: String,
    },
    /// Write `value` to the file `stamp`: the task succeeded with these inputs.
    Stamp {
        stamp: Utf8PathBuf,
        value: String,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Run(cmd) => write!(f, "$ {cmd}"),
            Step::Kube(op) => write!(f, "kube: {op}"),
            Step::Copy { from, to } => write!(f, "copy {from} -> {to}"),
            Step::Tag { var, files, strings } => {
                let inputs: Vec<&str> =
                    files.iter().map(|f| f.as_str()).chain(strings.iter().map(String::as_str)).collect();
                write!(f, "{var} = content hash of {}", inputs.join(", "))
            }
            Step::SkipIf(probe) => write!(f, "cached if this succeeds: $ {probe}"),
            Step::SkipIfStamped { stamp, value } => write!(f, "cached if {stamp} holds {value}"),
            Step::Stamp { stamp, value } => write!(f, "write {value} to {stamp}"),
        }
    }
}

/// A unit of work: an id, a phase label, where it runs, what it waits for and what it does.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub phase: Phase,
    pub kind: Kind,
    /// The barrier group under `--strategy phased` (1 first).
    pub stage: u8,
    pub deps: Vec<String>,
    /// Expected duration, for the critical path estimate.
    pub estimate: Duration,
    pub steps: Vec<Step>,
}

impl Task {
    pub fn new(id: impl Into<String>, phase: Phase, kind: Kind) -> Task {
        Task { id: id.into(), phase, kind, stage: 1, deps: Vec::new(), estimate: Duration::ZERO, steps: Vec::new() }
    }

    pub fn after(mut self, deps: &[&str]) -> Task {
        self.deps.extend(deps.iter().map(|d| d.to_string()));
        self
    }

    pub fn stage(mut self, stage: u8) -> Task {
        self.stage = stage;
        self
    }

    pub fn estimate(mut self, secs: u64) -> Task {
        self.estimate = Duration::from_secs(secs);
        self
    }

    pub fn run(mut self, cmd: Command) -> Task {
        self.steps.push(Step::Run(cmd));
        self
    }

    pub fn kube(mut self, op: KubeOp) -> Task {
        self.steps.push(Step::Kube(op));
        self
    }

    pub fn tag(mut self, var: impl Into<String>, files: &[&str], strings: &[&str]) -> Task {
        let files = files.iter().map(|f| Utf8PathBuf::from(*f)).collect();
        self.steps.push(Step::Tag { var: var.into(), files, strings: strings.iter().map(|s| s.to_string()).collect() });
        self
    }

    pub fn skip_if(mut self, probe: Command) -> Task {
        self.steps.push(Step::SkipIf(probe));
        self
    }

    /// Skips the rest when `stamp` holds `value`; records `value` there once the rest succeeded.
    pub fn unless_stamped(mut self, stamp: impl Into<Utf8PathBuf>, value: &str, steps: Vec<Step>) -> Task {
        let stamp = stamp.into();
        self.steps.push(Step::SkipIfStamped { stamp: stamp.clone(), value: value.to_owned() });
        self.steps.extend(steps);
        self.steps.push(Step::Stamp { stamp, value: value.to_owned() });
        self
    }

    pub fn copy(mut self, from: impl Into<Utf8PathBuf>, to: impl Into<Utf8PathBuf>) -> Task {
        self.steps.push(Step::Copy { from: from.into(), to: to.into() });
        self
    }

    /// `phase/id`, the name used in progress lines and logs.
    pub fn label(&self) -> String {
        format!("{}/{}", self.phase, self.id)
    }
}

/// A validated DAG of tasks, kept in declaration order.
#[derive(Debug)]
pub struct Plan {
    tasks: Vec<Task>,
    deps: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    topo: Vec<usize>,
}

impl Plan {
    /// Validates the graph: duplicate ids, unknown dependencies, cycles, and dependencies on a
    /// later phased stage are errors that name the tasks.
    pub fn new(tasks: Vec<Task>) -> anyhow::Result<Plan> {
        let mut index = HashMap::new();
        for (i, task) in tasks.iter().enumerate() {
            if index.insert(task.id.as_str(), i).is_some() {
                bail!("duplicate task id `{}`", task.id);
            }
        }
        let mut deps = vec![Vec::new(); tasks.len()];
        let mut dependents = vec![Vec::new(); tasks.len()];
        for (i, task) in tasks.iter().enumerate() {
            for dep in &task.deps {
                let &j = index
                    .get(dep.as_str())
                    .ok_or_else(|| format_err!("task `{}` depends on unknown task `{dep}`", task.id))?;
                if tasks[j].stage > task.stage {
                    bail!(
                        "task `{}` (stage {}) depends on `{dep}` of a later stage ({})",
                        task.id,
                        task.stage,
                        tasks[j].stage
                    );
                }
                if !deps[i].contains(&j) {
                    deps[i].push(j);
                    dependents[j].push(i);
                }
            }
        }
        let topo = topological_order(&deps, &dependents).map_err(|cycle| {
            let names: Vec<&str> = cycle.iter().map(|&i| tasks[i].id.as_str()).collect();
            format_err!("dependency cycle: {}", names.join(" -> "))
        })?;
        Ok(Plan { tasks, deps, dependents, topo })
    }

    pub fn tasks(&self) -> &[Task] {
        &self.tasks
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn deps(&self, i: usize) -> &[usize] {
        &self.deps[i]
    }

    pub fn dependents(&self, i: usize) -> &[usize] {
        &self.dependents[i]
    }

    /// A topological order that keeps declaration order where the graph allows.
    pub fn topological(&self) -> &[usize] {
        &self.topo
    }

    #[cfg(test)]
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.tasks.iter().position(|t| t.id == id)
    }

    /// The longest chain by estimated duration, and its length.
    pub fn critical_path_estimate(&self) -> (Vec<usize>, Duration) {
        let mut finish = vec![Duration::ZERO; self.len()];
        let mut via: Vec<Option<usize>> = vec![None; self.len()];
        for &i in &self.topo {
            let before = self.deps[i].iter().copied().max_by_key(|&d| finish[d]);
            via[i] = before;
            finish[i] = before.map_or(Duration::ZERO, |d| finish[d]) + self.tasks[i].estimate;
        }
        let Some(mut last) = (0..self.len()).max_by_key(|&i| finish[i]) else {
            return (Vec::new(), Duration::ZERO);
        };
        let total = finish[last];
        let mut chain = vec![last];
        while let Some(prev) = via[last] {
            chain.push(prev);
            last = prev;
        }
        chain.reverse();
        (chain, total)
    }

    /// The estimated makespan with barriers between stages (unbounded parallelism inside one).
    pub fn phased_estimate(&self) -> Duration {
        let mut total = Duration::ZERO;
        for stage in self.stages() {
            let mut finish: HashMap<usize, Duration> = HashMap::new();
            for &i in self.topo.iter().filter(|&&i| self.tasks[i].stage == stage) {
                let start = self.deps[i].iter().filter_map(|d| finish.get(d)).max().copied().unwrap_or_default();
                finish.insert(i, start + self.tasks[i].estimate);
            }
            total += finish.values().max().copied().unwrap_or_default();
        }
        total
    }

    /// The distinct phased stages, ascending.
    pub fn stages(&self) -> Vec<u8> {
        let mut stages: Vec<u8> = self.tasks.iter().map(|t| t.stage).collect();
        stages.sort_unstable();
        stages.dedup();
        stages
    }

    pub fn sum_of_estimates(&self) -> Duration {
        self.tasks.iter().map(|t| t.estimate).sum()
    }

    /// The plan as `--plan` prints it: each task with its dependencies and steps, in the order
    /// the strategy would start them, then the estimates.
    pub fn describe(&self, strategy: Strategy, jobs: usize) -> String {
        let mut out = String::new();
        let _ =
            writeln!(out, "{} tasks, strategy {}, at most {jobs} image builds at once", self.len(), strategy.name());
        let mut last_stage = 0;
        for (n, &i) in self.topo_for(strategy).iter().enumerate() {
            let task = &self.tasks[i];
            if strategy == Strategy::Phased && task.stage != last_stage {
                if last_stage != 0 {
                    let _ = writeln!(
                        out,
                        "\n---- barrier: stage {} starts when all of stage {last_stage} has finished ----",
                        task.stage
                    );
                }
                last_stage = task.stage;
            }
            let order = if strategy == Strategy::Sequential { format!("{}. ", n + 1) } else { String::new() };
            let after = if task.deps.is_empty() { "-".to_owned() } else { task.deps.join(", ") };
            let _ = writeln!(
                out,
                "\n{order}{} [{}, stage {}, ~{}s]\n    after: {after}",
                task.label(),
                task.kind.name(),
                task.stage,
                task.estimate.as_secs()
            );
            for step in &task.steps {
                let _ = writeln!(out, "    {step}");
            }
        }
        let (chain, length) = self.critical_path_estimate();
        let names: Vec<&str> = chain.iter().map(|&i| self.tasks[i].id.as_str()).collect();
        let _ = writeln!(out, "\ncritical path estimate: {} = ~{}s", names.join(" -> "), length.as_secs());
        let _ = writeln!(
            out,
            "estimated makespan: dag ~{}s (the critical path), phased ~{}s, sequential ~{}s",
            length.as_secs(),
            self.phased_estimate().as_secs(),
            self.sum_of_estimates().as_secs()
        );
        out
    }

    /// Tasks in the order a strategy would consider them: by stage for phased.
    fn topo_for(&self, strategy: Strategy) -> Vec<usize> {
        let mut order = self.topo.clone();
        if strategy == Strategy::Phased {
            order.sort_by_key(|&i| self.tasks[i].stage);
        }
        order
    }
}

/// Kahn's algorithm, always taking the earliest-declared ready task; on a cycle, returns one.
fn topological_order(deps: &[Vec<usize>], dependents: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    let mut remaining: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut ready: std::collections::BTreeSet<usize> = (0..deps.len()).filter(|&i| remaining[i] == 0).collect();
    let mut order = Vec::with_capacity(deps.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &j in &dependents[i] {
            remaining[j] -= 1;
            if remaining[j] == 0 {
                ready.insert(j);
            }
        }
    }
    if order.len() == deps.len() {
        return Ok(order);
    }
    // Walk back along unfinished dependencies until a task repeats: that loop is a cycle.
    let mut path = vec![(0..deps.len()).find(|&i| remaining[i] > 0).unwrap()];
    loop {
        let last = *path.last().unwrap();
        let next = deps[last].iter().copied().find(|&d| remaining[d] > 0).unwrap();
        if let Some(pos) = path.iter().position(|&p| p == next) {
            let mut cycle: Vec<usize> = path[pos..].to_vec();
            cycle.reverse();
            cycle.push(cycle[0]);
            return Err(cycle);
        }
        path.push(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, deps: &[&str], secs: u64) -> Task {
        Task::new(id, Phase::Infra, Kind::Api).after(deps).estimate(secs)
    }

    #[test]
    fn rejects_duplicate_ids() {
        let err = Plan::new(vec![task("a", &[], 1), task("a", &[], 1)]).unwrap_err();
        assert_eq!(err.to_string(), "duplicate task id `a`");
    }

    #[test]
    fn rejects_unknown_dependency() {
        let err = Plan::new(vec![task("a", &["ghost"], 1)]).unwrap_err();
        assert_eq!(err.to_string(), "task `a` depends on unknown task `ghost`");
    }

    #[test]
    fn rejects_cycle_naming_its_tasks() {
        let err = Plan::new(vec![
            task("root", &[], 1),
            task("a", &["root", "c"], 1),
            task("b", &["a"], 1),
            task("c", &["b"], 1),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("dependency cycle: "), "{err}");
        for id in ["a", "b", "c"] {
            assert!(err.contains(&format!("`{id}`")) || err.contains(id), "{err}");
        }
        assert!(!err.contains("root"), "{err}");
    }

    #[test]
    fn rejects_self_dependency() {
        let err = Plan::new(vec![task("a", &["a"], 1)]).unwrap_err();
        assert_eq!(err.to_string(), "dependency cycle: a -> a");
    }

    #[test]
    fn rejects_dependency_on_later_stage() {
        let err = Plan::new(vec![task("a", &["b"], 1).stage(1), task("b", &[], 1).stage(2)]).unwrap_err();
        assert!(err.to_string().contains("later stage"), "{err}");
    }

    #[test]
    fn topological_order_keeps_declaration_order() {
        let plan = Plan::new(vec![task("c", &["a"], 1), task("a", &[], 1), task("b", &[], 1)]).unwrap();
        let ids: Vec<&str> = plan.topological().iter().map(|&i| plan.tasks()[i].id.as_str()).collect();
        assert_eq!(ids, ["a", "c", "b"]);
    }

    #[test]
    fn critical_path_estimate_takes_the_longest_chain() {
        let plan = Plan::new(vec![
            task("cluster", &[], 150),
            task("build", &[], 60),
            task("load", &["cluster", "build"], 10),
            task("db", &["cluster"], 30),
            task("app", &["load", "db"], 20),
        ])
        .unwrap();
        let (chain, total) = plan.critical_path_estimate();
        let ids: Vec<&str> = chain.iter().map(|&i| plan.tasks()[i].id.as_str()).collect();
        assert_eq!(ids, ["cluster", "db", "app"]);
        assert_eq!(total, Duration::from_secs(200));
        assert_eq!(plan.sum_of_estimates(), Duration::from_secs(270));
    }

    #[test]
    fn phased_estimate_adds_the_slowest_chain_of_each_stage() {
        let plan = Plan::new(vec![
            task("cluster", &[], 100).stage(1),
            task("build", &[], 60).stage(2),
            task("load", &["build", "cluster"], 10).stage(2),
            task("db", &["cluster"], 30).stage(2),
            task("app", &["load", "db"], 20).stage(3),
        ])
        .unwrap();
        assert_eq!(plan.phased_estimate(), Duration::from_secs(100 + 70 + 20));
    }

    #[test]
    fn phased_description_shows_the_barriers() {
        let plan = Plan::new(vec![
            task("cluster", &[], 100).stage(1),
            task("build", &[], 60).stage(2),
            task("app", &["build"], 20).stage(3),
        ])
        .unwrap();
        let text = plan.describe(Strategy::Phased, 2);
        assert_eq!(text.matches("---- barrier").count(), 2, "{text}");
        assert!(text.find("infra/cluster").unwrap() < text.find("stage 2 starts").unwrap());
        assert!(!plan.describe(Strategy::Dag, 2).contains("barrier"));
        assert!(plan.describe(Strategy::Sequential, 2).contains("3. infra/app"));
    }

    #[test]
    fn commands_display_shell_quoted() {
        let cmd =
            Command::new("kind", ["create", "cluster", "--name", "it's"]).env("KIND_EXPERIMENTAL_PROVIDER", "podman");
        assert_eq!(cmd.to_string(), r"KIND_EXPERIMENTAL_PROVIDER=podman kind create cluster --name 'it'\''s'");
    }
}
