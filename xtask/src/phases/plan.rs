//! Tasks, their steps, and the plan: a DAG validated when it is built.

use std::collections::{BTreeSet, HashMap};
use std::fmt::{self, Write as _};
use std::time::Duration;

use anyhow::{bail, format_err};
use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;

use super::history::History;
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
    /// Runs after every other task has ended, whatever happened, on its own uncancelled token.
    Teardown,
}

impl Phase {
    pub const ALL: [Phase; 6] =
        [Phase::Cluster, Phase::Images, Phase::Infra, Phase::Services, Phase::Tests, Phase::Teardown];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Cluster => "cluster",
            Phase::Images => "images",
            Phase::Infra => "infra",
            Phase::Services => "services",
            Phase::Tests => "tests",
            Phase::Teardown => "teardown",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// When a teardown task runs, from how the rest of the run went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum When {
    Always,
    /// Only when a task failed or the run was interrupted (diagnostics).
    Failed,
    /// Only when every other task succeeded.
    Succeeded,
}

impl When {
    pub fn holds(self, succeeded: bool) -> bool {
        match self {
            When::Always => true,
            When::Failed => !succeeded,
            When::Succeeded => succeeded,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            When::Always => "",
            When::Failed => ", when the run failed",
            When::Succeeded => ", when the run succeeded",
        }
    }
}

/// Where a task runs: CPU-heavy work (image builds; under `e2e all`, whole environments) on a
/// bounded rayon pool, other external commands on a process pool, Kubernetes API work on tokio.
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
    /// On cancellation, SIGINT its process group and let it finish (it cleans up after itself)
    /// instead of killing it.
    pub interrupt: bool,
}

impl Command {
    pub fn new(program: impl Into<String>, args: impl IntoIterator<Item = impl Into<String>>) -> Command {
        Command {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            interrupt: false,
        }
    }

