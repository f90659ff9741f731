//! The environments' plans: their edges, their steps on each backend, teardown.

use camino::{Utf8Path, Utf8PathBuf};

use super::*;
use crate::backends::{Cluster, ExistingCluster, KindCluster, Lifecycle, Registry};
use crate::builders::Engine;
use crate::builders::host::BINARIES;
use crate::catalog::catalog;
use crate::phases::{Step, Workload};

fn settings(cluster: Cluster, engine: Engine) -> Settings {
    let mut s = Settings::defaults("x", "r1", "target/e2e/x/r1".into(), cluster);
    s.namespace = "remedy-r1".into();
    s.engine = engine;
    s
}

fn kind_named(name: &str, engine: Engine) -> Settings {
    let cluster = KindCluster::new(name.into(), Lifecycle::Fresh { keep: false }, "target/e2e/x/r1".into()).unwrap();
    settings(Cluster::Kind(cluster), engine)
}

fn kind() -> Settings {
    kind_named("remedy-r1", Engine::Docker)
}

fn existing() -> Settings {
    settings(Cluster::Existing(ExistingCluster { kubeconfig: "k".into(), registry: None, keep: false }), Engine::Docker)
}

fn registry(address: &str, engine: Engine) -> Settings {
    let registry = Some(Registry::parse(address).unwrap());
    settings(Cluster::Existing(ExistingCluster { kubeconfig: "k".into(), registry, keep: false }), engine)
}

fn plan_of(service: &str, s: &Settings) -> Plan {
    plan(catalog().get(service).unwrap(), s).unwrap_or_else(|e| panic!("{service}: {e:#}"))
}

fn deps_of(plan: &Plan, id: &str) -> Vec<String> {
    let mut deps = plan.tasks()[plan.index_of(id).unwrap_or_else(|| panic!("no task {id}"))].deps.clone();
    deps.sort();
    deps
}

fn task<'p>(plan: &'p Plan, id: &str) -> &'p Task {
    &plan.tasks()[plan.index_of(id).unwrap_or_else(|| panic!("no task {id}"))]
}

fn commands(plan: &Plan) -> Vec<&Command> {
    plan.tasks().iter().flat_map(|t| &t.steps).filter_map(Step::command).collect()
}

/// Each task before teardown as `  id <- sorted deps`, under `service backend`.
fn edges(service: &str, backend: &str, plan: &Plan) -> String {
    let mut out = format!("{service} {backend}\n");
    for t in plan.tasks().iter().filter(|t| !t.is_teardown()) {
        let mut deps = t.deps.clone();
        deps.sort();
        out.push_str(&format!("  {} <- {}\n", t.id, deps.join(" ")));
    }
    out
}

/// Regenerates `plan-edges.txt` from the plans when `REMEDY_BLESS` is set (review the diff).
#[test]
fn every_plan_has_the_edges_it_is_known_to_have() {
    // First recorded from the plans of 927e857, before the environments became declarations
    // (the same up to teardown, which came with them); changed on purpose since.
    let path = crate::project_root().join("xtask/src/envs/plan-edges.txt");
    let before = std::fs::read_to_string(&path).unwrap();
    let mut now = String::new();
    for service in catalog().names() {
        for (backend, s) in [
            ("kind", kind_named("c", Engine::Docker)),
            ("existing", existing()),
            ("registry", registry("localhost:5000", Engine::Docker)),
        ] {
            now.push_str(&edges(service, backend, &plan_of(service, &s)));
        }
    }
    if std::env::var_os("REMEDY_BLESS").is_some() {
        std::fs::write(&path, &now).unwrap();
    }
    assert_eq!(now, before, "the plans' edges changed: if on purpose, rerun with REMEDY_BLESS=1 and review the diff");
}

#[test]
fn every_service_has_a_valid_plan_on_every_backend() {
    let backends = [
        kind_named("c", Engine::Docker),
        kind_named("c", Engine::Podman),
        existing(),
        registry("localhost:5000", Engine::Docker),
        registry("registry.example.com/team", Engine::Podman),
    ];
    for service in catalog().services() {
        for s in &backends {
            let plan = plan_of(&service.name, s);
            let last = plan.tasks().iter().rfind(|t| !t.is_teardown()).unwrap();
            assert_eq!(last.id, ids::SPECS, "{}", service.name);
            assert!(plan.index_of(&service.name).is_some(), "{} deploys itself", service.name);
        }
    }
}

