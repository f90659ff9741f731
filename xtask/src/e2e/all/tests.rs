//! `e2e all`: its plan, a service declared only here, and the settings its runs get.

use clap::{CommandFactory, Parser};

use super::*;
use crate::catalog::Catalog;
use crate::flags::{Xtask, XtaskCmd};
use crate::phases::history::History;

fn e2e(args: &[&str]) -> flags::E2e {
    let line = ["cargo xtask", "e2e"].iter().chain(args);
    match Xtask::try_parse_from(line).unwrap().subcommand {
        XtaskCmd::E2e(e2e) => e2e,
        other => panic!("{other:?}"),
    }
}

fn scratch(name: &str) -> Utf8PathBuf {
    let dir = Utf8PathBuf::from(std::env::temp_dir().to_str().unwrap())
        .join(format!("xtask-all-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every run `e2e all` would start with these flags, in declaration order, and its shared cluster.
fn resolve(
    catalog: &'static Catalog,
    args: &[&str],
    dir: &Utf8Path,
) -> (Option<KindCluster>, Vec<(&'static Service, Settings)>) {
    let flags = e2e(args);
    let shared = Settings::shared_cluster(&flags, "20261201-120000-abcdef", dir).unwrap();
    let runs = catalog
        .services()
        .iter()
        .map(|service| {
            (service, Settings::resolve_for_all(&flags, service, "/work".into(), dir, shared.as_ref()).unwrap())
        })
        .collect();
    (shared, runs)
}

const SIXTH: &str = r#"
[[service]]
name = "notifier"
about = "a service declared only in this test"
images = ["notifier", "datastorage"]
infra = ["datastorage"]
deploy = [{ name = "notifier", after = ["namespace"] }]
specs_after = ["notifier"]
ports = { notifier = 18580 }
"#;

const NOTIFIER_YAML: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: notifier\n  namespace: ${NAMESPACE}\n\
spec:\n  selector:\n    matchLabels: {app: notifier}\n  template:\n    metadata:\n      labels: {app: notifier}\n    spec:\n      \
containers:\n      - name: notifier\n        image: ${IMAGE_NOTIFIER}\n        imagePullPolicy: ${IMAGE_PULL_POLICY}\n---\n\
apiVersion: v1\nkind: Service\nmetadata:\n  name: notifier\nspec:\n  selector: {app: notifier}\n  ports:\n  - {name: http, port: 80, protocol: TCP}\n";

#[test]
fn a_sixth_service_declared_only_in_test_data_gets_a_plan_free_ports_and_a_place_in_e2e_all() {
    let text = format!("{}{SIXTH}", include_str!("../../catalog/services.toml"));
    let catalog: &'static Catalog = Box::leak(Box::new(Catalog::parse(&text).unwrap()));
    let dir = scratch("sixth");
    let manifests = dir.join("manifests");
    let from = crate::project_root().join("test/manifests");
    for sub in ["", "crds"] {
        std::fs::create_dir_all(manifests.join(sub)).unwrap();
        for entry in from.join(sub).read_dir_utf8().unwrap().map(Result::unwrap) {
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), manifests.join(sub).join(entry.file_name())).unwrap();
            }
        }
    }
    std::fs::write(manifests.join("notifier.yaml"), NOTIFIER_YAML).unwrap();

    // Its own plan, with its edges.
    let notifier = catalog.get("notifier").unwrap();
    let (shared, runs) = resolve(catalog, &["all", "--manifests", manifests.as_str()], &dir);
    let (_, settings) = runs.iter().find(|(s, _)| s.name == "notifier").unwrap();
    let own = envs::plan(notifier, settings).unwrap();
    let deps = |id: &str| own.tasks().iter().find(|t| t.id == id).unwrap().deps.clone();
    assert_eq!(deps("notifier"), ["namespace", "load-image-notifier"]);
    assert_eq!(deps("specs"), ["notifier", "build-specs"]);
    assert!(!own.tasks().iter().any(|t| t.id == "delete-cluster"), "the shared cluster is e2e all's to delete");

    // Ports no other environment uses.
    let exposed = catalog.exposed();
    let mut host: Vec<u16> = exposed.iter().map(|e| e.host_port).collect();
    host.sort();
    host.dedup();
    assert_eq!(host.len(), exposed.len(), "{exposed:?}");
    assert!(exposed.iter().any(|e| e.service == "notifier" && e.host_port == 18580 && e.node_port == 30580));

    // A place in e2e all: a run of its own, and its port in the shared cluster's config.
    let all = plan(&runs, shared.as_ref(), Engine::Docker, &dir, "/bin/xtask".into(), &History::default()).unwrap();
    let child = all.tasks().iter().find(|t| t.id == "notifier").expect("e2e all runs the notifier");
    assert_eq!(child.deps, [CLUSTER]);
    let cluster = all.tasks().iter().find(|t| t.id == CLUSTER).unwrap();
    assert!(cluster.steps.iter().any(|s| s.to_string().contains("hostPort: 18580")), "{:?}", cluster.steps);
    let environments = all.tasks().iter().filter(|t| t.phase == Phase::Tests).count();
    assert_eq!(environments, 6);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_longest_environment_starts_first_and_one_failure_stops_no_other() {
    let dir = scratch("order");
    let (shared, runs) = resolve(catalog(), &["all"], &dir);
    let all = plan(&runs, shared.as_ref(), Engine::Docker, &dir, "/bin/xtask".into(), &History::default()).unwrap();
    let children: Vec<&Task> = all.tasks().iter().filter(|t| t.phase == Phase::Tests).collect();
    assert!(
        children.windows(2).all(|w| w[0].estimate >= w[1].estimate),
        "{:?}",
        children.iter().map(|t| (&t.id, t.estimate)).collect::<Vec<_>>()
    );
    let Step::Run(cmd) = &children[0].steps[1] else { panic!("{:?}", children[0].steps) };
    assert!(cmd.interrupt, "a child is interrupted, not killed, so it tears down");
    assert_eq!(cmd.args[..3], ["e2e", children[0].id.as_str(), "--settings"]);
    let teardown: Vec<&str> = all.tasks().iter().filter(|t| t.is_teardown()).map(|t| t.id.as_str()).collect();
    assert_eq!(teardown, ["export-logs", "delete-cluster"]);
}

use crate::phases::Step;

/// A value for each of `e2e`'s flags, and whether it is a setting of the runs (else: of `e2e
/// all` itself).
fn sample(flag: &str) -> (&'static [&'static str], bool) {
    match flag {
        "plan" => (&[], false),
        // Refused with `all` before anything resolves (`e2e all --watch` is an error).
        "watch" => (&[], false),
        "parallel" => (&["2"], false),
        "report-dir" => (&["elsewhere"], false),
        "settings" => (&["s.json"], false),
        "strategy" => (&["phased"], true),
        "builds-after-cluster" => (&[], true),
        "jobs" => (&["1"], true),
        "keep-cluster" => (&[], true),
        "reuse-cluster" => (&[], true),
        "skip-unchanged-tests" => (&[], true),
        "cluster-name" => (&["mine"], true),
        "builder" => (&["container"], true),
        "builder-image" => (&["localhost/my/rust:1", "--builder", "container"], true),
        // The one this machine does not detect: the one it detects changes nothing.
        "engine" => (if Engine::detect() == Some(Engine::Podman) { &["docker"] } else { &["podman"] }, true),
        "cluster" => (&["existing", "--kubeconfig", "k.yaml"], true),
        "kubeconfig" => (&["k2.yaml", "--cluster", "existing"], true),
        "registry" => (&["localhost:5000", "--cluster", "existing", "--kubeconfig", "k.yaml"], true),
        "manifests" => (&["m"], true),
        "keep-images" => (&["all"], true),
        "wait-timeout" => (&["5"], true),
        "spec_args" => (&["--", "dedup"], true),
        other => panic!("e2e's flag --{other} has no sample here: add one, and make sure e2e all hands it on"),
    }
}

/// The settings with what differs between runs (ids, paths and names made from them) taken
/// out, as JSON.
fn comparable(settings: &Settings) -> serde_json::Value {
    let mut json: serde_json::Value = serde_json::from_str(&settings.to_json()).unwrap();
    let run_id = settings.run_id.clone();
    for key in ["run_id", "run_dir", "namespace", "require_specs"] {
        json[key] = serde_json::Value::Null;
    }
    let text = json.to_string().replace(&run_id, "RUN").replace(&run_id[run_id.len() - 6..], "RUN");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn every_flag_reaches_the_runs_of_e2e_all_as_it_reaches_a_single_run() {
    let dir = scratch("flags");
    let command = Xtask::command();
    let e2e_command = command.find_subcommand("e2e").unwrap();
    let (_, base) = resolve(catalog(), &["all"], &dir);
    for arg in e2e_command.get_arguments().filter(|a| a.get_id() != "service") {
        let name = arg.get_long().unwrap_or(arg.get_id().as_str());
        let (values, reaches) = sample(name);
        let mut args = vec!["all".to_owned()];
        if let Some(long) = arg.get_long() {
            args.push(format!("--{long}"));
        }
        args.extend(values.iter().map(|v| v.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (shared, runs) = resolve(catalog(), &args, &dir);
        let gateway = &runs[0].1;
        // What a child reads back is what was resolved here.
        assert_eq!(&serde_json::from_str::<Settings>(&gateway.to_json()).unwrap(), gateway);
        if !reaches {
            assert_eq!(comparable(gateway), comparable(&base[0].1), "--{} changed the runs", name);
            continue;
        }
        let changed = comparable(gateway) != comparable(&base[0].1)
            || shared.as_ref().map(|k| (&k.name, k.lifecycle))
                != Some((&"remedy-all-abcdef".to_owned(), Lifecycle::Fresh { keep: false }));
        assert!(changed, "--{} does not reach e2e all's runs", name);
        // As it does a single run of the service.
        let mut single = args.clone();
        single[0] = "gateway";
        let one = Settings::resolve(&e2e(&single), runs[0].0, "/work".into()).unwrap();
        let (a, b) = (comparable(gateway), comparable(&one));
        for key in [
            "service",
            "engine",
            "builder",
            "images",
            "manifests",
            "wait_timeout_secs",
            "skip_unchanged_tests",
            "spec_args",
            "builds_after_cluster",
            "strategy",
            "jobs",
            "keep_images",
        ] {
            assert_eq!(a[key], b[key], "--{}: {key}", name);
        }
        if let (Cluster::Existing(run), Cluster::Existing(single)) = (&gateway.cluster, &one.cluster) {
            assert_eq!(run, single, "--{}", name);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

use crate::backends::{Cluster, Lifecycle};
