//! A service's end-to-end environment as a plan: the building blocks (the cluster and its
//! namespace, the CRDs, the images, PostgreSQL and the migrations, Redis, a deployment, the
//! specs, teardown) put together as the service's declaration (`crate::catalog`) says, on the
//! backend and with the builder the settings choose.

mod settings;
mod sources;

use camino::{Utf8Path, Utf8PathBuf};

pub use settings::{Settings, run_id};
pub use sources::Manifest;

use crate::backends::Backend;
use crate::builders::{BuildCx, image_task, image_var, tag_var};
use crate::catalog::{Exposed, Infra, Service};
use crate::phases::{Command, Kind, KubeOp, Phase, Plan, Step, Task, When, var_ref};

/// Task ids shared by the building blocks, so edges are spelled once.
pub mod ids {
    pub use crate::backends::CLUSTER;
    pub const CRDS: &str = "crds";
    pub const NAMESPACE: &str = "namespace";
    pub const POSTGRESQL: &str = "postgresql";
    pub const REDIS: &str = "redis";
    pub const MIGRATIONS: &str = "migrations";
    pub const DATASTORAGE: &str = "datastorage";
    pub const BUILD_SPECS: &str = "build-specs";
    pub const SPECS: &str = "specs";
}

/// Run variables every manifest may read, set by the namespace task.
const NAMESPACE_VAR: &str = "NAMESPACE";
const PULL_POLICY_VAR: &str = "IMAGE_PULL_POLICY";

/// Stages of `--strategy phased`, the seed's barriers: cluster, then images and databases,
/// then datastorage, then the service under test, then the specs.
mod stage {
    pub const CLUSTER: u8 = 1;
    pub const IMAGES_AND_INFRA: u8 = 2;
    pub const DATASTORAGE: u8 = 3;
    pub const SERVICE: u8 = 4;
    pub const SPECS: u8 = 5;
}

/// The validated plan of `service`'s environment: its tasks, then teardown. A manifest that is
/// missing or malformed, or that names an image the plan does not build, is an error naming it.
pub fn plan(service: &Service, settings: &Settings) -> anyhow::Result<Plan> {
    let mut env = Env {
        settings,
        backend: settings.cluster.backend(),
        exposed: service.exposed(),
        ready: Vec::new(),
        applied: Vec::new(),
        third_party: Vec::new(),
        tasks: Vec::new(),
    };
    env.cluster();
    if service.crds {
        env.crds()?;
    }
    env.images(&service.images.iter().map(String::as_str).collect::<Vec<_>>());
    for infra in &service.infra {
        match infra {
            Infra::Datastorage => env.datastorage()?,
            Infra::Redis => env.redis()?,
        }
    }
    for deploy in &service.deploy {
        let after: Vec<&str> = deploy.after.iter().map(String::as_str).collect();
        env.deployment(&deploy.name, Phase::Services, stage::SERVICE, &after, 10)?;
    }
    let specs_after: Vec<&str> = service.specs_after.iter().map(String::as_str).collect();
    env.specs(&service.name, &specs_after);
    env.teardown();
    Plan::new(env.tasks)
}

/// A plan under construction.
struct Env<'a> {
    settings: &'a Settings,
    backend: &'a dyn Backend,
    exposed: Vec<Exposed>,
    /// For each binary whose image this plan builds, the task after which pods can use it.
    ready: Vec<(String, String)>,
    /// The manifests applied so far.
    applied: Vec<Utf8PathBuf>,
    /// The run variables naming the third-party images deployed so far.
    third_party: Vec<&'static str>,
    tasks: Vec<Task>,
}