#[test]
fn teardown_is_part_of_every_plan() {
    let ids = |plan: &Plan| -> Vec<(String, When)> {
        plan.tasks().iter().filter(|t| t.is_teardown()).map(|t| (t.id.clone(), t.when)).collect()
    };
    let kind = plan_of("gateway", &kind());
    assert_eq!(
        ids(&kind),
        [
            ("export-logs".to_owned(), When::Failed),
            ("delete-cluster".to_owned(), When::Always),
            ("prune-images".to_owned(), When::Succeeded)
        ]
    );
    let delete = task(&kind, "delete-cluster");
    assert_eq!(delete.steps.last(), Some(&Step::Remove { path: "target/e2e/x/r1/kubeconfig".into() }));
    let existing = plan_of("datastorage", &existing());
    assert_eq!(
        ids(&existing).iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["diagnostics", "delete-namespaces", "prune-images"]
    );
    // Kept: nothing is deleted, diagnostics are still saved on a failure.
    let mut kept = kind_named("c", Engine::Docker);
    let Cluster::Kind(cluster) = &mut kept.cluster else { panic!() };
    cluster.lifecycle = Lifecycle::Reused;
    kept.keep_images = None;
    assert_eq!(ids(&plan_of("gateway", &kept)), [("export-logs".to_owned(), When::Failed)]);
}

#[test]
fn the_kind_config_is_a_step_of_the_cluster_task() {
    let plan = plan_of("gateway", &kind());
    let cluster = task(&plan, ids::CLUSTER);
    let [Step::Write { path, text }, Step::Run(create)] = &cluster.steps[..] else { panic!("{:?}", cluster.steps) };
    assert_eq!(path, "target/e2e/x/r1/kind-config.yaml");
    assert!(text.contains("hostPort: 18080") && text.contains("containerPort: 30081"), "{text}");
    assert!(create.args.contains(&path.to_string()), "{create}");
}

#[test]
fn podman_sets_the_kind_provider_on_every_kind_call() {
    let plan = plan_of("gateway", &kind_named("c", Engine::Podman));
    let kind_calls: Vec<&Command> = commands(&plan).into_iter().filter(|cmd| cmd.program == "kind").collect();
    assert_eq!(kind_calls.len(), 7, "create, four loads (two of them third-party images), export logs, delete");
    for cmd in kind_calls {
        assert_eq!(cmd.env, [("KIND_EXPERIMENTAL_PROVIDER".to_string(), "podman".to_string())], "{cmd}");
    }
}

#[test]
fn builds_overlap_cluster_creation_unless_told_not_to() {
    assert_eq!(deps_of(&plan_of("gateway", &kind()), BINARIES), Vec::<String>::new());
    let mut s = kind();
    s.builds_after_cluster = true;
    assert_eq!(deps_of(&plan_of("gateway", &s), BINARIES), [ids::CLUSTER]);
}

#[test]
fn an_image_the_kind_node_has_is_not_loaded_again() {
    let plan = plan_of("gateway", &kind_named("c", Engine::Podman));
    let load = task(&plan, "load-image-gateway");
    let Step::SkipIf(probe) = &load.steps[0] else { panic!("the probe comes first: {:?}", load.steps) };
    assert_eq!(
        probe.to_string(),
        "podman exec c-control-plane crictl inspecti localhost/remedy/gateway:${TAG_GATEWAY}"
    );
}

