//! A timing profile: which service's plan to replay, and how long each of its tasks took.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail, format_err};
use camino::{Utf8Path, Utf8PathBuf};
use clap::ValueEnum;
use serde::Deserialize;

use crate::backends::{Cluster, ExistingCluster, KindCluster, Lifecycle};
use crate::builders::Engine;
use crate::catalog::{Service, catalog};
use crate::envs::{self, Settings};
use crate::flags::ClusterMode;
use crate::phases::Plan;

/// A parsed profile. Durations are seconds of the original run.
#[derive(Debug)]
pub struct Profile {
    pub path: Utf8PathBuf,
    pub service: &'static Service,
    pub backend: ClusterMode,
    pub engine: Engine,
    pub tasks: BTreeMap<String, f64>,
    pub targets: Targets,
}

/// What the profile's results should reach; shown next to them, never an exit code.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    pub max_dag_over_critical_path: Option<f64>,
    /// Against the best makespan the pools allow (`phases::bound`).
    pub max_dag_over_best: Option<f64>,
    pub min_sequential_over_dag: Option<f64>,
    pub min_phased_over_dag: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    service: String,
    backend: Option<String>,
    engine: Option<String>,
    tasks: BTreeMap<String, f64>,
    #[serde(default)]
    targets: Targets,
}

