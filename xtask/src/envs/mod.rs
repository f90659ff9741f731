//! Each service's end-to-end environment as data: which components it needs, in which
//! order, and the commands and API operations each task carries out.
//!
//! The building blocks here (cluster, images, PostgreSQL, migrations, a deployment, the specs)
//! are shared; a service module only lists its components and their edges.

mod datastorage;
mod gateway;
mod remediationorchestrator;
mod signalprocessing;
mod workflowexecution;

use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};
use clap::ValueEnum;

use crate::flags::Engine;
use crate::phases::{Command, Kind, KubeOp, Phase, Plan, Step, Task, Workload};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Service {
    Gateway,
    Signalprocessing,
    Datastorage,
    Remediationorchestrator,
    Workflowexecution,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Gateway => "gateway",
            Service::Signalprocessing => "signalprocessing",
            Service::Datastorage => "datastorage",
            Service::Remediationorchestrator => "remediationorchestrator",
            Service::Workflowexecution => "workflowexecution",
        }
    }

    pub fn names() -> Vec<&'static str> {
        Service::value_variants().iter().map(|s| s.name()).collect()
    }

    /// The validated task graph of this service's environment.
    pub fn plan(self, settings: &Settings) -> anyhow::Result<Plan> {
        let mut env = Env { settings, exposed: self.exposed(), built: Vec::new(), tasks: Vec::new() };
        match self {
            Service::Gateway => gateway::tasks(&mut env),
            Service::Signalprocessing => signalprocessing::tasks(&mut env),
            Service::Datastorage => datastorage::tasks(&mut env),
            Service::Remediationorchestrator => remediationorchestrator::tasks(&mut env),
            Service::Workflowexecution => workflowexecution::tasks(&mut env),
        }
        Plan::new(env.tasks)
    }
}

/// Where the environment runs.
#[derive(Debug, Clone)]
pub enum Target {
    /// A Kind cluster of this name, created unless reused.
    Kind { name: String, reuse: bool },
    /// A cluster that already exists; the run gets its own namespace.
    Existing { kubeconfig: Utf8PathBuf },
}

/// How built images reach the cluster's container runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    KindLoad,
    /// The runtime already sees the engine's images (a single-node cluster on this host).
    None,
    /// Pushed to a registry the cluster pulls from; `Settings::image_repo` is under it.
    Registry(Registry),
}

/// A registry given as `host[:port][/path]`, e.g. `localhost:5000` or `registry.example.com/team`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// `host[:port]`.
    pub host: String,
    /// The path under the host, without slashes at either end; may be empty.
    pub path: String,
}

impl Registry {
    pub fn parse(text: &str) -> anyhow::Result<Registry> {
        let text = text.trim_end_matches('/');
        if text.contains("://") {
            anyhow::bail!("--registry takes host[:port][/path] without a scheme, e.g. localhost:5000, not `{text}`");
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || "-._:/".contains(c);
        if text.is_empty() || text.starts_with('/') || !text.chars().all(valid) {
            anyhow::bail!("invalid --registry `{text}`: use host[:port][/path], e.g. localhost:5000");
        }
        let (host, path) = text.split_once('/').unwrap_or((text, ""));
        // Docker's rule: anything else is read as a user on Docker Hub.
        if !(host.contains(['.', ':']) || host == "localhost") {
            anyhow::bail!(
                "--registry `{text}` does not start with a registry host: use e.g. {host}.example.com or {host}:5000"
            );
        }
        Ok(Registry { host: host.to_owned(), path: path.to_owned() })
    }

    /// Whether the host is this machine: then the registry speaks plain HTTP, as docker assumes.
    pub fn is_local(&self) -> bool {
        let name = self.host.rsplit_once(':').map_or(self.host.as_str(), |(name, _)| name);
        name == "localhost" || name == "127.0.0.1"
    }

    /// Where images are named: `host[:port][/path]`.
    pub fn address(&self) -> String {
        if self.path.is_empty() { self.host.clone() } else { format!("{}/{}", self.host, self.path) }
    }

    /// The registry API's base URL, `http` for this machine and `https` elsewhere.
    pub fn api(&self) -> String {
        let scheme = if self.is_local() { "http" } else { "https" };
        format!("{scheme}://{}/v2/", self.host)
    }

    /// Where the service images go: `<address>/remedy`.
    pub fn image_repo(&self) -> String {
        format!("{}/remedy", self.address())
    }

    /// A probe that succeeds when the registry has `image` (`<host>/<repository>:<tag>`). curl,
    /// not the engine: podman 4.3 cannot inspect a plain-HTTP registry.
    pub fn has(&self, image: &str) -> Command {
        let name = image.strip_prefix(&format!("{}/", self.host)).unwrap_or(image);
        let (name, tag) = name.rsplit_once(':').unwrap_or((name, "latest"));
        let url = format!("{}{name}/manifests/{tag}", self.api());
        let quiet = ["--fail", "--silent", "--show-error", "--head", "--output", "/dev/null", "--max-time", "10"];
        Command::new("curl", quiet.into_iter().chain(["--header", MANIFEST_TYPES, &url]))
    }
}

/// What a manifest request accepts: docker's and OCI's images and lists (docker and podman push
/// either).
const MANIFEST_TYPES: &str = "Accept: application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json";

/// What a plan depends on besides the service: the run's identity and the chosen backends.
#[derive(Debug, Clone)]
pub struct Settings {
    pub run_id: String,
    pub run_dir: Utf8PathBuf,
    pub engine: Engine,
    pub target: Target,
    pub delivery: Delivery,
    pub namespace: String,
    /// Where the service images are named: `localhost/remedy` for a local engine (fully
    /// qualified, so docker, podman and the node's containerd agree), or a registry's.
    pub image_repo: String,
    pub base_image: String,
    /// Where the manifests are read from.
    pub manifests: Utf8PathBuf,
    /// How long a rollout or a Job may take.
    pub wait_timeout: Duration,
    /// Skip the specs when their inputs are unchanged since they last passed here.
    pub skip_unchanged_tests: bool,
    /// Handed to the specs' test harness after `--` (a name filter, `--skip`...).
    pub spec_args: Vec<String>,
    /// Start the builds only once the cluster exists, instead of alongside its creation.
    pub builds_after_cluster: bool,
}

impl Settings {
    pub fn kubeconfig(&self) -> Utf8PathBuf {
        match &self.target {
            Target::Kind { .. } => self.run_dir.join("kubeconfig"),
            Target::Existing { kubeconfig } => kubeconfig.clone(),
        }
    }