#[test]
fn unchanged_specs_are_skipped_only_when_asked_and_per_environment() {
    let steps = |s: &Settings| task(&plan_of("gateway", s), ids::SPECS).steps.clone();
    assert!(matches!(steps(&kind())[..], [Step::Write { .. }, Step::Run(_)]));
    let mut s = kind();
    s.skip_unchanged_tests = true;
    let [
        Step::Tag { var, strings, files },
        Step::SkipIfStamped { .. },
        Step::Write { .. },
        Step::Run(_),
        Step::Stamp { .. },
    ] = &steps(&s)[..]
    else {
        panic!("{:?}", steps(&s));
    };
    assert_eq!(var, "SPECS_INPUTS");
    for input in ["${TAG_GATEWAY}", "${TAG_DATASTORAGE}", "${IMAGE_POSTGRES}", "kind remedy-r1, namespace remedy-r1"] {
        assert!(strings.contains(&input.to_owned()), "{input} in {strings:?}");
    }
    // The specs' sources and every manifest deployed.
    let manifest = s.manifests.join("gateway.yaml");
    assert!(files.contains(&manifest) && files.contains(&"test/e2e/tests/gateway.rs".into()), "{files:?}");
    assert!(files.contains(&"test/e2e/src".into()) && files.contains(&s.manifests.join("redis.yaml")), "{files:?}");
    // Only what is deployed: the datastorage environment has no Redis.
    let mut d = kind();
    d.skip_unchanged_tests = true;
    let datastorage = plan_of("datastorage", &d);
    let Step::Tag { strings, .. } = &task(&datastorage, ids::SPECS).steps[0] else { panic!() };
    assert!(!strings.iter().any(|s| s.contains("REDIS")), "{strings:?}");
}

#[test]
fn spec_args_go_to_the_harness_and_a_filtered_run_never_skips_nor_stamps() {
    let mut s = kind();
    s.skip_unchanged_tests = true;
    s.spec_args = vec!["dedup".into(), "--skip".into(), "restart".into()];
    let plan = plan_of("gateway", &s);
    let steps = &task(&plan, ids::SPECS).steps;
    let [Step::Write { text, .. }, Step::Run(cmd)] = &steps[..] else { panic!("{steps:?}") };
    assert!(
        cmd.to_string().ends_with(
            "cargo nextest run --config-file target/e2e/x/r1/nextest.toml --profile e2e --no-tests=pass --locked \
             --package remedy-e2e --test gateway -- dedup --skip restart"
        ),
        "{cmd}"
    );
    assert!(text.contains("dir = \"target/e2e/x/r1/nextest\"") && text.contains("report-name = \"gateway\""), "{text}");
    // libtest's thread count is nextest's option.
    let args: Vec<String> = ["--test-threads", "2", "dedup", "--test-threads=3"].map(String::from).to_vec();
    let (options, filters) = nextest_args(&args);
    assert_eq!(options, ["--test-threads", "2", "--test-threads", "3"]);
    assert_eq!(filters, ["dedup"]);
}

#[test]
fn the_rollout_waits_for_the_workload_kind_the_manifest_declares() {
    let plan = plan_of("datastorage", &kind());
    let rollout = |id: &str| {
        task(&plan, id).steps.iter().find_map(|s| match s {
            Step::Kube(KubeOp::Rollout { workload, .. }) => Some(*workload),
            _ => None,
        })
    };
    assert_eq!(rollout(ids::POSTGRESQL), Some(Workload::StatefulSet));
    assert_eq!(rollout("datastorage"), Some(Workload::Deployment));
}

#[test]
fn the_database_password_is_generated_not_written_down() {
    let plan = plan_of("datastorage", &kind());
    let postgresql = task(&plan, ids::POSTGRESQL);
    let Step::Kube(KubeOp::Secret { name, literal, random }) = &postgresql.steps[0] else {
        panic!("the credentials come before the manifest: {:?}", postgresql.steps[0]);
    };
    assert_eq!(name, "postgresql-credentials");
    assert_eq!(random, &["POSTGRES_PASSWORD"]);
    assert!(literal.iter().all(|(k, _)| !k.contains("PASSWORD")));
}