impl Env<'_> {
    fn add(&mut self, task: Task) {
        self.tasks.push(task);
    }

    /// The cluster, and the run's namespace in it, which sets what every manifest reads.
    fn cluster(&mut self) {
        let s = self.settings;
        self.add(self.backend.cluster(&self.exposed, s.engine).stage(stage::CLUSTER));
        self.add(
            self.using_the_api(Task::new(ids::NAMESPACE, Phase::Cluster, Kind::Api))
                .after(&[ids::CLUSTER])
                .stage(stage::CLUSTER)
                .estimate(2)
                .set(NAMESPACE_VAR, &s.namespace)
                // Tags are content hashes and never move.
                .set(PULL_POLICY_VAR, "IfNotPresent")
                .kube(KubeOp::Namespace),
        );
    }

    /// `task`, after the backend's check that the cluster is ready, if it has one: the tasks that
    /// use the API first start with it.
    fn using_the_api(&self, task: Task) -> Task {
        match self.backend.readiness(self.timeout()) {
            Some(ready) => task.kube(ready),
            None => task,
        }
    }

    /// Every Remedy CRD (`<manifests>/crds/*.yaml`), applied and Established.
    fn crds(&mut self) -> anyhow::Result<()> {
        let manifests = Manifest::crds(&self.settings.manifests)?;
        let mut task = self
            .using_the_api(Task::new(ids::CRDS, Phase::Cluster, Kind::Api))
            .after(&[ids::CLUSTER])
            .stage(stage::CLUSTER)
            .estimate(3)
            .inputs(manifests.iter().map(|m| m.path.clone()));
        let mut names = Vec::new();
        for manifest in manifests {
            names.extend(manifest.names("CustomResourceDefinition"));
            task = task.kube(manifest.apply());
        }
        self.add(task.kube(KubeOp::CrdsEstablished { names }));
        Ok(())
    }

    /// The builder's tasks for every binary's image, then each image's way to the cluster.
    fn images(&mut self, bins: &[&str]) {
        let s = self.settings;
        let image_repo = self.backend.image_repo();
        let crates: Vec<String> = bins.iter().map(|bin| format!("services/{bin}")).collect();
        let sources = sources::crates(&crates.iter().map(String::as_str).collect::<Vec<_>>());
        let after: &[&str] = if s.builds_after_cluster { &[ids::CLUSTER] } else { &[] };
        let delivered = |image: &str| self.backend.delivered(image);
        let cx = BuildCx {
            engine: s.engine,
            target: &s.build.target,
            run_dir: &s.run_dir,
            image_repo: &image_repo,
            base_image: &s.images.base,
            after,
            sources: &sources,
            delivered: &delivered,
        };
        // Each image's delivery right after its build, so the plan reads in the order things happen.
        for task in s.build.builder.get().tasks(bins, &cx) {
            let image = bins.iter().find(|bin| task.id == image_task(bin));
            self.add(task.stage(stage::IMAGES_AND_INFRA));
            let Some(&bin) = image else { continue };
            let delivery = self.backend.deliver(bin, &cx.image(bin), s.engine, Some(&image_task(bin)));
            for task in delivery.tasks {
                self.add(task.stage(stage::IMAGES_AND_INFRA));
            }
            self.ready.push((bin.to_owned(), delivery.ready.unwrap_or_else(|| image_task(bin))));
        }
    }

    /// Applies a manifest, waits for its workload to roll out, and exposes it to the specs
    /// when the port table says so.
    fn deployment(&mut self, id: &str, phase: Phase, stage: u8, deps: &[&str], estimate: u64) -> anyhow::Result<()> {
        let task = self.deployment_task(id, phase, stage, deps, estimate)?;
        self.add(task);
        Ok(())
    }

    fn deployment_task(
        &mut self,
        id: &str,
        phase: Phase,
        stage: u8,
        deps: &[&str],
        estimate: u64,
    ) -> anyhow::Result<Task> {
        let manifest = self.manifest(&format!("{id}.yaml"))?;
        let images = self.images_in(&manifest);
        let timeout = self.timeout();
        let mut task = Task::new(id, phase, Kind::Api)
            .after(deps)
            .after(&images.iter().map(String::as_str).collect::<Vec<_>>())
            .stage(stage)
            .estimate(estimate)
            .inputs([manifest.path.clone()])
            .kube(manifest.apply())
            .kube(KubeOp::Rollout { workload: manifest.workload(id), name: id.to_owned(), timeout });
        for e in self.exposed.iter().filter(|e| e.service == id) {
            let (node_port, url) = self.backend.expose(e);
            task = task.kube(KubeOp::Expose {
                service: e.service.clone(),
                port: e.port.to_owned(),
                node_port,
                url,
                var: e.var(),
            });
        }
        Ok(task)
    }

    fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.settings.wait_timeout_secs)
    }

    /// `<manifests>/<file>`, read now, and remembered as an input of the specs.
    fn manifest(&mut self, file: &str) -> anyhow::Result<Manifest> {
        let manifest = Manifest::load(&self.settings.manifests.join(file))?;
        self.applied.push(manifest.path.clone());
        Ok(manifest)
    }

    /// The tasks that make the images a manifest names (`${IMAGE_GATEWAY}`...) usable, for the
    /// images this plan builds: a manifest waits for exactly the images it runs.
    fn images_in(&self, manifest: &Manifest) -> Vec<String> {
        let reads = manifest.reads();
        self.ready.iter().filter(|(bin, _)| reads.contains(&image_var(bin).as_str())).map(|(_, t)| t.clone()).collect()
    }

    /// PostgreSQL and its credentials: the password is generated per run and never shown.
    fn postgresql(&mut self) -> anyhow::Result<()> {
        let load = self.third_party_delivery("postgres", &self.settings.images.postgres.clone());
        let mut task =
            self.deployment_task(ids::POSTGRESQL, Phase::Infra, stage::IMAGES_AND_INFRA, &[ids::NAMESPACE], 20)?;
        task = task.after(&load.iter().map(String::as_str).collect::<Vec<_>>());
        let literal = [("POSTGRES_USER", "remedy"), ("POSTGRES_DB", "remedy")];
        let secret = KubeOp::Secret {
            name: "postgresql-credentials".into(),
            literal: literal.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            random: vec!["POSTGRES_PASSWORD".into()],
        };
        task.steps.insert(0, Step::Kube(secret));
        let image = self.settings.images.postgres.clone();
        self.add_third_party(task, "IMAGE_POSTGRES", image);
        Ok(())
    }

    fn redis(&mut self) -> anyhow::Result<()> {
        let load = self.third_party_delivery("redis", &self.settings.images.redis.clone());
        let task = self.deployment_task(ids::REDIS, Phase::Infra, stage::IMAGES_AND_INFRA, &[ids::NAMESPACE], 10)?;
        let task = task.after(&load.iter().map(String::as_str).collect::<Vec<_>>());
        let image = self.settings.images.redis.clone();
        self.add_third_party(task, "IMAGE_REDIS", image);
        Ok(())
    }

    /// The backend's way of getting a third-party image from the engine to the cluster, if it
    /// has one; the task to wait for.
    fn third_party_delivery(&mut self, name: &str, image: &str) -> Option<String> {
        let delivery = self.backend.deliver(name, image, self.settings.engine, None);
        for task in delivery.tasks {
            self.add(task.stage(stage::IMAGES_AND_INFRA));
        }
        delivery.ready
    }

    /// Adds a task deploying a third-party image, which it sets `var` to before it applies.
    fn add_third_party(&mut self, mut task: Task, var: &'static str, image: String) {
        let apply = task.steps.iter().position(|s| matches!(s, Step::Kube(KubeOp::Apply { .. }))).unwrap_or(0);
        task.steps.insert(apply, Step::Set { var: var.to_owned(), value: image });
        self.third_party.push(var);
        self.add(task);
    }

    /// PostgreSQL, the schema migrations Job (datastorage's image), then datastorage itself.
    fn datastorage(&mut self) -> anyhow::Result<()> {
        self.postgresql()?;
        let manifest = self.manifest("datastorage-migrate.yaml")?;
        let images = self.images_in(&manifest);
        let timeout = self.timeout();
        self.add(
            Task::new(ids::MIGRATIONS, Phase::Infra, Kind::Api)
                .after(&[ids::POSTGRESQL])
                .after(&images.iter().map(String::as_str).collect::<Vec<_>>())
                .stage(stage::DATASTORAGE)
                .estimate(8)
                .inputs([manifest.path.clone()])
                .kube(KubeOp::DeleteJob { job: "datastorage-migrate".into(), timeout })
                .kube(manifest.apply())
                .kube(KubeOp::JobComplete { job: "datastorage-migrate".into(), timeout }),
        );
        self.deployment(ids::DATASTORAGE, Phase::Services, stage::DATASTORAGE, &[ids::MIGRATIONS], 10)
    }

    /// The service's E2E suite, once everything it talks to is up, run by cargo-nextest: a
    /// process per spec, JUnit with each spec's time, slow specs named.
    fn specs(&mut self, suite: &str, deps: &[&str]) {
        let s = self.settings;
        let inputs = sources::suite(suite);
        let suite_args = ["--locked", "--package", "remedy-e2e", "--test", suite];
        // Compiled while the environment comes up, so the specs task only runs them. After the
        // builder's cargo, if it runs one here: cargo builds one thing at a time anyway.
        let mut build = vec!["nextest", "run", "--no-run"];
        build.extend(suite_args);
        let cargo: Vec<&str> = s.build.builder.get().host_cargo().into_iter().collect();
        self.add(
            Task::new(ids::BUILD_SPECS, Phase::Tests, Kind::Build)
                .after(&cargo)
                .stage(stage::IMAGES_AND_INFRA)
                .estimate(20)
                .inputs(inputs.iter().cloned())
                .run(Command::new("cargo", build)),
        );
        let config = s.run_dir.join("nextest.toml");
        let mut run = vec!["nextest", "run", "--config-file", config.as_str(), "--profile", NEXTEST_PROFILE];
        // Whether a filter matched anything is the xtask's to say, from the JUnit report.
        run.push("--no-tests=pass");
        run.extend(suite_args);
        let (options, filters) = nextest_args(&s.spec_args);
        run.extend(options.iter().map(String::as_str));
        if !filters.is_empty() {
            run.push("--");
            run.extend(filters.iter().map(String::as_str));
        }
        let mut cmd = Command::new("cargo", run)
            .env("REMEDY_E2E_KUBECONFIG", self.backend.kubeconfig().as_str())
            .env("REMEDY_E2E_NAMESPACE", &s.namespace)
            .env("REMEDY_E2E_RUN_ID", &s.run_id);
        for e in &self.exposed {
            cmd = cmd.env(format!("REMEDY_E2E_{}", e.var()), var_ref(&e.var()));
        }
        let mut task = Task::new(ids::SPECS, Phase::Tests, Kind::Process)
            .after(deps)
            .after(&[ids::BUILD_SPECS])
            .stage(stage::SPECS)
            .estimate(10)
            .inputs(inputs.iter().cloned());
        let configured = Step::Write { path: config.clone(), text: nextest_config(&s.run_dir, suite) };
        // A filtered run says nothing about the whole suite: it neither skips nor stamps.
        task = if s.skip_unchanged_tests && s.spec_args.is_empty() {
            // The inputs: what is deployed (each image's content hash, the manifests, the
            // third-party images), the specs' sources, and where they run.
            let mut strings: Vec<String> = self.ready.iter().map(|(bin, _)| var_ref(&tag_var(bin))).collect();
            strings.extend(self.third_party.iter().map(|var| var_ref(var)));
            strings.push(format!("{}, namespace {}", self.backend.identity(), s.namespace));
            let strings: Vec<&str> = strings.iter().map(String::as_str).collect();
            let files: Vec<&str> = inputs.iter().chain(&self.applied).map(|p| p.as_str()).collect();
            let stamp = format!("target/e2e/{suite}/specs-passed");
            let steps = vec![configured, Step::Run(cmd)];
            task.tag("SPECS_INPUTS", &files, &strings).unless_stamped(stamp, "${SPECS_INPUTS}", steps)
        } else {
            task.step(configured).run(cmd)
        };
        self.add(task);
    }

    /// The backend's teardown, and after a successful run the pruning of older images.
    fn teardown(&mut self) {
        let s = self.settings;
        for task in self.backend.teardown(&s.run_dir, s.engine) {
            self.add(task);
        }
        if let Some(keep) = s.keep_images {
            let images = self
                .ready
                .iter()
                .map(|(bin, _)| format!("{}/{bin}:{}", self.backend.image_repo(), var_ref(&tag_var(bin))));
            let node = self.backend.node_images();
            let prune = Step::Prune { program: s.engine.program().to_owned(), images: images.collect(), keep, node };
            self.add(Task::teardown("prune-images", Kind::Process, When::Succeeded).step(prune));
        }
    }
}