    /// `KIND_EXPERIMENTAL_PROVIDER=podman` on every kind call when the engine is podman.
    pub fn kind(&self, args: &[&str]) -> Command {
        let cmd = Command::new("kind", args.iter().copied());
        match self.engine {
            Engine::Podman => cmd.env("KIND_EXPERIMENTAL_PROVIDER", "podman"),
            Engine::Docker => cmd,
        }
    }

    /// The commands that run after the plan, whatever its outcome.
    pub fn teardown(&self, keep: bool) -> Vec<String> {
        match &self.target {
            Target::Kind { name, reuse } => {
                let mut steps = vec![format!("on failure: {}", self.kind_export_logs(name))];
                if !keep && !reuse {
                    steps.push(self.kind_delete(name).to_string());
                } else {
                    steps.push(format!("keep cluster {name}"));
                }
                steps
            }
            Target::Existing { .. } => {
                let mut steps = vec![format!(
                    "on failure: save events and pod logs of namespace {} to {}",
                    self.namespace,
                    self.run_dir.join("diagnostics")
                )];
                if !keep {
                    steps.push(format!(
                        "kube: delete namespace {} and the namespaces labelled with the run id",
                        self.namespace
                    ));
                }
                if let Delivery::Registry(registry) = &self.delivery {
                    steps.push(format!(
                        "keep the pushed images in {} (later runs reuse their tags)",
                        registry.address()
                    ));
                }
                steps
            }
        }
    }

    /// The image of a service; the tag is the content hash of its inputs, known once it is built.
    pub fn image(&self, bin: &str) -> String {
        self.image_tagged(bin, &format!("${{{}}}", tag_var(bin)))
    }

    /// The image of a service with a known tag.
    pub fn image_tagged(&self, bin: &str, tag: &str) -> String {
        format!("{}/{bin}:{tag}", self.image_repo)
    }

    /// What identifies the environment the specs run against: the same inputs passing against
    /// another cluster or namespace say nothing about this one.
    fn identity(&self) -> String {
        let cluster = match &self.target {
            Target::Kind { name, .. } => format!("kind {name}"),
            Target::Existing { kubeconfig } => format!("kubeconfig {kubeconfig}"),
        };
        format!("{cluster}, namespace {}", self.namespace)
    }

    /// `kind create cluster` from the run's Kind config, into the private kubeconfig.
    pub fn kind_create(&self, name: &str) -> Command {
        let config = self.run_dir.join("kind-config.yaml");
        let kubeconfig = self.kubeconfig();
        let args = ["create", "cluster", "--name", name, "--config", config.as_str()];
        self.kind(&[&args[..], &["--kubeconfig", kubeconfig.as_str(), "--wait", "5m"]].concat())
    }

    /// `kind export logs` into the report directory.
    pub fn kind_export_logs(&self, name: &str) -> Command {
        let dir = self.run_dir.join("kind-logs");
        self.kind(&["export", "logs", dir.as_str(), "--name", name])
    }