#[test]
fn registry_delivery_pushes_each_image_after_its_build_and_deploys_after_the_push() {
    let s = registry("localhost:5000", Engine::Docker);
    for service in catalog().names() {
        let plan = plan_of(service, &s);
        let pushes: Vec<&Task> = plan.tasks().iter().filter(|t| t.id.starts_with("push-image-")).collect();
        assert!(!pushes.is_empty(), "{service} pushes nothing");
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
    let plan = plan_of("datastorage", &s);
    assert_eq!(deps_of(&plan, ids::MIGRATIONS), ["postgresql", "push-image-datastorage"]);
    assert_eq!(deps_of(&plan, "datastorage"), ["migrations", "push-image-datastorage"]);
    let push = task(&plan, "push-image-datastorage");
    let [Step::SkipIf(probe), Step::Run(cmd)] = &push.steps[..] else { panic!("{:?}", push.steps) };
    assert_eq!(cmd.to_string(), "docker push localhost:5000/remedy/datastorage:${TAG_DATASTORAGE}");
    assert_eq!(probe.program, "curl");
    assert_eq!(probe.args.last().unwrap(), "http://localhost:5000/v2/remedy/datastorage/manifests/${TAG_DATASTORAGE}");
    // The build is skipped when the registry has the tag too: the cluster pulls it.
    let build = task(&plan, "build-image-datastorage");
    assert!(build.steps.iter().any(|step| step == &Step::SkipIf(probe.clone())), "{:?}", build.steps);
}

#[test]
fn podman_skips_tls_verification_only_for_a_registry_on_this_machine() {
    let push = |address: &str| {
        let plan = plan_of("datastorage", &registry(address, Engine::Podman));
        let Some(Step::Run(cmd)) = task(&plan, "push-image-datastorage").steps.last() else { panic!() };
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
    let plan = plan_of("datastorage", &registry("registry.example.com/team", Engine::Podman));
    let Step::SkipIf(probe) = &task(&plan, "push-image-datastorage").steps[0] else { panic!() };
    assert_eq!(
        probe.args.last().unwrap(),
        "https://registry.example.com/v2/team/remedy/datastorage/manifests/${TAG_DATASTORAGE}"
    );
}

#[test]
fn existing_cluster_has_no_kind_commands() {
    for service in catalog().names() {
        let plan = plan_of(service, &existing());
        let programs: Vec<&str> = commands(&plan).iter().map(|cmd| cmd.program.as_str()).collect();
        assert!(!programs.contains(&"kind"), "{programs:?}");
    }
}

#[test]
fn gateway_edges_match_the_real_dependencies() {
    let plan = plan_of("gateway", &kind());
    // Builds wait for nothing, so they overlap cluster creation.
    assert_eq!(deps_of(&plan, BINARIES), Vec::<String>::new());
    assert_eq!(deps_of(&plan, ids::CLUSTER), Vec::<String>::new());
    assert_eq!(deps_of(&plan, "build-image-gateway"), [BINARIES]);
    assert_eq!(deps_of(&plan, ids::CRDS), [ids::CLUSTER]);
    assert_eq!(deps_of(&plan, ids::NAMESPACE), [ids::CLUSTER]);
    assert_eq!(deps_of(&plan, "load-image-gateway"), ["build-image-gateway", ids::CLUSTER]);
    // PostgreSQL and Redis are loaded into the node when the engine has them.
    assert_eq!(deps_of(&plan, ids::POSTGRESQL), ["load-image-postgres", ids::NAMESPACE]);
    assert_eq!(deps_of(&plan, ids::REDIS), ["load-image-redis", ids::NAMESPACE]);
    assert_eq!(deps_of(&plan, ids::MIGRATIONS), ["load-image-datastorage", ids::POSTGRESQL]);
    assert_eq!(deps_of(&plan, "datastorage"), ["load-image-datastorage", ids::MIGRATIONS]);
    // Audits wait in the gateway's Redis outbox, so it rolls out while datastorage migrates.
    assert_eq!(deps_of(&plan, "gateway"), ["crds", "load-image-gateway", "namespace", "redis"]);
    assert_eq!(deps_of(&plan, ids::BUILD_SPECS), [BINARIES]);
    assert_eq!(deps_of(&plan, ids::SPECS), [ids::BUILD_SPECS, "datastorage", "gateway"]);
}

#[test]
fn the_orchestrator_runs_the_whole_pipeline() {
    let plan = plan_of("remediationorchestrator", &kind());
    // Its manifest names the workflowexecution image (the default workflow), so it waits for it.
    assert_eq!(
        deps_of(&plan, "remediationorchestrator"),
        ["crds", "load-image-remediationorchestrator", "load-image-workflowexecution", "namespace"]
    );
    assert_eq!(
        deps_of(&plan, ids::SPECS),
        ["build-specs", "datastorage", "remediationorchestrator", "signalprocessing", "workflowexecution"]
    );
}

#[test]
fn datastorage_needs_no_crds_and_its_specs_wait_for_it() {
    let plan = plan_of("datastorage", &kind());
    assert!(plan.index_of(ids::CRDS).is_none());
    assert!(plan.index_of(ids::REDIS).is_none());
    assert_eq!(deps_of(&plan, ids::SPECS), ["build-specs", "datastorage"]);
}

#[test]
fn controllers_do_not_wait_for_datastorage_but_their_specs_do() {
    for controller in ["signalprocessing", "workflowexecution"] {
        let plan = plan_of(controller, &kind());
        assert_eq!(deps_of(&plan, controller), ["crds", format!("load-image-{controller}").as_str(), "namespace"]);
        assert_eq!(deps_of(&plan, ids::SPECS), ["build-specs", "datastorage", controller]);
    }
}

/// A copy of the workspace's manifests with `edit` applied, in a fresh directory.
fn manifests_with(name: &str, edit: impl FnOnce(&Utf8PathBuf)) -> Utf8PathBuf {
    let dir = Utf8PathBuf::from(std::env::temp_dir().to_str().unwrap())
        .join(format!("xtask-envs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("crds")).unwrap();
    let from = crate::project_root().join("test/manifests");
    for sub in ["", "crds"] {
        for entry in from.join(sub).read_dir_utf8().unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), dir.join(sub).join(entry.file_name())).unwrap();
            }
        }
    }
    edit(&dir);
    dir
}