    /// With `args` after its own.
    pub fn args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Command {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Command {
        self.env.push((key.into(), value.into()));
        self
    }

    /// See [`Command::interrupt`].
    pub fn interrupt_on_cancel(mut self) -> Command {
        self.interrupt = true;
        self
    }

    /// The run variables its program, arguments and environment read.
    fn reads(&self) -> impl Iterator<Item = &str> {
        let texts = std::iter::once(&self.program).chain(&self.args).chain(self.env.iter().map(|(_, v)| v));
        texts.flat_map(|text| placeholders(text))
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

/// The run variables `text` reads: the `NAME` of each `${NAME}` (letters, digits, `_`).
pub fn placeholders(text: &str) -> impl Iterator<Item = &str> {
    text.match_indices("${").filter_map(move |(at, _)| {
        let rest = &text[at + 2..];
        let name = &rest[..rest.find('}')?];
        (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then_some(name)
    })
}

/// `${name}`: how a string refers to a run variable.
pub fn var_ref(name: &str) -> String {
    format!("${{{name}}}")
}

/// Kubernetes API work in the run's namespace, carried out through kube-rs by the executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeOp {
    /// Server-side apply of every document of a manifest file, its placeholders (`reads`, found
    /// when the plan was made) filled in.
    Apply { manifest: Utf8PathBuf, reads: Vec<String> },
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
    /// Delete a Job and its pods if it exists, and wait until it is gone: a Job's pod template
    /// cannot change, so one applied again (a `--watch` pass, a new image) must be new.
    DeleteJob { job: String, timeout: Duration },
    /// Check that the API server answers, and which version it runs.
    ServerVersion,
    /// Wait until the API server answers and every node is Ready.
    ClusterReady { timeout: Duration },
    /// Make a Service port reachable from the host through a NodePort Service `<service>-e2e`
    /// (the node port fixed when given, else allocated), and set the run variable `var` to its
    /// URL.
    Expose { service: String, port: String, node_port: Option<u16>, url: Option<String>, var: String },
    /// Save the namespace's events, pod states and container logs into `dir`.
    Diagnostics { dir: Utf8PathBuf },
    /// Delete the cluster-wide objects and namespaces labelled with the run id and the run's
    /// namespace, and wait until the namespaces are gone.
    DeleteNamespaces { timeout: Duration },
}

impl fmt::Display for KubeOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KubeOp::Apply { manifest, .. } => write!(f, "server-side apply {manifest}"),
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
            KubeOp::DeleteJob { job, timeout } => {
                write!(f, "delete job/{job} if it exists, and wait until it is gone (timeout {}s)", timeout.as_secs())
            }
            KubeOp::ServerVersion => write!(f, "check the API server answers (GET /version)"),
            KubeOp::ClusterReady { timeout } => {
                write!(f, "wait until the API server answers and every node is Ready (timeout {}s)", timeout.as_secs())
            }
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
            KubeOp::Diagnostics { dir } => write!(f, "save the namespace's events, pod states and logs to {dir}"),
            KubeOp::DeleteNamespaces { timeout } => write!(
                f,
                "delete the namespace, and the namespaces and cluster-wide objects labelled with the run id, \
                 waiting until the namespaces are gone (timeout {}s)",
                timeout.as_secs()
            ),
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
    /// Write a file the run makes (a config a command reads), its directory created.
    Write {
        path: Utf8PathBuf,
        text: String,
    },
    /// Remove a file the run made, if it is there.
    Remove {
        path: Utf8PathBuf,
    },
    /// Set the run variable `var` to `value` (`${...}` filled in).
    Set {
        var: String,
        value: String,
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
    /// When this probe fails there is nothing to do (nothing to delete, say): skip the task's
    /// remaining steps and report it cached.
    OnlyIf(Command),
    /// Run this command; its failure is logged and the task goes on.
    Try(Command),
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
    /// With the engine `program`, remove all but the `keep` newest tags of the repository of
    /// each of `images` (`repository:tag`, `${...}` filled in), never one of `images`; and from
    /// the container `node` too (`crictl rmi` in it), when there is one.
    Prune {
        program: String,
        images: Vec<String>,
        keep: usize,
        node: Option<String>,
    },
    /// Fail unless each of `binaries` can run on the base image `image`: a Linux ELF for the
    /// architecture `arch` (`amd64`) whose glibc needs are at most `glibc` (`2.36`).
    Loadable {
        binaries: Vec<Utf8PathBuf>,
        arch: String,
        glibc: String,
        image: String,
    },
}

impl Step {
    /// The command it runs, if it runs one (probes included).
    pub fn command(&self) -> Option<&Command> {
        match self {
            Step::Run(cmd) | Step::SkipIf(cmd) | Step::OnlyIf(cmd) | Step::Try(cmd) => Some(cmd),
            _ => None,
        }
    }

    /// The run variables this step reads.
    pub fn reads(&self) -> Vec<&str> {
        match self {
            Step::Run(cmd) | Step::SkipIf(cmd) | Step::OnlyIf(cmd) | Step::Try(cmd) => cmd.reads().collect(),
            Step::Kube(KubeOp::Apply { reads, .. }) => reads.iter().map(String::as_str).collect(),
            Step::Kube(_) | Step::Copy { .. } | Step::Remove { .. } | Step::Loadable { .. } => Vec::new(),
            Step::Write { text, .. } => placeholders(text).collect(),
            Step::Set { value, .. } | Step::SkipIfStamped { value, .. } | Step::Stamp { value, .. } => {
                placeholders(value).collect()
            }
            Step::Tag { strings, .. } => strings.iter().flat_map(|s| placeholders(s)).collect(),
            Step::Prune { images, .. } => images.iter().flat_map(|s| placeholders(s)).collect(),
        }
    }

    /// The run variable this step sets, if any.
    pub fn writes(&self) -> Option<&str> {
        match self {
            Step::Set { var, .. } | Step::Tag { var, .. } | Step::Kube(KubeOp::Expose { var, .. }) => Some(var),
            _ => None,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Run(cmd) => write!(f, "$ {cmd}"),
            Step::Kube(op) => write!(f, "kube: {op}"),
            Step::Copy { from, to } => write!(f, "copy {from} -> {to}"),
            Step::Write { path, text } => {
                write!(f, "write {path}:")?;
                for line in text.lines() {
                    write!(f, "\n      | {line}")?;
                }
                Ok(())
            }
            Step::Remove { path } => write!(f, "remove {path}"),
            Step::Set { var, value } => write!(f, "{var} = {value}"),
            Step::Tag { var, files, strings } => {
                let inputs: Vec<&str> =
                    files.iter().map(|f| f.as_str()).chain(strings.iter().map(String::as_str)).collect();
                write!(f, "{var} = content hash of {}", inputs.join(", "))
            }
            Step::SkipIf(probe) => write!(f, "cached if this succeeds: $ {probe}"),
            Step::OnlyIf(probe) => write!(f, "nothing to do unless this succeeds: $ {probe}"),
            Step::Try(cmd) => write!(f, "$ {cmd} (a failure is no error)"),
            Step::SkipIfStamped { stamp, value } => write!(f, "cached if {stamp} holds {value}"),
            Step::Stamp { stamp, value } => write!(f, "write {value} to {stamp}"),
            Step::Loadable { binaries, arch, glibc, image } => {
                let binaries: Vec<&str> = binaries.iter().map(|b| b.as_str()).collect();
                write!(
                    f,
                    "check that {} are Linux {arch} binaries that glibc {glibc} ({image}) loads",
                    binaries.join(", ")
                )
            }
            Step::Prune { program, images, keep, node } => {
                let repositories: Vec<&str> =
                    images.iter().map(|image| image.rsplit_once(':').map_or(image.as_str(), |(r, _)| r)).collect();
                write!(
                    f,
                    "{program}: keep the newest {keep} tags of each of {} and remove older ones (never {})",
                    repositories.join(", "),
                    images.join(", ")
                )?;
                match node {
                    Some(node) => write!(f, ", from the engine and from node {node}"),
                    None => Ok(()),
                }
            }
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
    /// Expected duration: the plan's estimate, or what past runs took (`estimate_from`).
    pub estimate: Duration,
    /// How many past runs `estimate` is the median of; `None` for the plan's own estimate.
    pub estimate_from: Option<usize>,
    pub steps: Vec<Step>,
    /// For a teardown task: whether it runs, from how the rest of the run went.
    pub when: When,
    /// What the summary says once it succeeded ("deleted kind cluster x").
    pub done: Option<String>,
    /// The files and directories (relative to the workspace root, or absolute) its result
    /// depends on.
    pub inputs: Vec<Utf8PathBuf>,
}

impl Task {
    pub fn new(id: impl Into<String>, phase: Phase, kind: Kind) -> Task {
        Task {
            id: id.into(),
            phase,
            kind,
            stage: 1,
            deps: Vec::new(),
            estimate: Duration::ZERO,
            estimate_from: None,
            steps: Vec::new(),
            when: When::Always,
            done: None,
            inputs: Vec::new(),
        }
    }

    /// A task of the teardown phase, run after every other one if `when` holds.
    pub fn teardown(id: impl Into<String>, kind: Kind, when: When) -> Task {
        Task { when, ..Task::new(id, Phase::Teardown, kind) }
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

    pub fn done(mut self, text: impl Into<String>) -> Task {
        self.done = Some(text.into());
        self
    }

    pub fn inputs(mut self, paths: impl IntoIterator<Item = impl Into<Utf8PathBuf>>) -> Task {
        self.inputs.extend(paths.into_iter().map(Into::into));
        self
    }

    pub fn step(mut self, step: Step) -> Task {
        self.steps.push(step);
        self
    }

    pub fn run(self, cmd: Command) -> Task {
        self.step(Step::Run(cmd))
    }

    pub fn kube(self, op: KubeOp) -> Task {
        self.step(Step::Kube(op))
    }

    pub fn set(self, var: impl Into<String>, value: impl Into<String>) -> Task {
        self.step(Step::Set { var: var.into(), value: value.into() })
    }

    pub fn write(self, path: impl Into<Utf8PathBuf>, text: impl Into<String>) -> Task {
        self.step(Step::Write { path: path.into(), text: text.into() })
    }

    pub fn tag(self, var: impl Into<String>, files: &[&str], strings: &[&str]) -> Task {
        let files = files.iter().map(|f| Utf8PathBuf::from(*f)).collect();
        self.step(Step::Tag { var: var.into(), files, strings: strings.iter().map(|s| s.to_string()).collect() })
    }

    pub fn skip_if(self, probe: Command) -> Task {
        self.step(Step::SkipIf(probe))
    }

    pub fn only_if(self, probe: Command) -> Task {
        self.step(Step::OnlyIf(probe))
    }

    /// Skips the rest when `stamp` holds `value`; records `value` there once the rest succeeded.
    pub fn unless_stamped(mut self, stamp: impl Into<Utf8PathBuf>, value: &str, steps: Vec<Step>) -> Task {
        let stamp = stamp.into();
        self.steps.push(Step::SkipIfStamped { stamp: stamp.clone(), value: value.to_owned() });
        self.steps.extend(steps);
        self.steps.push(Step::Stamp { stamp, value: value.to_owned() });
        self
    }

    pub fn copy(self, from: impl Into<Utf8PathBuf>, to: impl Into<Utf8PathBuf>) -> Task {
        self.step(Step::Copy { from: from.into(), to: to.into() })
    }

    /// `phase/id`, the name used in progress lines and logs.
    pub fn label(&self) -> String {
        format!("{}/{}", self.phase, self.id)
    }

    pub fn is_teardown(&self) -> bool {
        self.phase == Phase::Teardown
    }
}

/// A validated DAG of tasks, kept in declaration order: the tasks that bring the environment
/// up and run the specs, then the teardown tasks, which run after all of them.
#[derive(Debug)]
pub struct Plan {
    tasks: Vec<Task>,
    deps: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    topo: Vec<usize>,
}

impl Plan {
    /// Validates the graph: duplicate ids, unknown dependencies, cycles, dependencies on a
    /// later phased stage or on a teardown task, a condition on a task that is not teardown,
    /// and a run variable read before any task it waits for writes it are errors that name the
    /// tasks.
    pub fn new(tasks: Vec<Task>) -> anyhow::Result<Plan> {
        let mut index = HashMap::new();
        for (i, task) in tasks.iter().enumerate() {
            if index.insert(task.id.as_str(), i).is_some() {
                bail!("duplicate task id `{}`", task.id);
            }
            if !task.is_teardown() && task.when != When::Always {
                bail!("task `{}` runs on a condition, but only teardown tasks do", task.id);
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
                if tasks[j].is_teardown() && !task.is_teardown() {
                    bail!("task `{}` depends on the teardown task `{dep}`, which runs after it", task.id);
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
        let plan = Plan { tasks, deps, dependents, topo };
        plan.check_reads()?;
        Ok(plan)
    }

    /// Every run variable a step reads is written by an earlier step of its task or by a task
    /// it waits for (directly or not). A teardown task that runs only after a successful run
    /// may read what any other task wrote.
    fn check_reads(&self) -> anyhow::Result<()> {
        let mut ancestors: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); self.len()];
        for &i in &self.topo {
            let mut all = BTreeSet::new();
            for &d in &self.deps[i] {
                all.insert(d);
                all.extend(ancestors[d].iter().copied());
            }
            ancestors[i] = all;
        }
        for (i, task) in self.tasks.iter().enumerate() {
            let mut written: BTreeSet<&str> = if task.when == When::Succeeded {
                self.tasks
                    .iter()
                    .filter(|t| !t.is_teardown())
                    .flat_map(|t| t.steps.iter().filter_map(Step::writes))
                    .collect()
            } else {
                ancestors[i].iter().flat_map(|&a| self.tasks[a].steps.iter().filter_map(Step::writes)).collect()
            };
            for step in &task.steps {
                for var in step.reads() {
                    if !written.contains(var) {
                        let writers: Vec<&str> = self
                            .tasks
                            .iter()
                            .filter(|t| t.steps.iter().any(|s| s.writes() == Some(var)))
                            .map(|t| t.id.as_str())
                            .collect();
                        let hint = match &writers[..] {
                            [] => "no task writes it".to_owned(),
                            some => format!(
                                "it is written by `{}`, which `{}` does not wait for",
                                some.join("`, `"),
                                task.id
                            ),
                        };
                        bail!("task `{}` reads ${{{var}}} before it is set: {hint}", task.id);
                    }
                }
                written.extend(step.writes());
            }
        }
        Ok(())
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

    /// The files and directories every task's result depends on, sorted, each once.
    pub fn inputs(&self) -> Vec<Utf8PathBuf> {
        let inputs: BTreeSet<&Utf8PathBuf> = self.tasks.iter().flat_map(|t| &t.inputs).collect();
        inputs.into_iter().cloned().collect()
    }

    /// The tasks before teardown that a change to `changed` (absolute paths) makes stale: each
    /// with an input (relative to `root`, or absolute) that is or holds a changed path, and
    /// every task after them.
    pub fn stale_after(&self, changed: &[Utf8PathBuf], root: &Utf8Path) -> Vec<bool> {
        let mut stale: Vec<bool> = self
            .tasks
            .iter()
            .map(|t| {
                !t.is_teardown() && t.inputs.iter().any(|input| changed.iter().any(|c| c.starts_with(root.join(input))))
            })
            .collect();
        for &i in &self.topo {
            if self.deps[i].iter().any(|&d| stale[d]) && !self.tasks[i].is_teardown() {
                stale[i] = true;
            }
        }
        stale
    }

    /// Another pass over the environment this plan brought up, which stays up: the tasks
    /// `stale` marks run whole, and every task after them; every other task only sets again the
    /// run variables it set, as `vars` holds them. An error names a variable `vars` lacks.
    pub fn again(&self, stale: &[bool], vars: &HashMap<String, String>) -> anyhow::Result<Plan> {
        let mut stale = stale.to_vec();
        for &i in &self.topo {
            if self.deps[i].iter().any(|&d| stale[d]) {
                stale[i] = true;
            }
        }
        self.rebuilt(|i, task| match (task.is_teardown(), stale[i]) {
            (true, _) => Ok(None),
            (false, true) => Ok(Some(task.clone())),
            (false, false) => recalled(task, vars).map(Some),
        })
    }

    /// The teardown of the environment this plan brought up, where `up` marks what is up: those
    /// tasks only set again the run variables they set (`vars`), the others are left out, and
    /// the teardown tasks follow; those for a successful run only when everything is up.
    pub fn down(&self, up: &[bool], vars: &HashMap<String, String>) -> anyhow::Result<Plan> {
        let all_up = self.up().all(|i| up[i]);
        self.rebuilt(|i, task| match (task.is_teardown(), up[i]) {
            (true, _) if task.when == When::Succeeded && !all_up => Ok(None),
            (true, _) => Ok(Some(task.clone())),
            (false, true) => recalled(task, vars).map(Some),
            (false, false) => Ok(None),
        })
    }

    /// A plan of what `choose` makes of each task; those it leaves out must have no dependent.
    fn rebuilt(&self, mut choose: impl FnMut(usize, &Task) -> anyhow::Result<Option<Task>>) -> anyhow::Result<Plan> {
        let mut tasks = Vec::new();
        for (i, task) in self.tasks.iter().enumerate() {
            tasks.extend(choose(i, task)?);
        }
        Plan::new(tasks)
    }

    /// Replaces each task's estimate by what `history` expects of it, where it knows the task.
    pub fn expect_from(&mut self, history: &History) {
        for task in &mut self.tasks {
            if let Some((expected, runs)) = history.expected(&task.id) {
                task.estimate = expected;
                task.estimate_from = Some(runs);
            }
        }
    }

    /// For each task, the longest expected path from its start to the end of its part of the
    /// plan (the tasks before teardown, or teardown): the scheduler starts the longest first.
    pub fn remaining(&self) -> Vec<Duration> {
        let mut rest = vec![Duration::ZERO; self.len()];
        for &i in self.topo.iter().rev() {
            let part = self.tasks[i].is_teardown();
            let dependents = self.dependents[i].iter().filter(|&&d| self.tasks[d].is_teardown() == part);
            rest[i] = self.tasks[i].estimate + dependents.map(|&d| rest[d]).max().unwrap_or_default();
        }
        rest
    }

    /// The tasks before teardown, in declaration order.
    fn up(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len()).filter(|&i| !self.tasks[i].is_teardown())
    }

    /// The longest chain of the tasks before teardown by estimated duration, and its length.
    pub fn critical_path_estimate(&self) -> (Vec<usize>, Duration) {
        let mut finish = vec![Duration::ZERO; self.len()];
        let mut via: Vec<Option<usize>> = vec![None; self.len()];
        for &i in self.topo.iter().filter(|&&i| !self.tasks[i].is_teardown()) {
            let before = self.deps[i].iter().copied().max_by_key(|&d| finish[d]);
            via[i] = before;
            finish[i] = before.map_or(Duration::ZERO, |d| finish[d]) + self.tasks[i].estimate;
        }
        let Some(mut last) = self.up().max_by_key(|&i| finish[i]) else {
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

    /// The estimated makespan before teardown with barriers between stages (unbounded
    /// parallelism inside one).
    pub fn phased_estimate(&self) -> Duration {
        let mut total = Duration::ZERO;
        for stage in self.stages() {
            let mut finish: HashMap<usize, Duration> = HashMap::new();
            for &i in self.topo.iter().filter(|&&i| self.tasks[i].stage == stage && !self.tasks[i].is_teardown()) {
                let start = self.deps[i].iter().filter_map(|d| finish.get(d)).max().copied().unwrap_or_default();
                finish.insert(i, start + self.tasks[i].estimate);
            }
            total += finish.values().max().copied().unwrap_or_default();
        }
        total
    }

    /// The distinct phased stages of the tasks before teardown, ascending.
    pub fn stages(&self) -> Vec<u8> {
        let mut stages: Vec<u8> = self.up().map(|i| self.tasks[i].stage).collect();
        stages.sort_unstable();
        stages.dedup();
        stages
    }

    /// The estimates of the tasks before teardown, added up.
    pub fn sum_of_estimates(&self) -> Duration {
        self.up().map(|i| self.tasks[i].estimate).sum()
    }

    /// The plan as `--plan` prints it: each task with its dependencies and steps, in the order
    /// the strategy would start them, the teardown, then the estimates.
    pub fn describe(&self, strategy: Strategy, jobs: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{} tasks, strategy {}, at most {jobs} build tasks at once", self.len(), strategy.name());
        let mut last_stage = 0;
        let (up, down): (Vec<usize>, Vec<usize>) =
            self.topo_for(strategy).into_iter().partition(|&i| !self.tasks[i].is_teardown());
        for (n, &i) in up.iter().enumerate() {
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
            self.describe_task(&mut out, &order, task);
        }
        if !down.is_empty() {
            let _ = writeln!(out, "\n---- teardown: after every task above has ended, whatever happened ----");
            for &i in &down {
                self.describe_task(&mut out, "", &self.tasks[i]);
            }
        }
        let (chain, length) = self.critical_path_estimate();
        let names: Vec<&str> = chain.iter().map(|&i| self.tasks[i].id.as_str()).collect();
        let learned = self.tasks.iter().filter(|t| t.estimate_from.is_some()).count();
        let source = match learned {
            0 => "the plan's estimates".to_owned(),
            n if n == self.len() => "past runs".to_owned(),
            n => format!("past runs for {n} of {} tasks, the plan's estimates for the rest", self.len()),
        };
        let _ = writeln!(out, "\nexpected durations from {source}");
        let _ = writeln!(out, "critical path estimate: {} = ~{:.1}s", names.join(" -> "), length.as_secs_f64());
        let _ = writeln!(
            out,
            "estimated makespan before teardown: dag ~{:.1}s (the critical path), phased ~{:.1}s, sequential ~{:.1}s",
            length.as_secs_f64(),
            self.phased_estimate().as_secs_f64(),
            self.sum_of_estimates().as_secs_f64()
        );
        out
    }

    fn describe_task(&self, out: &mut String, order: &str, task: &Task) {
        let after = if task.deps.is_empty() { "-".to_owned() } else { task.deps.join(", ") };
        // Teardown runs after every stage.
        let stage = if task.is_teardown() { String::new() } else { format!(", stage {}", task.stage) };
        let from = match task.estimate_from {
            Some(1) => " (took that last run)".to_owned(),
            Some(runs) => format!(" (median of its last {runs} runs)"),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "\n{order}{} [{}{stage}, ~{:.1}s{from}{}]\n    after: {after}",
            task.label(),
            task.kind.name(),
            task.estimate.as_secs_f64(),
            task.when.describe()
        );
        for step in &task.steps {
            let _ = writeln!(out, "    {step}");
        }
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

/// `task` as a pass that keeps what it did: it only sets its run variables as `vars` holds
/// them, at once, with its edges kept.
fn recalled(task: &Task, vars: &HashMap<String, String>) -> anyhow::Result<Task> {
    let mut recalled = Task::new(task.id.clone(), task.phase, Kind::Api).stage(task.stage).inputs(task.inputs.clone());
    recalled.deps.clone_from(&task.deps);
    for var in task.steps.iter().filter_map(Step::writes) {
        let value = vars.get(var).ok_or_else(|| format_err!("task `{}` did not set ${{{var}}} before", task.id))?;
        recalled = recalled.set(var, value.clone());
    }
    Ok(recalled)
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

    #[test]
    fn only_teardown_tasks_have_conditions_and_nothing_waits_for_teardown() {
        let err = Plan::new(vec![
            task("a", &[], 1),
            Task::teardown("t", Kind::Api, When::Always).after(&[]),
            task("b", &["t"], 1),
        ])
        .unwrap_err();
        assert_eq!(err.to_string(), "task `b` depends on the teardown task `t`, which runs after it");
        let mut conditional = task("a", &[], 1);
        conditional.when = When::Failed;
        let err = Plan::new(vec![conditional]).unwrap_err();
        assert_eq!(err.to_string(), "task `a` runs on a condition, but only teardown tasks do");
    }

    #[test]
    fn a_run_variable_is_read_only_after_a_task_waited_for_sets_it() {
        let writer = || Task::new("build", Phase::Images, Kind::Build).tag("TAG_X", &[], &[]);
        let reader = |deps: &[&str]| {
            Task::new("deploy", Phase::Services, Kind::Api)
                .after(deps)
                .kube(KubeOp::Apply { manifest: "m.yaml".into(), reads: vec!["TAG_X".into()] })
        };
        assert!(Plan::new(vec![writer(), reader(&["build"])]).is_ok());
        let err = Plan::new(vec![writer(), reader(&[])]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "task `deploy` reads ${TAG_X} before it is set: it is written by `build`, which `deploy` does not wait for"
        );
        // Through another task, and earlier in the same task.
        let middle = task("middle", &["build"], 1);
        assert!(Plan::new(vec![writer(), middle, reader(&["middle"])]).is_ok());
        let own = Task::new("one", Phase::Images, Kind::Build).set("A", "x").run(Command::new("echo", ["${A}"]));
        assert!(Plan::new(vec![own]).is_ok());
        let early = Task::new("one", Phase::Images, Kind::Build).run(Command::new("echo", ["${A}"])).set("A", "x");
        assert!(Plan::new(vec![early]).is_err());
        // After a successful run every variable is set; after a failure, only what ran.
        let prune = |when| Task::teardown("prune", Kind::Process, when).run(Command::new("echo", ["${TAG_X}"]));
        assert!(Plan::new(vec![writer(), prune(When::Succeeded)]).is_ok());
        assert!(Plan::new(vec![writer(), prune(When::Always)]).is_err());
    }

    #[test]
    fn placeholders_are_names_inside_dollar_braces() {
        let names: Vec<&str> = placeholders("a ${ONE} {{.Id}} ${TWO_2}${} ${bad name} ${UNCLOSED").collect();
        assert_eq!(names, ["ONE", "TWO_2"]);
        assert_eq!(var_ref("X"), "${X}");
    }

    #[test]
    fn the_description_shows_teardown_last_with_its_conditions() {
        let plan = Plan::new(vec![
            Task::teardown("export-logs", Kind::Process, When::Failed),
            task("cluster", &[], 100),
            Task::teardown("delete", Kind::Process, When::Always).after(&["export-logs"]),
        ])
        .unwrap();
        let text = plan.describe(Strategy::Dag, 2);
        let at = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("{needle} in {text}"));
        assert!(at("infra/cluster") < at("---- teardown") && at("---- teardown") < at("teardown/export-logs"));
        assert!(text.contains("teardown/export-logs [process, ~0.0s, when the run failed]"), "{text}");
        assert_eq!(plan.critical_path_estimate().1, Duration::from_secs(100), "teardown is not on the estimate");
    }

    /// `src` builds `bin`, `image` packs it (reading `${BIN}`), `manifest` and `image` feed
    /// `deploy`, `specs` run last; then teardown.
    fn environment() -> Plan {
        Plan::new(vec![
            task("bin", &[], 10).inputs(["services/x"]).set("BIN", "hash-1"),
            task("image", &["bin"], 2).run(Command::new("pack", ["${BIN}"])).set("IMAGE", "x:${BIN}"),
            task("manifest", &[], 1).inputs(["/m/x.yaml"]),
            task("deploy", &["image", "manifest"], 3).run(Command::new("apply", ["${IMAGE}"])),
            task("specs", &["deploy"], 5).inputs(["test/e2e/tests/x.rs"]),
            Task::teardown("delete", Kind::Process, When::Always).inputs(["services/x"]),
        ])
        .unwrap()
    }

    fn ids(plan: &Plan, marked: &[bool]) -> Vec<String> {
        plan.tasks().iter().zip(marked).filter(|(_, m)| **m).map(|(t, _)| t.id.clone()).collect()
    }

    #[test]
    fn a_change_makes_stale_the_tasks_with_it_as_input_and_every_task_after_them() {
        let plan = environment();
        let root = Utf8Path::new("/ws");
        let stale = |paths: &[&str]| {
            let paths: Vec<Utf8PathBuf> = paths.iter().map(Utf8PathBuf::from).collect();
            ids(&plan, &plan.stale_after(&paths, root))
        };
        assert_eq!(stale(&["/ws/services/x/src/main.rs"]), ["bin", "image", "deploy", "specs"]);
        assert_eq!(stale(&["/m/x.yaml"]), ["manifest", "deploy", "specs"]);
        assert_eq!(stale(&["/ws/test/e2e/tests/x.rs"]), ["specs"]);
        // Inputs are whole path components, and what no input holds changes nothing.
        assert!(stale(&["/ws/services/xy/src/main.rs", "/ws/README.md", "/m/x.yaml.bak"]).is_empty());
    }

    #[test]
    fn another_pass_reruns_the_stale_tasks_and_recalls_what_the_others_set() {
        let plan = environment();
        let vars: HashMap<String, String> =
            [("BIN", "hash-1"), ("IMAGE", "x:hash-1")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut rerun = vec![false; plan.len()];
        rerun[plan.index_of("manifest").unwrap()] = true;
        let again = plan.again(&rerun, &vars).unwrap();
        let task = |id: &str| &again.tasks()[again.index_of(id).unwrap()];
        // What runs again runs whole, and so does every task after it; no teardown.
        assert_eq!(
            again.tasks().iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            ["bin", "image", "manifest", "deploy", "specs"]
        );
        assert_eq!(task("deploy").steps, plan.tasks()[3].steps);
        assert_eq!(task("specs").steps, plan.tasks()[4].steps);
        // The others only set their variables as they were, at once, keeping their edges.
        assert_eq!(task("image").steps, [Step::Set { var: "IMAGE".into(), value: "x:hash-1".into() }]);
        assert_eq!((task("image").kind, task("image").estimate), (Kind::Api, Duration::ZERO));
        assert_eq!(task("image").deps, ["bin"]);
        let err = plan.again(&rerun, &HashMap::new()).unwrap_err().to_string();
        assert_eq!(err, "task `bin` did not set ${BIN} before");
    }

    #[test]
    fn teardown_keeps_what_is_up_and_prunes_only_when_everything_is() {
        let plan = Plan::new(vec![
            task("bin", &[], 10).set("TAG", "t1"),
            task("deploy", &["bin"], 3).run(Command::new("apply", ["${TAG}"])),
            Task::teardown("export-logs", Kind::Process, When::Failed),
            Task::teardown("delete", Kind::Process, When::Always).after(&["export-logs"]),
            Task::teardown("prune", Kind::Process, When::Succeeded).run(Command::new("prune", ["${TAG}"])),
        ])
        .unwrap();
        let vars: HashMap<String, String> = [("TAG".to_owned(), "t1".to_owned())].into();
        let names = |p: &Plan| p.tasks().iter().map(|t| t.id.clone()).collect::<Vec<_>>();
        let down = plan.down(&[true, true, false, false, false], &vars).unwrap();
        assert_eq!(names(&down), ["bin", "deploy", "export-logs", "delete", "prune"]);
        assert!(down.tasks()[..2].iter().all(|t| t.steps.iter().all(|s| matches!(s, Step::Set { .. }))));
        // The deployment never came up: it is left out, and so is pruning.
        let down = plan.down(&[true, false, false, false, false], &vars).unwrap();
        assert_eq!(names(&down), ["bin", "export-logs", "delete"]);
        let down = plan.down(&[false; 5], &HashMap::new()).unwrap();
        assert_eq!(names(&down), ["export-logs", "delete"]);
    }
}