    /// `kind delete cluster`, with the private kubeconfig so the user's stays untouched.
    pub fn kind_delete(&self, name: &str) -> Command {
        let kubeconfig = self.kubeconfig();
        self.kind(&["delete", "cluster", "--name", name, "--kubeconfig", kubeconfig.as_str()])
    }
}

/// Task ids shared by the building blocks, so edges are spelled once.
pub mod ids {
    pub const CLUSTER: &str = "cluster";
    pub const CRDS: &str = "crds";
    pub const NAMESPACE: &str = "namespace";
    pub const BINARIES: &str = "build-binaries";
    pub const POSTGRESQL: &str = "postgresql";
    pub const REDIS: &str = "redis";
    pub const MIGRATIONS: &str = "migrations";
    pub const BUILD_SPECS: &str = "build-specs";
    pub const SPECS: &str = "specs";
}

/// Stages of `--strategy phased`, the seed's barriers: cluster, then images and databases,
/// then datastorage, then the service under test, then the specs.
mod stage {
    pub const CLUSTER: u8 = 1;
    pub const IMAGES_AND_INFRA: u8 = 2;
    pub const DATASTORAGE: u8 = 3;
    pub const SERVICE: u8 = 4;
    pub const SPECS: u8 = 5;
}

const CRDS: [&str; 3] =
    ["remediationrequests.remedy.dev", "signalprocessings.remedy.dev", "workflowexecutions.remedy.dev"];

/// A Service port the specs reach from the host. On Kind the node port is fixed and mapped to
/// the host port by the cluster's config; each environment has its own block of host ports so
/// environments on one machine never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exposed {
    pub service: &'static str,
    pub port: &'static str,
    pub node_port: u16,
    pub host_port: u16,
}

impl Exposed {
    /// The run variable that holds the URL, and the environment variable the specs read.
    pub fn var(&self) -> String {
        format!("URL_{}", self.service.to_uppercase())
    }
}

impl Service {
    /// The one port table: what each environment exposes to its specs. Each environment has
    /// its own block of host ports, and a node port derived from it (host port + 12000), so
    /// environments never collide, on one machine or in one shared Kind cluster.
    pub fn exposed(self) -> Vec<Exposed> {
        let port = |service, host_port: u16| Exposed { service, port: "http", node_port: host_port + 12000, host_port };
        match self {
            Service::Gateway => vec![port("gateway", 18080), port("datastorage", 18081)],
            Service::Signalprocessing => vec![port("datastorage", 18181)],
            Service::Datastorage => vec![port("datastorage", 18281)],
            Service::Remediationorchestrator => vec![port("datastorage", 18381)],
            Service::Workflowexecution => vec![port("datastorage", 18481)],
        }
    }
}

/// A plan under construction.
pub struct Env<'a> {
    settings: &'a Settings,
    exposed: Vec<Exposed>,
    /// The binaries whose images this plan builds.
    built: Vec<String>,
    tasks: Vec<Task>,
}