#[test]
fn a_missing_or_malformed_manifest_is_a_plan_time_error_naming_it() {
    let error = |dir: &Utf8PathBuf| {
        let mut s = kind();
        s.manifests = dir.clone();
        format!("{:#}", plan(catalog().get("gateway").unwrap(), &s).unwrap_err())
    };
    let missing = manifests_with("missing", |dir| std::fs::remove_file(dir.join("redis.yaml")).unwrap());
    assert!(error(&missing).starts_with(&format!("cannot read manifest {missing}/redis.yaml")), "{}", error(&missing));
    let malformed =
        manifests_with("malformed", |dir| std::fs::write(dir.join("postgresql.yaml"), "kind: [unclosed\n").unwrap());
    assert!(
        error(&malformed).starts_with(&format!("malformed manifest {malformed}/postgresql.yaml:")),
        "{}",
        error(&malformed)
    );
    // A manifest naming an image the plan does not build reads a variable no task sets.
    let stray = manifests_with("stray", |dir| {
        let text = std::fs::read_to_string(dir.join("redis.yaml")).unwrap();
        std::fs::write(dir.join("redis.yaml"), text.replace("${IMAGE_REDIS}", "${IMAGE_NOTBUILT}")).unwrap();
    });
    assert_eq!(error(&stray), "task `redis` reads ${IMAGE_NOTBUILT} before it is set: no task writes it");
    for dir in [missing, malformed, stray] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn inputs_are_what_the_environment_is_made_from() {
    let inputs = plan_of("signalprocessing", &kind()).inputs();
    for input in [
        "services/signalprocessing",
        "services/datastorage",
        "services/api",
        "Cargo.lock",
        "test/e2e/tests/signalprocessing.rs",
    ] {
        assert!(inputs.contains(&input.into()), "{input} in {inputs:?}");
    }
    let root = crate::project_root();
    let manifests = root.join("test/manifests");
    assert!(inputs.contains(&manifests.join("postgresql.yaml")) && !inputs.contains(&manifests.join("redis.yaml")));
    let relative: Vec<&Utf8Path> = inputs.iter().map(|i| i.strip_prefix(root).unwrap_or(i)).collect();
    assert!(!relative.iter().any(|i| i.as_str().contains("gateway")), "{relative:?}");
}