/// The nextest profile the specs run with.
pub const NEXTEST_PROFILE: &str = "e2e";

/// Where nextest writes the JUnit report of the specs run with `run_dir`.
pub fn nextest_junit(run_dir: &Utf8Path) -> Utf8PathBuf {
    run_dir.join("nextest").join(NEXTEST_PROFILE).join("junit.xml")
}

/// The run's nextest configuration: its files in the run's directory, and how the specs run.
fn nextest_config(run_dir: &Utf8Path, suite: &str) -> String {
    format!(
        "# Written by `cargo xtask e2e` for this run.\n\
         [store]\ndir = \"{}\"\n\n\
         [profile.{NEXTEST_PROFILE}]\n\
         # The specs wait on the cluster, not on the CPU.\ntest-threads = 8\n\
         fail-fast = false\n\
         # A flaky spec is a failing one: no retries.\nretries = 0\n\
         slow-timeout = {{ period = \"30s\" }}\n\
         final-status-level = \"slow\"\n\n\
         [profile.{NEXTEST_PROFILE}.junit]\npath = \"junit.xml\"\nreport-name = \"{suite}\"\nstore-failure-output = true\n",
        run_dir.join("nextest")
    )
}

/// The arguments given after `--` split into nextest's options (`--test-threads N`) and what
/// goes after its own `--` (name filters, `--skip NAME`, `--exact`, `--ignored`).
fn nextest_args(spec_args: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut options, mut filters) = (Vec::new(), Vec::new());
    let mut args = spec_args.iter();
    while let Some(arg) = args.next() {
        if arg == "--test-threads" {
            options.push(arg.clone());
            options.extend(args.next().cloned());
        } else if let Some(n) = arg.strip_prefix("--test-threads=") {
            options.extend(["--test-threads".to_owned(), n.to_owned()]);
        } else {
            filters.push(arg.clone());
        }
    }
    (options, filters)
}

#[cfg(test)]
mod tests;