impl Env<'_> {
    fn add(&mut self, task: Task) {
        self.tasks.push(task);
    }

    /// The cluster, and the run's namespace in it.
    fn cluster(&mut self) {
        let s = self.settings;
        let task = match &s.target {
            Target::Kind { name, reuse } => {
                let kubeconfig = s.kubeconfig();
                let mut task = Task::new(ids::CLUSTER, Phase::Cluster, Kind::Process).estimate(150);
                if *reuse {
                    // Exporting the kubeconfig succeeds only when the cluster exists.
                    task = task.skip_if(s.kind(&[
                        "export",
                        "kubeconfig",
                        "--name",
                        name,
                        "--kubeconfig",
                        kubeconfig.as_str(),
                    ]));
                }
                task.run(s.kind_create(name))
            }
            Target::Existing { .. } => {
                Task::new(ids::CLUSTER, Phase::Cluster, Kind::Api).estimate(1).kube(KubeOp::ServerVersion)
            }
        };
        self.add(task.stage(stage::CLUSTER));
        self.add(
            Task::new(ids::NAMESPACE, Phase::Cluster, Kind::Api)
                .after(&[ids::CLUSTER])
                .stage(stage::CLUSTER)
                .estimate(2)
                .kube(KubeOp::Namespace),
        );
    }

    /// Every Remedy CRD, applied and Established.
    fn crds(&mut self) {
        let mut task =
            Task::new(ids::CRDS, Phase::Cluster, Kind::Api).after(&[ids::CLUSTER]).stage(stage::CLUSTER).estimate(3);
        for crd in CRDS {
            task = task.kube(KubeOp::Apply { manifest: self.settings.manifests.join(format!("crds/{crd}.yaml")) });
        }
        self.add(task.kube(KubeOp::CrdsEstablished { names: CRDS.iter().map(|c| c.to_string()).collect() }));
    }

    /// One cargo invocation for every binary the images need, then an image per binary and its
    /// delivery: into the Kind node, or pushed to the registry. Returns nothing; see [`Env::image_ready`].
    fn images(&mut self, binaries: &[&str]) {
        let s = self.settings;
        let mut args = vec!["build", "--locked"];
        for bin in binaries {
            args.extend(["--bin", bin]);
        }
        let after: &[&str] = if s.builds_after_cluster { &[ids::CLUSTER] } else { &[] };
        self.add(
            Task::new(ids::BINARIES, Phase::Images, Kind::Build)
                .after(after)
                .stage(stage::IMAGES_AND_INFRA)
                .estimate(60)
                .run(Command::new("cargo", args)),
        );
        for &bin in binaries {
            self.built.push(bin.to_owned());
            let context = s.run_dir.join("images").join(bin);
            let image = s.image(bin);
            let base = format!("BASE_IMAGE={}", s.base_image);
            let dockerfile = format!("services/{bin}/Dockerfile");
            let binary = format!("target/debug/{bin}");
            let mut build = Task::new(format!("build-image-{bin}"), Phase::Images, Kind::Build)
                .after(&[ids::BINARIES])
                .stage(stage::IMAGES_AND_INFRA)
                .estimate(8)
                .tag(tag_var(bin), &[&binary, &dockerfile], &[&base])
                .skip_if(Command::new(s.engine.program(), ["image", "inspect", "--format", "{{.Id}}", &image]));
            if let Delivery::Registry(registry) = &s.delivery {
                // An image the registry has need not exist here: the cluster pulls it.
                build = build.skip_if(registry.has(&image));
            }
            self.add(build.copy(&binary, context.join(bin)).run(Command::new(
                s.engine.program(),
                ["build", "--tag", &image, "--build-arg", &base, "--file", &dockerfile, context.as_str()],
            )));
            if let Delivery::Registry(registry) = &s.delivery {
                // Tags are content hashes, so a tag the registry has is this very image.
                let mut push = vec!["push"];
                if s.engine == Engine::Podman && registry.is_local() {
                    push.push("--tls-verify=false");
                }
                push.push(&image);
                self.add(
                    Task::new(format!("push-image-{bin}"), Phase::Images, Kind::Process)
                        .after(&[&format!("build-image-{bin}")])
                        .stage(stage::IMAGES_AND_INFRA)
                        .estimate(10)
                        .skip_if(registry.has(&image))
                        .run(Command::new(s.engine.program(), push)),
                );
            }
            if s.delivery == Delivery::KindLoad {
                let Target::Kind { name, .. } = &s.target else { unreachable!("kind delivery needs a Kind cluster") };
                let archive = s.run_dir.join("images").join(format!("{bin}.tar"));
                let save = match s.engine {
                    Engine::Docker => Command::new("docker", ["save", "--output", archive.as_str(), &image]),
                    Engine::Podman => Command::new(
                        "podman",
                        ["save", "--format", "docker-archive", "--output", archive.as_str(), &image],
                    ),
                };
                // As `kind load docker-image` does: an image the node already has is not loaded
                // again (the tag is a content hash, so the same tag is the same image).
                let node = format!("{name}-control-plane");
                let present = Command::new(s.engine.program(), ["exec", &node, "crictl", "inspecti", &image]);
                self.add(
                    Task::new(format!("load-image-{bin}"), Phase::Images, Kind::Process)
                        .after(&[&format!("build-image-{bin}"), ids::CLUSTER])
                        .stage(stage::IMAGES_AND_INFRA)
                        .estimate(12)
                        .skip_if(present)
                        .run(save)
                        .run(s.kind(&["load", "image-archive", archive.as_str(), "--name", name])),
                );
            }
        }
    }

    /// The task after which `bin`'s image can be used by pods.
    fn image_ready(&self, bin: &str) -> String {
        match self.settings.delivery {
            Delivery::KindLoad => format!("load-image-{bin}"),
            Delivery::None => format!("build-image-{bin}"),
            Delivery::Registry(_) => format!("push-image-{bin}"),
        }
    }

    /// Applies a manifest, waits for its Deployment to roll out, and exposes it to the specs
    /// when the port table says so.
    fn deployment(&mut self, id: &str, phase: Phase, stage: u8, deps: &[&str], estimate: u64) {
        let task = self.deployment_task(id, phase, stage, deps, estimate);
        self.add(task);
    }

    fn deployment_task(&self, id: &str, phase: Phase, stage: u8, deps: &[&str], estimate: u64) -> Task {
        let manifest = self.settings.manifests.join(format!("{id}.yaml"));
        let images = self.images_in(&manifest);
        let workload = workload_kind(&manifest, id);
        let mut task = Task::new(id, phase, Kind::Api)
            .after(deps)
            .after(&images.iter().map(String::as_str).collect::<Vec<_>>())
            .stage(stage)
            .estimate(estimate)
            .kube(KubeOp::Apply { manifest })
            .kube(KubeOp::Rollout { workload, name: id.to_owned(), timeout: self.settings.wait_timeout });
        let kind = matches!(self.settings.target, Target::Kind { .. });
        for e in self.exposed.iter().filter(|e| e.service == id) {
            task = task.kube(KubeOp::Expose {
                service: e.service.to_owned(),
                port: e.port.to_owned(),
                node_port: kind.then_some(e.node_port),
                url: kind.then(|| format!("http://127.0.0.1:{}", e.host_port)),
                var: e.var(),
            });
        }
        task
    }

    /// PostgreSQL and its credentials: the password is generated per run and never shown.
    fn postgresql(&mut self) {
        let mut task =
            self.deployment_task(ids::POSTGRESQL, Phase::Infra, stage::IMAGES_AND_INFRA, &[ids::NAMESPACE], 20);
        let literal = [("POSTGRES_USER", "remedy"), ("POSTGRES_DB", "remedy")];
        let secret = KubeOp::Secret {
            name: "postgresql-credentials".into(),
            literal: literal.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            random: vec!["POSTGRES_PASSWORD".into()],
        };
        task.steps.insert(0, Step::Kube(secret));
        self.add(task);
    }

    fn redis(&mut self) {
        self.deployment(ids::REDIS, Phase::Infra, stage::IMAGES_AND_INFRA, &[ids::NAMESPACE], 10);
    }

    /// PostgreSQL, the schema migrations Job (datastorage's image), then datastorage itself.
    fn datastorage(&mut self) {
        self.postgresql();
        let manifest = self.settings.manifests.join("datastorage-migrate.yaml");
        let images = self.images_in(&manifest);
        self.add(
            Task::new(ids::MIGRATIONS, Phase::Infra, Kind::Api)
                .after(&[ids::POSTGRESQL])
                .after(&images.iter().map(String::as_str).collect::<Vec<_>>())
                .stage(stage::DATASTORAGE)
                .estimate(8)
                .kube(KubeOp::Apply { manifest })
                .kube(KubeOp::JobComplete { job: "datastorage-migrate".into(), timeout: self.settings.wait_timeout }),
        );
        self.deployment("datastorage", Phase::Services, stage::DATASTORAGE, &[ids::MIGRATIONS], 10);
    }

    /// A service under test: its manifest applied once `deps` and the images it names are ready.
    fn service(&mut self, name: &str, deps: &[&str]) {
        self.deployment(name, Phase::Services, stage::SERVICE, deps, 10);
    }

    /// The tasks that make the images a manifest names (`${IMAGE_GATEWAY}`...) usable, for the
    /// images this plan builds: a manifest waits for exactly the images it runs.
    fn images_in(&self, manifest: &Utf8Path) -> Vec<String> {
        let text = std::fs::read_to_string(manifest).unwrap_or_default();
        self.built
            .iter()
            .filter(|bin| text.contains(&format!("${{IMAGE_{}}}", bin.to_uppercase())))
            .map(|bin| self.image_ready(bin))
            .collect()
    }

    /// The service's E2E suite, once everything it talks to is up.
    fn specs(&mut self, suite: &str, deps: &[&str]) {
        let s = self.settings;
        let suite_args = ["--locked", "--package", "remedy-e2e", "--test", suite];
        // Compiled while the environment comes up, so the specs task only runs them. After the
        // binaries: both are cargo, which builds one thing at a time anyway.
        let mut build = vec!["test", "--no-run"];
        build.extend(suite_args);
        self.add(
            Task::new(ids::BUILD_SPECS, Phase::Tests, Kind::Build)
                .after(&[ids::BINARIES])
                .stage(stage::IMAGES_AND_INFRA)
                .estimate(20)
                .run(Command::new("cargo", build)),
        );
        let mut run = vec!["test"];
        run.extend(suite_args);
        if !s.spec_args.is_empty() {
            run.push("--");
            run.extend(s.spec_args.iter().map(String::as_str));
        }
        let mut cmd = Command::new("cargo", run)
            .env("REMEDY_E2E_KUBECONFIG", s.kubeconfig().as_str())
            .env("REMEDY_E2E_NAMESPACE", &s.namespace)
            .env("REMEDY_E2E_RUN_ID", &s.run_id);
        for e in &self.exposed {
            cmd = cmd.env(format!("REMEDY_E2E_{}", e.var()), format!("${{{}}}", e.var()));
        }
        let mut task = Task::new(ids::SPECS, Phase::Tests, Kind::Process)
            .after(deps)
            .after(&[ids::BUILD_SPECS])
            .stage(stage::SPECS)
            .estimate(10);
        // A filtered run says nothing about the whole suite: it neither skips nor stamps.
        task = if s.skip_unchanged_tests && s.spec_args.is_empty() {
            // The inputs: what is deployed (each image's content hash, the manifests, the
            // third-party images), the specs' sources, and where they run.
            let mut strings: Vec<String> = self.built.iter().map(|bin| format!("${{{}}}", tag_var(bin))).collect();
            strings.extend(["${IMAGE_POSTGRES}".to_owned(), "${IMAGE_REDIS}".to_owned(), s.identity()]);
            let strings: Vec<&str> = strings.iter().map(String::as_str).collect();
            let files = ["test/e2e", "services/api/src", "Cargo.lock", s.manifests.as_str()];
            let stamp = format!("target/e2e/{suite}/specs-passed");
            task.tag("SPECS_INPUTS", &files, &strings).unless_stamped(stamp, "${SPECS_INPUTS}", vec![Step::Run(cmd)])
        } else {
            task.run(cmd)
        };
        self.add(task);
    }
}