impl Profile {
    pub fn load(path: &Utf8Path) -> anyhow::Result<Profile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read profile {path} (pass one with --profile PATH)"))?;
        Profile::parse(path, &text)
    }

    pub fn parse(path: &Utf8Path, text: &str) -> anyhow::Result<Profile> {
        let raw: Raw = toml::from_str(text).map_err(|err| {
            let line = err.span().map(|span| text[..span.start].lines().count().max(1));
            let at = line.map(|l| format!(" line {l}:")).unwrap_or_default();
            let message = err.message().trim().replace('\n', " ");
            format_err!("malformed profile {path}:{at} {message} (see test/bench/profiles/seed-gateway.toml)")
        })?;
        let service = catalog().get(&raw.service).ok_or_else(|| {
            format_err!(
                "profile {path}: unknown service `{}`; use one of {}",
                raw.service,
                catalog().names().join(", ")
            )
        })?;
        let backend = match raw.backend.as_deref() {
            None => ClusterMode::Kind,
            Some(name) => ClusterMode::from_str(name, false)
                .map_err(|_| format_err!("profile {path}: unknown backend `{name}`; use kind or existing"))?,
        };
        let engine = match raw.engine.as_deref() {
            None => Engine::Docker,
            Some(name) => Engine::from_str(name, false)
                .map_err(|_| format_err!("profile {path}: unknown engine `{name}`; use docker or podman"))?,
        };
        for (id, &secs) in &raw.tasks {
            if !(secs.is_finite() && secs >= 0.0) {
                bail!("profile {path}: task `{id}` lasts {secs}; durations are seconds >= 0");
            }
        }
        Ok(Profile { path: path.to_owned(), service, backend, engine, tasks: raw.tasks, targets: raw.targets })
    }

    /// A profile of the run whose `report.json` this is: its service, backend and every
    /// task's duration, with the targets every profile has (dag within 3% of the best).
    pub fn from_report(path: &Utf8Path) -> anyhow::Result<Profile> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
        let report: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{path} is not valid JSON"))?;
        let title = report["title"].as_str().unwrap_or_default();
        let name = report["service"].as_str().unwrap_or_else(|| title.strip_suffix(" end-to-end").unwrap_or(title));
        let service = catalog()
            .get(name)
            .ok_or_else(|| format_err!("{path}: not the report of a service's run (service `{name}`)"))?;
        let tasks = report["tasks"].as_array().ok_or_else(|| format_err!("{path} has no tasks"))?;
        let mut durations = BTreeMap::new();
        let mut backend = ClusterMode::Kind;
        for task in tasks {
            let id = task["id"].as_str().ok_or_else(|| format_err!("{path}: a task without an id"))?;
            if id == "cluster" && task["kind"] == "api" {
                backend = ClusterMode::Existing;
            }
            match task["duration_s"].as_f64() {
                Some(secs) => {
                    durations.insert(id.to_owned(), secs);
                }
                None if task["phase"] == "teardown" => {}
                None => bail!("{path}: task `{id}` never ran; make the profile from a run that got to its end"),
            }
        }
        let targets = Targets { max_dag_over_best: Some(1.03), ..Targets::default() };
        Ok(Profile { path: path.to_owned(), service, backend, engine: Engine::Docker, tasks: durations, targets })
    }

    /// The profile as a file `load` reads back.
    pub fn to_toml(&self) -> String {
        let backend = match self.backend {
            ClusterMode::Kind => "kind",
            ClusterMode::Existing => "existing",
        };
        let mut out = format!(
            "# Made by `cargo xtask bench --profile-from {}`: that run's durations, in seconds.\n\
             service = \"{}\"\nbackend = \"{backend}\"\nengine = \"{}\"\n\n[tasks]\n",
            self.path,
            self.service.name,
            self.engine.program()
        );
        for (id, secs) in &self.tasks {
            out.push_str(&format!("{id} = {secs}\n"));
        }
        out.push_str("\n[targets]\n");
        for (name, value) in [
            ("max_dag_over_critical_path", self.targets.max_dag_over_critical_path),
            ("max_dag_over_best", self.targets.max_dag_over_best),
            ("min_sequential_over_dag", self.targets.min_sequential_over_dag),
            ("min_phased_over_dag", self.targets.min_phased_over_dag),
        ] {
            if let Some(value) = value {
                out.push_str(&format!("{name} = {value}\n"));
            }
        }
        out
    }

    /// The service's real plan as `cargo xtask e2e` would build it on this backend, with the
    /// real manifests; `run_dir` only appears in the commands' arguments.
    pub fn real_plan(&self, run_dir: &Utf8Path) -> anyhow::Result<Plan> {
        let cluster = match self.backend {
            ClusterMode::Kind => {
                Cluster::Kind(KindCluster::new("remedy-bench".into(), Lifecycle::Fresh { keep: false }, run_dir)?)
            }
            ClusterMode::Existing => Cluster::Existing(ExistingCluster {
                kubeconfig: run_dir.join("kubeconfig"),
                registry: None,
                keep: false,
            }),
        };
        let mut settings = Settings::defaults(&self.service.name, "bench", run_dir, cluster);
        settings.namespace = "remedy-bench".into();
        settings.engine = self.engine;
        envs::plan(self.service, &settings)
    }

    /// `plan` with each task's estimate set to its profile duration scaled by `scale` (seconds
    /// per profile minute). Every task before teardown needs a duration; a teardown task
    /// without one takes none (the seed has no teardown timings). Every duration needs a task.
    pub fn apply(&self, plan: &Plan, scale: f64) -> anyhow::Result<Plan> {
        let (path, service) = (&self.path, &self.service.name);
        let ids: Vec<&str> = plan.tasks().iter().map(|t| t.id.as_str()).collect();
        let missing: Vec<String> = plan
            .tasks()
            .iter()
            .filter(|t| !t.is_teardown() && !self.tasks.contains_key(&t.id))
            .map(|t| format!("`{}`", t.id))
            .collect();
        if !missing.is_empty() {
            bail!(
                "profile {path}: no duration for {} of the {service} plan; add {} under [tasks] in seconds",
                missing.join(", "),
                if missing.len() == 1 { "it" } else { "them" }
            );
        }
        if let Some(unknown) = self.tasks.keys().find(|k| !ids.contains(&k.as_str())) {
            bail!(
                "profile {path}: `{unknown}` is not a task of the {service} plan; remove or rename it (tasks: {})",
                ids.join(", ")
            );
        }
        let tasks = plan
            .tasks()
            .iter()
            .map(|task| {
                let mut task = task.clone();
                let secs = self.tasks.get(&task.id).copied().unwrap_or_default();
                task.estimate = Duration::from_secs_f64(secs * scale / 60.0);
                task
            })
            .collect();
        let plan = Plan::new(tasks)?;
        if plan.critical_path_estimate().1.is_zero() {
            bail!("profile {path}: every duration is zero; give the tasks their seconds under [tasks]");
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "test/bench/profiles/seed-gateway.toml";

    fn parse(text: &str) -> anyhow::Result<Profile> {
        Profile::parse("p.toml".into(), text)
    }

    fn seed() -> Profile {
        Profile::load(&crate::project_root().join(SEED)).unwrap()
    }

    fn seed_text() -> String {
        std::fs::read_to_string(crate::project_root().join(SEED)).unwrap()
    }

    fn applied(profile: &Profile) -> anyhow::Result<Plan> {
        let plan = profile.real_plan("target/bench/test".into())?;
        profile.apply(&plan, 60.0)
    }

    #[test]
    fn the_seed_profile_covers_the_gateway_plan_and_sums_to_the_seed() {
        let profile = seed();
        assert_eq!(profile.service.name, "gateway");
        let plan = applied(&profile).unwrap();
        assert_eq!(plan.tasks().iter().filter(|t| !t.is_teardown()).count(), 17);
        // Scale 60: one second per second. The seed's sequential baseline is 7.6 min.
        assert_eq!(plan.sum_of_estimates(), Duration::from_secs(456));
        assert!(profile.targets.max_dag_over_critical_path.is_some());
    }

    #[test]
    fn scale_is_seconds_per_profile_minute() {
        let profile = seed();
        let plan = profile.apply(&profile.real_plan("r".into()).unwrap(), 1.0).unwrap();
        let cluster = plan.tasks().iter().find(|t| t.id == "cluster").unwrap();
        assert_eq!(cluster.estimate, Duration::from_millis(2500));
    }

    #[test]
    fn a_profile_is_made_from_a_runs_report_and_read_back() {
        let dir = Utf8PathBuf::from(std::env::temp_dir().to_str().unwrap())
            .join(format!("xtask-profile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let report = dir.join("report.json");
        let tasks: Vec<serde_json::Value> = applied(&seed())
            .unwrap()
            .tasks()
            .iter()
            .map(|t| {
                let duration = (!t.is_teardown()).then_some(t.estimate.as_secs_f64());
                serde_json::json!({"id": t.id, "phase": t.phase, "kind": t.kind, "duration_s": duration})
            })
            .collect();
        std::fs::write(
            &report,
            serde_json::json!({"schema": 2, "service": "gateway", "title": "x", "tasks": tasks}).to_string(),
        )
        .unwrap();
        let made = Profile::from_report(&report).unwrap();
        assert_eq!((made.service.name.as_str(), made.backend, made.tasks.len()), ("gateway", ClusterMode::Kind, 17));
        let back = Profile::parse(&dir.join("p.toml"), &made.to_toml()).unwrap();
        assert_eq!(back.tasks, made.tasks);
        assert_eq!(back.targets.max_dag_over_best, Some(1.03));
        assert_eq!(applied(&back).unwrap().sum_of_estimates(), Duration::from_secs(456), "the seed's durations");
        // A run that did not get to its end makes no profile.
        let mut cut = tasks.clone();
        cut[3]["duration_s"] = serde_json::Value::Null;
        std::fs::write(
            &report,
            serde_json::json!({"schema": 2, "service": "gateway", "title": "x", "tasks": cut}).to_string(),
        )
        .unwrap();
        assert!(Profile::from_report(&report).unwrap_err().to_string().contains("never ran"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_task_is_named_with_the_fix() {
        let text = seed_text().replace("redis = 10\n", "");
        let err = applied(&parse(&text).unwrap()).unwrap_err().to_string();
        assert_eq!(err, "profile p.toml: no duration for `redis` of the gateway plan; add it under [tasks] in seconds");
    }

    #[test]
    fn an_unknown_task_is_named_with_the_fix() {
        let text = seed_text().replace("redis = 10\n", "redis = 10\nmemcached = 5\n");
        let err = applied(&parse(&text).unwrap()).unwrap_err().to_string();
        assert!(
            err.starts_with("profile p.toml: `memcached` is not a task of the gateway plan; remove or rename it"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_service_lists_the_services() {
        let err = parse("service = \"billing\"\n[tasks]\n").unwrap_err().to_string();
        assert!(err.starts_with("profile p.toml: unknown service `billing`; use one of gateway,"), "{err}");
    }

    #[test]
    fn malformed_toml_is_one_line_with_its_line_number() {
        let err = parse("service = \"gateway\"\n[tasks]\ncluster = \"slow\"\n").unwrap_err().to_string();
        assert!(err.starts_with("malformed profile p.toml: line 3:"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        let err = parse("service = \"gateway\"\nservce = 1\n[tasks]\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `servce`"), "{err}");
        let err = parse("[tasks]\ncluster = 1\n").unwrap_err().to_string();
        assert!(err.contains("missing field `service`"), "{err}");
    }

    #[test]
    fn negative_durations_and_bad_backends_are_refused() {
        let err = parse("service = \"gateway\"\n[tasks]\ncluster = -1\n").unwrap_err().to_string();
        assert_eq!(err, "profile p.toml: task `cluster` lasts -1; durations are seconds >= 0");
        let err = parse("service = \"gateway\"\nbackend = \"minikube\"\n[tasks]\n").unwrap_err().to_string();
        assert_eq!(err, "profile p.toml: unknown backend `minikube`; use kind or existing");
    }
}