/// Whether the manifest runs `name` as a StatefulSet or (by default) a Deployment.
fn workload_kind(manifest: &Utf8Path, name: &str) -> Workload {
    let text = std::fs::read_to_string(manifest).unwrap_or_default();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap_or_default();
    let statefulset = docs.iter().any(|d| d["kind"] == "StatefulSet" && d["metadata"]["name"] == name);
    if statefulset { Workload::StatefulSet } else { Workload::Deployment }
}

/// The run variable holding the content-hash tag of `bin`'s image.
pub fn tag_var(bin: &str) -> String {
    format!("TAG_{}", bin.to_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::Step;

    pub(super) fn settings(target: Target, delivery: Delivery, engine: Engine) -> Settings {
        Settings {
            run_id: "r1".into(),
            run_dir: "target/e2e/x/r1".into(),
            engine,
            target,
            delivery,
            namespace: "remedy-r1".into(),
            image_repo: "localhost/remedy".into(),
            base_image: "debian:bookworm-slim".into(),
            manifests: crate::project_root().join("test/manifests"),
            wait_timeout: Duration::from_secs(180),
            skip_unchanged_tests: false,
            spec_args: Vec::new(),
            builds_after_cluster: false,
        }
    }

    pub(super) fn kind() -> Settings {
        settings(Target::Kind { name: "remedy-r1".into(), reuse: false }, Delivery::KindLoad, Engine::Docker)
    }

    pub(super) fn deps_of(plan: &Plan, id: &str) -> Vec<String> {
        let mut deps = plan.tasks()[plan.index_of(id).unwrap()].deps.clone();
        deps.sort();
        deps
    }

    #[test]
    fn every_service_has_a_valid_plan_on_every_backend() {
        let targets = [
            settings(Target::Kind { name: "c".into(), reuse: false }, Delivery::KindLoad, Engine::Docker),
            settings(Target::Kind { name: "c".into(), reuse: false }, Delivery::KindLoad, Engine::Podman),
            settings(Target::Existing { kubeconfig: "k".into() }, Delivery::None, Engine::Docker),
            registry("localhost:5000", Engine::Docker),
            registry("registry.example.com/team", Engine::Podman),
        ];
        for service in Service::value_variants() {
            for s in &targets {
                let plan = service.plan(s).unwrap_or_else(|e| panic!("{}: {e}", service.name()));
                assert_eq!(plan.tasks().last().unwrap().id, ids::SPECS, "{}", service.name());
                assert!(plan.index_of(service.name()).is_some(), "{} deploys itself", service.name());
            }
        }
    }

    #[test]
    fn podman_sets_the_kind_provider_on_every_kind_call() {
        let s = settings(Target::Kind { name: "c".into(), reuse: false }, Delivery::KindLoad, Engine::Podman);
        let plan = Service::Gateway.plan(&s).unwrap();
        let kind_calls: Vec<&Command> = plan
            .tasks()
            .iter()
            .flat_map(|t| &t.steps)
            .filter_map(|step| match step {
                Step::Run(cmd) if cmd.program == "kind" => Some(cmd),
                _ => None,
            })
            .collect();
        assert_eq!(kind_calls.len(), 3, "create + two loads");
        for cmd in kind_calls {
            assert_eq!(cmd.env, [("KIND_EXPERIMENTAL_PROVIDER".to_string(), "podman".to_string())], "{cmd}");
        }
        assert!(s.teardown(false).iter().all(|line| line.contains("KIND_EXPERIMENTAL_PROVIDER=podman")));
    }

    #[test]
    fn builds_overlap_cluster_creation_unless_told_not_to() {
        assert_eq!(deps_of(&Service::Gateway.plan(&kind()).unwrap(), ids::BINARIES), Vec::<String>::new());
        let mut s = kind();
        s.builds_after_cluster = true;
        assert_eq!(deps_of(&Service::Gateway.plan(&s).unwrap(), ids::BINARIES), [ids::CLUSTER]);
    }

    #[test]
    fn ports_are_unique_across_environments() {
        let all: Vec<Exposed> = Service::value_variants().iter().flat_map(|s| s.exposed()).collect();
        let mut host: Vec<u16> = all.iter().map(|e| e.host_port).collect();
        let mut node: Vec<u16> = all.iter().map(|e| e.node_port).collect();
        host.sort();
        host.dedup();
        node.sort();
        node.dedup();
        assert_eq!((host.len(), node.len()), (all.len(), all.len()), "{all:?}");
        assert!(node.iter().all(|p| (30000..=32767).contains(p)), "NodePort range: {node:?}");
    }

    #[test]
    fn an_image_the_kind_node_has_is_not_loaded_again() {
        let s = settings(Target::Kind { name: "c".into(), reuse: false }, Delivery::KindLoad, Engine::Podman);
        let plan = Service::Gateway.plan(&s).unwrap();
        let load = &plan.tasks()[plan.index_of("load-image-gateway").unwrap()];
        let Step::SkipIf(probe) = &load.steps[0] else { panic!("the probe comes first: {:?}", load.steps) };
        assert_eq!(
            probe.to_string(),
            "podman exec c-control-plane crictl inspecti localhost/remedy/gateway:${TAG_GATEWAY}"
        );
    }

    #[test]
    fn unchanged_specs_are_skipped_only_when_asked_and_per_environment() {
        let steps = |s: &Settings| {
            let plan = Service::Gateway.plan(s).unwrap();
            plan.tasks()[plan.index_of(ids::SPECS).unwrap()].steps.clone()
        };
        assert!(matches!(steps(&kind())[..], [Step::Run(_)]));
        let mut s = kind();
        s.skip_unchanged_tests = true;
        let [Step::Tag { var, strings, files }, Step::SkipIfStamped { .. }, Step::Run(_), Step::Stamp { .. }] =
            &steps(&s)[..]
        else {
            panic!("{:?}", steps(&s));
        };
        assert_eq!(var, "SPECS_INPUTS");
        for input in
            ["${TAG_GATEWAY}", "${TAG_DATASTORAGE}", "${IMAGE_POSTGRES}", "kind remedy-r1, namespace remedy-r1"]
        {
            assert!(strings.contains(&input.to_owned()), "{input} in {strings:?}");
        }
        assert!(files.iter().any(|f| f.ends_with("test/manifests")) && files.contains(&"test/e2e".into()));
    }

    #[test]
    fn spec_args_go_to_the_harness_and_a_filtered_run_never_skips_nor_stamps() {
        let mut s = kind();
        s.skip_unchanged_tests = true;
        s.spec_args = vec!["dedup".into(), "--skip".into(), "restart".into()];
        let plan = Service::Gateway.plan(&s).unwrap();
        let steps = &plan.tasks()[plan.index_of(ids::SPECS).unwrap()].steps;
        let [Step::Run(cmd)] = &steps[..] else { panic!("{steps:?}") };
        assert!(
            cmd.to_string()
                .ends_with("cargo test --locked --package remedy-e2e --test gateway -- dedup --skip restart"),
            "{cmd}"
        );
    }

    #[test]
    fn the_rollout_waits_for_the_workload_kind_the_manifest_declares() {
        let plan = Service::Datastorage.plan(&kind()).unwrap();
        let rollout = |id: &str| {
            plan.tasks()[plan.index_of(id).unwrap()].steps.iter().find_map(|s| match s {
                Step::Kube(KubeOp::Rollout { workload, .. }) => Some(*workload),
                _ => None,
            })
        };
        assert_eq!(rollout(ids::POSTGRESQL), Some(Workload::StatefulSet));
        assert_eq!(rollout("datastorage"), Some(Workload::Deployment));
    }

    #[test]
    fn the_database_password_is_generated_not_written_down() {
        let plan = Service::Datastorage.plan(&kind()).unwrap();
        let postgresql = &plan.tasks()[plan.index_of(ids::POSTGRESQL).unwrap()];
        let Step::Kube(KubeOp::Secret { name, literal, random }) = &postgresql.steps[0] else {
            panic!("the credentials come before the manifest: {:?}", postgresql.steps[0]);
        };
        assert_eq!(name, "postgresql-credentials");
        assert_eq!(random, &["POSTGRES_PASSWORD"]);
        assert!(literal.iter().all(|(k, _)| !k.contains("PASSWORD")));
    }

    pub(super) fn registry(address: &str, engine: Engine) -> Settings {
        let registry = Registry::parse(address).unwrap();
        let mut s = settings(Target::Existing { kubeconfig: "k".into() }, Delivery::Registry(registry.clone()), engine);
        s.image_repo = registry.image_repo();
        s
    }

    fn commands(plan: &Plan) -> Vec<&Command> {
        plan.tasks()
            .iter()
            .flat_map(|t| &t.steps)
            .filter_map(|step| match step {
                Step::Run(cmd) | Step::SkipIf(cmd) => Some(cmd),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn registry_delivery_pushes_each_image_after_its_build_and_deploys_after_the_push() {
        let s = registry("localhost:5000", Engine::Docker);
        for service in Service::value_variants() {
            let plan = service.plan(&s).unwrap();
            let pushes: Vec<&Task> = plan.tasks().iter().filter(|t| t.id.starts_with("push-image-")).collect();
            assert!(!pushes.is_empty(), "{} pushes nothing", service.name());
            for push in pushes {
                let bin = push.id.strip_prefix("push-image-").unwrap();
                assert_eq!(deps_of(&plan, &push.id), [format!("build-image-{bin}")]);
            }
            for task in plan.tasks() {
                assert!(
                    !task.deps.iter().any(|d| d.starts_with("build-image-") && !task.id.starts_with("push-image-")),
                    "{} waits for a build instead of its push: {:?}",
                    task.id,
                    task.deps
                );
            }
            for cmd in commands(&plan) {
                assert_ne!(cmd.program, "kind", "{cmd}");
                let images: Vec<&String> = cmd.args.iter().filter(|a| a.contains("${TAG_")).collect();
                for image in images {
                    assert!(
                        image.starts_with("localhost:5000/remedy/")
                            || image.starts_with("http://localhost:5000/v2/remedy/"),
                        "{cmd}"
                    );
                }
            }
        }
        let plan = Service::Datastorage.plan(&s).unwrap();
        assert_eq!(deps_of(&plan, ids::MIGRATIONS), ["postgresql", "push-image-datastorage"]);
        assert_eq!(deps_of(&plan, "datastorage"), ["migrations", "push-image-datastorage"]);
        let push = &plan.tasks()[plan.index_of("push-image-datastorage").unwrap()];
        let [Step::SkipIf(probe), Step::Run(cmd)] = &push.steps[..] else { panic!("{:?}", push.steps) };
        assert_eq!(cmd.to_string(), "docker push localhost:5000/remedy/datastorage:${TAG_DATASTORAGE}");
        assert_eq!(probe.program, "curl");
        assert_eq!(
            probe.args.last().unwrap(),
            "http://localhost:5000/v2/remedy/datastorage/manifests/${TAG_DATASTORAGE}"
        );
        // The build is skipped when the registry has the tag too: the cluster pulls it.
        let build = &plan.tasks()[plan.index_of("build-image-datastorage").unwrap()];
        assert!(build.steps.iter().any(|step| step == &Step::SkipIf(probe.clone())), "{:?}", build.steps);
    }

    #[test]
    fn podman_skips_tls_verification_only_for_a_registry_on_this_machine() {
        let push = |address: &str| {
            let plan = Service::Datastorage.plan(&registry(address, Engine::Podman)).unwrap();
            let push = &plan.tasks()[plan.index_of("push-image-datastorage").unwrap()];
            let Some(Step::Run(cmd)) = push.steps.last() else { panic!("{:?}", push.steps) };
            cmd.to_string()
        };
        assert_eq!(
            push("127.0.0.1:5000"),
            "podman push --tls-verify=false 127.0.0.1:5000/remedy/datastorage:${TAG_DATASTORAGE}"
        );
        assert_eq!(
            push("registry.example.com/team"),
            "podman push registry.example.com/team/remedy/datastorage:${TAG_DATASTORAGE}"
        );
        let plan = Service::Datastorage.plan(&registry("registry.example.com/team", Engine::Podman)).unwrap();
        let push = &plan.tasks()[plan.index_of("push-image-datastorage").unwrap()];
        let Step::SkipIf(probe) = &push.steps[0] else { panic!("{:?}", push.steps) };
        assert_eq!(
            probe.args.last().unwrap(),
            "https://registry.example.com/v2/team/remedy/datastorage/manifests/${TAG_DATASTORAGE}"
        );
    }

    #[test]
    fn registries_are_host_port_and_path() {
        let r = Registry::parse("registry.example.com/team/").unwrap();
        assert_eq!((r.host.as_str(), r.path.as_str()), ("registry.example.com", "team"));
        assert_eq!(r.image_repo(), "registry.example.com/team/remedy");
        assert_eq!(r.api(), "https://registry.example.com/v2/");
        let r = Registry::parse("localhost:5000").unwrap();
        assert!(r.is_local());
        assert_eq!(r.api(), "http://localhost:5000/v2/");
        assert!(Registry::parse("127.0.0.1:40123").unwrap().is_local());
        assert!(!Registry::parse("localhost.example.com").unwrap().is_local());
        for bad in ["", "http://localhost:5000", "team/images", "local host:5000", "/x"] {
            assert!(Registry::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn existing_cluster_has_no_kind_commands() {
        let s = settings(Target::Existing { kubeconfig: "k".into() }, Delivery::None, Engine::Docker);
        for service in Service::value_variants() {
            let plan = service.plan(&s).unwrap();
            let programs: Vec<&str> = plan
                .tasks()
                .iter()
                .flat_map(|t| &t.steps)
                .filter_map(|step| match step {
                    Step::Run(cmd) => Some(cmd.program.as_str()),
                    _ => None,
                })
                .collect();
            assert!(!programs.contains(&"kind"), "{programs:?}");
        }
    }
}
