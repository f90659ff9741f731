//! `cargo xtask e2e` end to end on the local real cluster (test/local-cluster): the Kind path
//! through a recording shim, podman, and the failure modes. Each run must end with the cause
//! named, diagnostics saved, and no namespace or process left behind.
//!
//! Needs the local cluster running and its `env` exported (`cargo xtask test` does both).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// One run at a time: they share the cluster, the host ports and cargo's build lock.
static SERIAL: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn kubeconfig() -> String {
    std::env::var("REMEDY_KUBECONFIG")
        .expect("REMEDY_KUBECONFIG is not set: start the local cluster and run `cargo xtask test`")
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("xtask-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

struct Run {
    code: Option<i32>,
    stderr: String,
    report: Value,
    dir: PathBuf,
}

impl Run {
    fn task(&self, id: &str) -> &Value {
        self.report["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap_or_else(|| panic!("no task {id}"))
    }

    fn namespace(&self, service: &str) -> String {
        let run_id = self.report["run_id"].as_str().unwrap();
        format!("remedy-{service}-{}", &run_id[run_id.len() - 6..])
    }
}

fn command<S: AsRef<str>>(args: &[S], dir: &Path, envs: &[(&str, String)]) -> Command {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    // The report directory goes before the specs' own arguments, if any.
    let (flags, spec_args) = args.split_at(args.iter().position(|a| *a == "--").unwrap_or(args.len()));
    if flags.get(1) != Some(&"gc") {
        cmd.args(flags).arg("--report-dir").arg(dir).args(spec_args);
    } else {
        cmd.args(flags);
    }
    // Run files of this test only: a test's killed run is no other test's garbage.
    cmd.env("REMEDY_STATE_DIR", dir.parent().unwrap_or(dir).join("state"));
    cmd.current_dir(root()).env("CI", "true").stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

fn finish(output: std::process::Output, dir: &Path) -> Run {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = std::fs::read_to_string(dir.join("report.json"))
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(Value::Null);
    Run { code: output.status.code(), stderr, report, dir: dir.to_owned() }
}

fn xtask<S: AsRef<str>>(args: &[S], dir: &Path, envs: &[(&str, String)]) -> Run {
    let output = command(args, dir, envs).output().unwrap();
    finish(output, dir)
}

/// The environment variables the local cluster exports (image names).
fn cluster_images() -> Vec<(&'static str, String)> {
    ["REMEDY_IMAGE_BASE", "REMEDY_IMAGE_POSTGRES", "REMEDY_IMAGE_REDIS"]
        .into_iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k, v)))
        .collect()
}

/// `args` (`e2e <service> ...`, maybe `-- <spec args>`) against the local cluster as an
/// existing cluster.
fn on_existing(args: &[&str]) -> Vec<String> {
    let split = args.iter().position(|a| *a == "--").unwrap_or(args.len());
    let kubeconfig = kubeconfig();
    let existing = ["--cluster", "existing", "--kubeconfig", &kubeconfig];
    args[..split].iter().chain(&existing).chain(&args[split..]).map(|a| a.to_string()).collect()
}

fn namespace_exists(ns: &str) -> bool {
    let out = Command::new("kubectl")
        .args(["--kubeconfig", &kubeconfig(), "get", "namespace", ns, "-o", "name"])
        .output()
        .unwrap();
    out.status.success()
}

/// Processes whose command line or environment mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if pid == std::process::id() {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()) == Some("Z") {
            continue;
        }
        for file in ["cmdline", "environ"] {
            let bytes = std::fs::read(entry.path().join(file)).unwrap_or_default();
            if String::from_utf8_lossy(&bytes).contains(needle) {
                let cmdline = String::from_utf8_lossy(&std::fs::read(entry.path().join("cmdline")).unwrap_or_default())
                    .replace('\0', " ");
                found.push(format!("{pid}: {cmdline}"));
                break;
            }
        }
    }
    found
}

fn assert_clean(run: &Run, service: &str) {
    let ns = run.namespace(service);
    assert!(!namespace_exists(&ns), "namespace {ns} left behind");
    let left = processes_mentioning(run.dir.to_str().unwrap());
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

fn assert_failed_with(run: &Run, task: &str, cause: &str) {
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(run.report["outcome"], "failed", "{}", run.stderr);
    let t = run.task(task);
    assert_eq!(t["status"], "failed", "{task}: {t}");
    let error = t["error"].as_str().unwrap_or_default();
    assert!(error.contains(cause), "{task} failed with {error:?}, expected {cause:?}");
    assert!(run.stderr.contains(cause), "the terminal does not name the cause: {}", run.stderr);
}

/// Copies test/manifests to `dir` and lets `edit` change one file's documents.
fn manifests_with(dir: &Path, file: &str, edit: impl FnOnce(&mut Vec<Value>)) -> PathBuf {
    let target = dir.join("manifests");
    copy_dir(&root().join("test/manifests"), &target);
    let path = target.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    edit(&mut docs);
    let out: Vec<String> = docs.iter().map(|d| serde_json::to_string_pretty(d).unwrap()).collect();
    // JSON is YAML: one document per `---`.
    std::fs::write(&path, out.join("\n---\n")).unwrap();
    target
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// The first container of the workload named `name` (a Deployment or a Job).
fn container<'a>(docs: &'a mut [Value], name: &str) -> &'a mut Value {
    let doc = docs
        .iter_mut()
        .find(|d| matches!(d["kind"].as_str(), Some("Deployment" | "Job")) && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no workload {name}"));
    &mut doc["spec"]["template"]["spec"]["containers"][0]
}

#[test]
#[ignore = "needs the local cluster: run by cargo xtask test"]
fn on_local_cluster_a_failing_image_build_stops_the_run() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("build");
    let args = on_existing(&["e2e", "datastorage"]);
    let mut envs = cluster_images();
    envs.retain(|(k, _)| *k != "REMEDY_IMAGE_BASE");
    envs.push(("REMEDY_IMAGE_BASE", "remedy.invalid/no-such-base:0".into()));
    // A base image whose glibc can be told neither from its name nor from the engine is
    // refused before any work, with the fix.
    let refused = xtask(&args, &scratch.0.join("refused"), &envs);
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    let line = refused.stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(line.contains("cannot tell the glibc of the base image remedy.invalid/no-such-base:0"), "{line}");
    assert!(line.ends_with("set REMEDY_BASE_GLIBC, for example REMEDY_BASE_GLIBC=2.36"), "{line}");
    assert!(!refused.dir.join("report.json").exists(), "work started: {}", refused.stderr);
    // Given its glibc, the run gets as far as building onto it.
    envs.push(("REMEDY_BASE_GLIBC", "2.36".into()));
    let run = xtask(&args, &scratch.0, &envs);
    assert_failed_with(&run, "build-image-datastorage", "docker build");
    assert_eq!(run.task("datastorage")["status"], "not_started");
    assert!(run.stderr.contains("failed 1 of"), "{}", run.stderr);
    assert!(run.dir.join("diagnostics").is_dir(), "no diagnostics saved");
    assert_clean(&run, "datastorage");
}

#[test]
#[ignore = "needs the local cluster: run by cargo xtask test"]
fn on_local_cluster_a_crash_looping_service_fails_fast_with_its_logs() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("crash");
    let manifests = manifests_with(&scratch.0, "datastorage.yaml", |docs| {
        let c = container(docs, "datastorage");
        c["command"] = serde_json::json!(["sh", "-c", "echo crashing on purpose; exit 3"]);
        c["args"] = Value::Null;
    });
    let args = on_existing(&["e2e", "datastorage", "--manifests", manifests.to_str().unwrap()]);
    let started = Instant::now();
    let run = xtask(&args, &scratch.0, &cluster_images());
    assert_failed_with(&run, "datastorage", "CrashLoopBackOff");
    assert!(
        run.task("datastorage")["error"].as_str().unwrap().contains("crashing on purpose"),
        "no log lines in the error"
    );
    assert!(started.elapsed() < Duration::from_secs(170), "waited for the timeout instead of failing fast");
    assert!(run.dir.join("diagnostics/events.txt").is_file());
    assert_clean(&run, "datastorage");
}

#[test]
#[ignore = "needs the local cluster: run by cargo xtask test"]
fn on_local_cluster_a_failing_migration_fails_its_task() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("migrate");
    let manifests = manifests_with(&scratch.0, "datastorage-migrate.yaml", |docs| {
        let c = container(docs, "datastorage-migrate");
        c["command"] = serde_json::json!(["sh", "-c", "echo migration broken on purpose; exit 1"]);
        c["args"] = Value::Null;
    });
    let args = on_existing(&["e2e", "datastorage", "--manifests", manifests.to_str().unwrap()]);
    let run = xtask(&args, &scratch.0, &cluster_images());
    assert_failed_with(&run, "migrations", "job/datastorage-migrate");
    assert_eq!(run.task("datastorage")["status"], "not_started");
    assert_clean(&run, "datastorage");
}

#[test]
#[ignore = "needs the local cluster: run by cargo xtask test"]
fn on_local_cluster_a_rollout_that_never_gets_ready_times_out() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("timeout");
    let manifests = manifests_with(&scratch.0, "datastorage.yaml", |docs| {
        let c = container(docs, "datastorage");
        c["readinessProbe"] = serde_json::json!({"exec": {"command": ["false"]}, "periodSeconds": 2});
    });
    let args = on_existing(&["e2e", "datastorage", "--wait-timeout", "20", "--manifests", manifests.to_str().unwrap()]);
    let run = xtask(&args, &scratch.0, &cluster_images());
    assert_failed_with(&run, "datastorage", "not ready after 20s");
    assert_clean(&run, "datastorage");
}

#[test]
#[ignore = "needs the local cluster: run by cargo xtask test"]
fn on_local_cluster_a_malformed_manifest_is_named_before_any_work() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("malformed");
    let manifests = scratch.0.join("manifests");
    copy_dir(&root().join("test/manifests"), &manifests);
    let broken = manifests.join("postgresql.yaml");
    std::fs::write(&broken, "apiVersion: v1\nkind: [unclosed\n").unwrap();
    let dir = scratch.0.join("run");
    let args = on_existing(&["e2e", "datastorage", "--manifests", manifests.to_str().unwrap()]);
    let run = xtask(&args, &dir, &cluster_images());
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let errors: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(errors[0].starts_with(&format!("error: malformed manifest {}: ", broken.display())), "{}", run.stderr);
    // The plan is made before anything else: no report, no task log, so no namespace either.
    assert!(!dir.exists(), "the run left {}", dir.display());
}

#[test]
#[ignore = "needs the local cluster: run by cargo xtask test"]
fn on_local_cluster_a_spec_filter_that_matches_nothing_fails() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("filter");
    let args = on_existing(&["e2e", "datastorage", "--skip-unchanged-tests", "--", "no_spec_is_named_this"]);
    let run = xtask(&args, &scratch.0, &cluster_images());
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(run.task("specs")["status"], "ok", "the harness ran, matching nothing");
    let last = run.stderr.trim_end().lines().last().unwrap_or_default();
    assert_eq!(
        last,
        "error: no datastorage spec matched `no_spec_is_named_this`: list them with \
         `cargo nextest list -p remedy-e2e --test datastorage`"
    );
    let log = std::fs::read_to_string(run.dir.join("logs/specs.log")).unwrap();
    assert!(log.contains("--test datastorage -- no_spec_is_named_this"), "{log}");
    assert!(!log.contains("SPECS_INPUTS"), "a filtered run hashed its inputs for the stamp: {log}");
    assert_clean(&run, "datastorage");
}

fn image_exists(image: &str) -> bool {
    let mut inspect = Command::new("docker");
    inspect.args(["image", "inspect", image]).stdout(Stdio::null()).stderr(Stdio::null());
    inspect.status().unwrap().success()
}

#[test]
#[ignore = "needs the local cluster: run by cargo xtask test"]
fn on_local_cluster_older_images_are_pruned_after_a_successful_run() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("prune");
    let base = std::env::var("REMEDY_IMAGE_BASE").expect("REMEDY_IMAGE_BASE is not set: run by cargo xtask test");
    // Four images of the repository, newer than any real one, oldest first.
    let fakes: Vec<String> = (1..=4).map(|i| format!("localhost/remedy/datastorage:prune-test-{i}")).collect();
    for (i, image) in fakes.iter().enumerate() {
        std::fs::write(scratch.0.join("Dockerfile"), format!("FROM {base}\nLABEL remedy.test.prune={i}\n")).unwrap();
        let built = Command::new("docker").args(["build", "--quiet", "--tag", image]).arg(&scratch.0).output().unwrap();
        assert!(built.status.success(), "docker build {image}: {}", String::from_utf8_lossy(&built.stderr));
        // Creation times have a resolution of a second.
        std::thread::sleep(Duration::from_millis(1100));
    }
    let args = on_existing(&["e2e", "datastorage"]);
    let run = xtask(&args, &scratch.0.join("run"), &cluster_images());
    let present: Vec<bool> = fakes.iter().map(|image| image_exists(image)).collect();
    for image in &fakes {
        let _ = Command::new("docker").args(["rmi", image]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(present, [false, true, true, true], "the newest 3 are kept, the fourth newest removed");
    let log = std::fs::read_to_string(run.dir.join("logs/build-image-datastorage.log")).unwrap();
    let tag = log.lines().find_map(|l| l.strip_prefix("TAG_DATASTORAGE = ")).unwrap();
    assert!(image_exists(&format!("localhost/remedy/datastorage:{tag}")), "the run's own image was removed");
    assert!(run.stderr.contains("older image(s), keeping the newest 3 per repository"), "{}", run.stderr);
}

#[test]
#[ignore = "needs the local cluster: run by cargo xtask test"]
fn on_local_cluster_sigint_during_deploy_cancels_and_cleans_up() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("sigint");
    let args = on_existing(&["e2e", "datastorage"]);
    let child =
        command(&args, &scratch.0, &cluster_images()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // The deploy phase has begun once PostgreSQL's task writes its log.
    let log = scratch.0.join("logs/postgresql.log");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !log.exists() {
        assert!(Instant::now() < deadline, "the deploy phase never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::INT).unwrap();
    let interrupted = Instant::now();
    let output = child.wait_with_output().unwrap();
    let run = finish(output, &scratch.0);
    assert_eq!(run.code, Some(130), "{}", run.stderr);
    assert_eq!(run.report["outcome"], "interrupted");
    assert!(run.stderr.contains("interrupted"), "{}", run.stderr);
    assert!(interrupted.elapsed() < Duration::from_secs(150), "teardown took {:?}", interrupted.elapsed());
    assert!(run.dir.join("diagnostics").is_dir());
    assert_clean(&run, "datastorage");
}

/// Puts the kind shim first on PATH and a throwaway HOME with a sentinel kubeconfig.
struct Shim {
    scratch: Scratch,
    log: PathBuf,
    home: PathBuf,
    sentinel: String,
}

impl Shim {
    fn new(name: &str) -> Shim {
        let scratch = Scratch::new(name);
        let log = scratch.0.join("kind-calls.log");
        let home = scratch.0.join("home");
        std::fs::create_dir_all(home.join(".kube")).unwrap();
        let sentinel = format!("# the user's own kubeconfig, {name}\n");
        std::fs::write(home.join(".kube/config"), &sentinel).unwrap();
        Shim { scratch, log, home, sentinel }
    }

    fn envs(&self) -> Vec<(&'static str, String)> {
        let path = format!("{}:{}", root().join("test/kind-shim").display(), std::env::var("PATH").unwrap());
        let base = std::env::var("REMEDY_IMAGE_BASE").expect("REMEDY_IMAGE_BASE is not set: run by cargo xtask test");
        let mut envs = cluster_images();
        envs.extend([
            // A value left in the user's shell, which the xtask must not inherit.
            ("KIND_EXPERIMENTAL_PROVIDER", "nerdctl".to_owned()),
            ("KIND_SHIM_NODE_IMAGE", base),
            ("PATH", path),
            ("HOME", self.home.to_str().unwrap().to_owned()),
            ("KIND_SHIM_LOG", self.log.to_str().unwrap().to_owned()),
            ("KIND_SHIM_KUBECONFIG", kubeconfig()),
        ]);
        envs
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    fn assert_kubeconfig_untouched(&self) {
        assert_eq!(std::fs::read_to_string(self.home.join(".kube/config")).unwrap(), self.sentinel);
        assert_eq!(std::fs::read_dir(self.home.join(".kube")).unwrap().count(), 1, "files added under ~/.kube");
    }
}

/// `third_party`: whether the engine had PostgreSQL's image, so that the run loaded it too.
fn kind_run_expectations(shim: &Shim, run: &Run, provider: &str, third_party: bool) {
    let dir = run.dir.to_str().unwrap();
    let run_id = run.report["run_id"].as_str().unwrap();
    let name = format!("remedy-datastorage-{}", &run_id[run_id.len() - 6..]);
    let calls = shim.calls();
    assert_eq!(
        calls[..3],
        [
            format!("provider={provider} kind version"),
            format!("provider={provider} kind get clusters"),
            format!(
                "provider={provider} kind create cluster --name {name} --config {dir}/kind-config.yaml --kubeconfig {dir}/kubeconfig --retain --wait 5m"
            ),
        ],
        "{calls:#?}"
    );
    // The loads run side by side: the built image, and PostgreSQL's when the engine has it.
    let load = |bin: &str| format!("provider={provider} kind load image-archive {dir}/images/{bin}.tar --name {name}");
    let end = calls.len() - 1;
    let mut loads = calls[3..end].to_vec();
    loads.sort();
    let expected = if third_party { vec![load("datastorage"), load("postgres")] } else { vec![load("datastorage")] };
    assert_eq!(loads, expected, "{calls:#?}");
    assert_eq!(
        calls[end..],
        [format!("provider={provider} kind delete cluster --name {name} --kubeconfig {dir}/kubeconfig")],
        "{calls:#?}"
    );
    shim.assert_kubeconfig_untouched();
    assert!(!run.dir.join("kubeconfig").exists(), "the private kubeconfig outlived the cluster");
    let archives: Vec<_> = std::fs::read_dir(run.dir.join("images"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "tar"))
        .collect();
    assert!(archives.is_empty(), "image archives left after their load: {archives:?}");
    let config = std::fs::read_to_string(run.dir.join("kind-config.yaml")).unwrap();
    assert!(config.contains("containerPort: 30281") && config.contains("hostPort: 18281"), "{config}");
    assert_clean(run, "datastorage");
}

#[test]
#[ignore = "needs the local cluster: run by cargo xtask test"]
fn on_local_cluster_the_kind_path_runs_the_exact_kind_commands() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let shim = Shim::new("kind");
    let run = xtask(&["e2e", "datastorage", "--engine", "docker"], &shim.scratch.0, &shim.envs());
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.report["outcome"], "ok");
    // The provider is set for docker too, whatever the shell had.
    kind_run_expectations(&shim, &run, "docker", true);
}

/// Deletes a kept shim cluster when dropped, so a failed assertion leaves no forwarders,
/// node container or namespaces for the next test.
struct KeptCluster<'a> {
    shim: &'a Shim,
    name: String,
}

impl Drop for KeptCluster<'_> {
    fn drop(&mut self) {
        let status = Command::new("kind")
            .args(["delete", "cluster", "--name", &self.name])
            .envs(self.shim.envs())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        if !std::thread::panicking() {
            assert!(status.success(), "the shim could not delete {}", self.name);
        }
    }
}

#[test]
#[ignore = "needs the local cluster: run by cargo xtask test"]
fn on_local_cluster_a_reused_kind_cluster_gets_each_image_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let shim = Shim::new("reuse");
    let envs = shim.envs();
    let args = ["e2e", "datastorage", "--engine", "docker", "--reuse-cluster"];
    let _kept = KeptCluster { shim: &shim, name: "remedy-datastorage".into() };

    let first = xtask(&args, &shim.scratch.0.join("first"), &envs);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert_eq!(first.task("load-image-datastorage")["status"], "ok");
    assert!(first.stderr.contains("kept kind cluster remedy-datastorage, kubeconfig "), "{}", first.stderr);
    // After a reboot podman leaves a kind node stopped; kind still lists its cluster.
    let node = "remedy-datastorage-control-plane";
    let stopped = Command::new("docker").args(["stop", "--time", "1", node]).output().unwrap();
    assert!(stopped.status.success(), "docker stop {node}: {}", String::from_utf8_lossy(&stopped.stderr));
    // Kind turns the node's image garbage collection off: older tags pruned from the engine go
    // from the node too. Four tags newer than the run's own, in the engine and in the node.
    let base = std::env::var("REMEDY_IMAGE_BASE").unwrap();
    let fakes: Vec<String> = (1..=4).map(|i| format!("localhost/remedy/datastorage:prune-node-{i}")).collect();
    let node_images = shim.scratch.0.join("kind-shim-clusters.remedy-datastorage.images");
    for (i, image) in fakes.iter().enumerate() {
        std::fs::write(shim.scratch.0.join("Dockerfile"), format!("FROM {base}\nLABEL remedy.test.prune-node={i}\n"))
            .unwrap();
        let built =
            Command::new("docker").args(["build", "--quiet", "--tag", image]).arg(&shim.scratch.0).output().unwrap();
        assert!(built.status.success(), "docker build {image}: {}", String::from_utf8_lossy(&built.stderr));
        let mut list = std::fs::OpenOptions::new().append(true).open(&node_images).unwrap();
        std::io::Write::write_all(&mut list, format!("{image}\n").as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
    }
    let second = xtask(&args, &shim.scratch.0.join("second"), &envs);
    let in_node = std::fs::read_to_string(&node_images).unwrap();
    let in_engine: Vec<bool> = fakes.iter().map(|image| image_exists(image)).collect();
    for image in &fakes {
        let _ = Command::new("docker").args(["rmi", image]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    // The first run is on record: the second says how it compares.
    let compared = second.stderr.lines().find(|l| l.trim_start().starts_with("took ") && l.contains(" usually "));
    assert!(compared.is_some_and(|l| l.contains(" here (")), "{}", second.stderr);
    for task in ["cluster", "build-image-datastorage", "load-image-datastorage", "load-image-postgres"] {
        assert_eq!(second.task(task)["status"], "cached", "{task}");
    }
    assert_eq!(in_engine, [false, true, true, true], "the newest 3 are kept in the engine");
    assert!(!in_node.contains(&fakes[0]) && in_node.contains(&fakes[1]), "pruned from the node too: {in_node}");

    let calls = shim.calls();
    let count = |what: &str| calls.iter().filter(|c| c.contains(what)).count();
    assert_eq!(count("kind create cluster --name remedy-datastorage "), 1, "{calls:#?}");
    assert_eq!(count("/images/datastorage.tar"), 1, "{calls:#?}");
    assert_eq!(count("/images/postgres.tar"), 1, "{calls:#?}");
    assert_eq!(count("kind export kubeconfig --name remedy-datastorage"), 2, "{calls:#?}");
    assert_eq!(count("kind delete cluster"), 0, "{calls:#?}");
    assert!(namespace_exists("remedy-datastorage"), "the reused environment was not kept");
    shim.assert_kubeconfig_untouched();

    // The generated database password, kept in the reused namespace, is in no file of either
    // run: logs, reports, diagnostics, the shim's call log.
    let password = kubectl(&[
        "get",
        "secret",
        "postgresql-credentials",
        "--namespace",
        "remedy-datastorage",
        "--output",
        "go-template={{.data.POSTGRES_PASSWORD | base64decode}}",
    ]);
    assert!(password.len() >= 16, "a generated password: {password:?}");
    let found = Command::new("grep").args(["-rlF", &password]).arg(&shim.scratch.0).output().unwrap();
    assert!(found.stdout.is_empty(), "the password is written in {}", String::from_utf8_lossy(&found.stdout));
}

#[test]
#[ignore = "needs the local cluster and podman: run by cargo xtask test"]
fn on_local_cluster_podman_builds_and_saves_images_for_kind() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let shim = Shim::new("podman");
    // Debian's podman here needs runc and explicit ulimits (see docs/local-cluster.md).
    let conf = shim.scratch.0.join("containers.conf");
    std::fs::write(&conf, "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n[engine]\nruntime = \"runc\"\n").unwrap();
    let base = std::env::var("REMEDY_IMAGE_BASE").expect("the local cluster exports REMEDY_IMAGE_BASE");
    let copied = Command::new("sh")
        .args(["-c", &format!("docker save {base} | podman load")])
        .env("CONTAINERS_CONF", &conf)
        .status()
        .unwrap();
    assert!(copied.success(), "could not copy {base} into podman's storage");
    let mut envs = shim.envs();
    envs.push(("CONTAINERS_CONF", conf.to_str().unwrap().to_owned()));
    let run = xtask(&["e2e", "datastorage", "--engine", "podman"], &shim.scratch.0, &envs);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    // Podman's storage has only the base image: the node pulls PostgreSQL's.
    kind_run_expectations(&shim, &run, "podman", false);
    let build_log = std::fs::read_to_string(run.dir.join("logs/build-image-datastorage.log")).unwrap();
    assert!(build_log.contains("$ podman build") || build_log.contains("nothing to do"), "{build_log}");
    let load_log = std::fs::read_to_string(run.dir.join("logs/load-image-datastorage.log")).unwrap();
    assert!(load_log.contains("$ podman save --format docker-archive"), "{load_log}");
}

#[test]
#[ignore = "needs the local cluster: run by cargo xtask test"]
fn on_local_cluster_a_port_in_use_is_named_before_any_cluster_exists() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let shim = Shim::new("port");
    let holder = std::net::TcpListener::bind("127.0.0.1:18281").expect("port 18281 free for the test");
    let run = xtask(&["e2e", "datastorage", "--engine", "docker"], &shim.scratch.0, &shim.envs());
    drop(holder);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let line = run.stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(
        line.contains("host port 18281 is in use by") && line.contains(&format!("pid {}", std::process::id())),
        "{}",
        run.stderr
    );
    assert_eq!(
        shim.calls(),
        ["provider=docker kind version", "provider=docker kind get clusters"],
        "work started despite the busy port"
    );
    shim.assert_kubeconfig_untouched();
}

#[test]
#[ignore = "needs the local cluster: run by cargo xtask test"]
fn on_local_cluster_e2e_all_shares_one_kind_cluster() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let shim = Shim::new("all");
    let run = xtask(&["e2e", "all", "--engine", "docker", "--parallel", "3"], &shim.scratch.0, &shim.envs());
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let dir = run.dir.to_str().unwrap();
    let calls = shim.calls();
    let creates: Vec<&String> = calls.iter().filter(|c| c.contains("kind create cluster")).collect();
    let deletes: Vec<&String> = calls.iter().filter(|c| c.contains("kind delete cluster")).collect();
    assert_eq!((creates.len(), deletes.len()), (1, 1), "{calls:#?}");
    assert!(creates[0].contains(&format!("--config {dir}/kind-config.yaml")), "{}", creates[0]);
    let exported = calls.iter().filter(|c| c.contains("kind export kubeconfig")).count();
    assert_eq!(exported, 5, "each environment finds the shared cluster: {calls:#?}");
    let config = std::fs::read_to_string(run.dir.join("kind-config.yaml")).unwrap();
    assert_eq!(config.matches("hostPort:").count(), 6, "{config}");
    for service in ["gateway", "signalprocessing", "datastorage", "remediationorchestrator", "workflowexecution"] {
        let report = std::fs::read_to_string(run.dir.join(service).join("report.json")).unwrap();
        let report: Value = serde_json::from_str(&report).unwrap();
        assert_eq!(report["outcome"], "ok", "{service}");
        assert!(run.dir.join(service).join("junit.xml").exists(), "{service} ran its specs");
        let ns = format!("remedy-{service}");
        assert!(!namespace_exists(&ns), "namespace {ns} outlived the shared cluster");
    }
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(run.dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!((&summary["outcome"], &summary["totals"]["runs_ok"]), (&json!("ok"), &json!(5)), "{summary}");
    assert_eq!(summary["missing"], json!([]), "{summary}");
    assert!(run.stderr.contains("deleted kind cluster remedy-all-"), "{}", run.stderr);
    shim.assert_kubeconfig_untouched();
    let left = processes_mentioning(dir);
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

/// Debian's docker-registry (the CNCF distribution registry) on a free 127.0.0.1 port with its
/// storage in a scratch directory; killed when dropped.
struct LocalRegistry {
    child: std::process::Child,
    address: String,
}

impl LocalRegistry {
    fn start(dir: &Path) -> LocalRegistry {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let address = format!("127.0.0.1:{port}");
        let config = dir.join("registry.yml");
        let storage = dir.join("registry");
        let yaml = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n",
            storage.display()
        );
        std::fs::write(&config, yaml).unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start docker-registry ({e}): apt-get install docker-registry"));
        let registry = LocalRegistry { child, address };
        let deadline = Instant::now() + Duration::from_secs(10);
        while registry.get("/v2/").is_none() {
            assert!(Instant::now() < deadline, "docker-registry does not answer on {}", registry.address);
            std::thread::sleep(Duration::from_millis(100));
        }
        registry
    }

    /// The body of a GET, or None unless it answers 2xx.
    fn get(&self, path: &str) -> Option<String> {
        let url = format!("http://{}{path}", self.address);
        let out = Command::new("curl").args(["--fail", "--silent", &url]).output().unwrap();
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The digest the registry gives the manifest of `repository:tag`.
    fn digest(&self, repository: &str, tag: &str) -> String {
        let url = format!("http://{}/v2/{repository}/manifests/{tag}", self.address);
        let accept = "Accept: application/vnd.docker.distribution.manifest.v2+json";
        let out =
            Command::new("curl").args(["--fail", "--silent", "--head", "--header", accept, &url]).output().unwrap();
        let head = String::from_utf8_lossy(&out.stdout).into_owned();
        let digest = head.lines().find_map(|l| {
            l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("docker-content-digest")).map(|(_, v)| v.trim())
        });
        digest.unwrap_or_else(|| panic!("no digest for {repository}:{tag}: {head}")).to_owned()
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes an image name from the local docker, whatever the test's outcome: the registry's port
/// is new each time, so its names would pile up.
struct LocalTag(String);

impl Drop for LocalTag {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["image", "rm", "--force", &self.0]).output();
    }
}

/// Deletes a namespace a test kept on purpose, whatever the test's outcome.
struct KeptNamespace(String);

impl Drop for KeptNamespace {
    fn drop(&mut self) {
        // As the xtask's teardown does: the namespace (so nothing makes new pods), then its pods
        // without a grace period.
        let kubeconfig = kubeconfig();
        let namespace = ["delete", "namespace", &self.0, "--wait=false"];
        let _ = Command::new("kubectl").arg("--kubeconfig").arg(&kubeconfig).args(namespace).output();
        let pods = ["delete", "pods", "--all", "-n", &self.0, "--grace-period=0", "--force", "--wait=false"];
        let _ = Command::new("kubectl").arg("--kubeconfig").arg(&kubeconfig).args(pods).output();
    }
}

fn kubectl(args: &[&str]) -> String {
    let out = Command::new("kubectl").arg("--kubeconfig").arg(kubeconfig()).args(args).output().unwrap();
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs the local cluster and docker-registry: run by cargo xtask test"]
fn on_local_cluster_images_are_pushed_to_a_registry_and_pulled_from_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("registry");
    let registry = LocalRegistry::start(&scratch.0);
    let kubeconfig = kubeconfig();
    let args =
        ["e2e", "datastorage", "--cluster", "existing", "--kubeconfig", &kubeconfig, "--registry", &registry.address];

    // First run: built, pushed with its content-hash tag, deployed, namespace deleted.
    let first = scratch.0.join("first");
    let run = xtask(&args, &first, &cluster_images());
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.task("push-image-datastorage")["status"], "ok");
    let push_log = std::fs::read_to_string(first.join("logs/push-image-datastorage.log")).unwrap();
    let tag = push_log
        .lines()
        .find_map(|l| l.strip_prefix(&format!("$ docker push {}/remedy/datastorage:", registry.address)))
        .unwrap_or_else(|| panic!("no push in {push_log}"))
        .to_owned();
    assert_eq!(tag.len(), 16, "not a content-hash tag: {tag}");
    let catalog: Value = serde_json::from_str(&registry.get("/v2/_catalog").unwrap()).unwrap();
    assert_eq!(catalog["repositories"], serde_json::json!(["remedy/datastorage"]));
    let tags: Value = serde_json::from_str(&registry.get("/v2/remedy/datastorage/tags/list").unwrap()).unwrap();
    assert_eq!(tags["tags"], serde_json::json!([tag]));
    assert_clean(&run, "datastorage");

    // Without the image on this machine, the second run builds and pushes nothing: the kubelet
    // (through the host's docker) pulls it from the registry.
    let image = format!("{}/remedy/datastorage:{tag}", registry.address);
    let _untag = LocalTag(image.clone());
    let removed = Command::new("docker").args(["image", "rm", "--force", &image]).output().unwrap();
    assert!(removed.status.success(), "docker image rm {image}: {}", String::from_utf8_lossy(&removed.stderr));
    let second = scratch.0.join("second");
    let mut kept = args.to_vec();
    kept.push("--keep-cluster");
    let run = xtask(&kept, &second, &cluster_images());
    let ns = KeptNamespace(run.namespace("datastorage"));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.task("build-image-datastorage")["status"], "cached");
    assert_eq!(run.task("push-image-datastorage")["status"], "cached");
    let pods = kubectl(&[
        "get",
        "pods",
        "-n",
        &ns.0,
        "-o",
        r#"jsonpath={range .items[*]}{.spec.containers[0].image} {.status.containerStatuses[0].imageID}{"\n"}{end}"#,
    ]);
    // The image ID names one of the image's repository digests, perhaps another registry's from
    // an earlier run: the digest is the same, the pull event below says where it came from.
    let digest = registry.digest("remedy/datastorage", &tag);
    let datastorage: Vec<&str> = pods.lines().filter(|l| l.contains("/remedy/datastorage")).collect();
    assert!(!datastorage.is_empty(), "{pods}");
    for line in datastorage {
        let (pod_image, id) = line.split_once(' ').unwrap();
        assert_eq!(pod_image, image, "{pods}");
        assert!(id.starts_with("docker-pullable://") && id.ends_with(&format!("@{digest}")), "{pods}");
    }
    let events = kubectl(&["get", "events", "-n", &ns.0, "-o", "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}"]);
    assert!(events.contains(&format!("Successfully pulled image \"{image}\"")), "not pulled: {events}");
    let back = Command::new("docker").args(["image", "inspect", &image]).output().unwrap();
    assert!(back.status.success(), "{image} is not on this machine after the pull");
}

#[test]
#[ignore = "needs the local cluster: run by cargo xtask test"]
fn on_local_cluster_an_unreachable_registry_fails_before_any_work() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("noregistry");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let address = format!("127.0.0.1:{port}");
    let kubeconfig = kubeconfig();
    let dir = scratch.0.join("run");
    let args = ["e2e", "datastorage", "--cluster", "existing", "--kubeconfig", &kubeconfig, "--registry", &address];
    let started = Instant::now();
    let run = xtask(&args, &dir, &cluster_images());
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    let errors: Vec<&str> = run.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].starts_with(&format!("error: registry {address} does not answer at http://{address}/v2/ (")),
        "{}",
        run.stderr
    );
    assert!(errors[0].ends_with("start it, or pass the right --registry"), "{}", run.stderr);
    // Nothing ran: no task log, no report, so no namespace was made either.
    assert!(!dir.exists(), "the run left {}", dir.display());
}

/// Runs the shim's kind as a user would, outside the xtask.
fn shim_kind(shim: &Shim, args: &[&str]) -> std::process::Output {
    let cmd = Command::new("kind")
        .args(args)
        .envs(shim.envs())
        .env("KIND_EXPERIMENTAL_PROVIDER", "docker")
        .stdin(Stdio::null())
        .output();
    cmd.unwrap()
}

fn shim_clusters(shim: &Shim) -> Vec<String> {
    let out = shim_kind(shim, &["get", "clusters"]);
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

#[test]
#[ignore = "needs the local cluster: run by cargo xtask test"]
fn on_local_cluster_a_kind_cluster_the_run_did_not_create_is_refused_and_never_deleted() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let shim = Shim::new("theirs");
    let config = shim.scratch.0.join("theirs.yaml");
    std::fs::write(&config, "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\n").unwrap();
    let kubeconfig = shim.scratch.0.join("theirs.kubeconfig");
    let made = shim_kind(
        &shim,
        &[
            "create",
            "cluster",
            "--name",
            "mine",
            "--config",
            config.to_str().unwrap(),
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    );
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let _theirs = KeptCluster { shim: &shim, name: "mine".into() };
    let before = shim.calls().len();
    let dir = shim.scratch.0.join("run");
    let run = xtask(&["e2e", "datastorage", "--engine", "docker", "--cluster-name", "mine"], &dir, &shim.envs());
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let error = run.stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
    assert_eq!(
        error,
        "error: a kind cluster named mine already exists: pass --reuse-cluster to use it (and keep it), or another --cluster-name"
    );
    let calls = shim.calls()[before..].to_vec();
    assert!(!calls.iter().any(|c| c.contains("delete cluster") || c.contains("create cluster")), "{calls:#?}");
    assert_eq!(shim_clusters(&shim), ["mine"], "the user's cluster is gone");
    assert!(!dir.exists(), "the refused run left {}", dir.display());
}

#[test]
#[ignore = "needs the local cluster: run by cargo xtask test"]
fn on_local_cluster_a_failed_kind_create_is_diagnosed_then_deleted_and_says_only_what_it_did() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let shim = Shim::new("createfails");
    // After kind made the node: --retain keeps it for the logs, then the run deletes it.
    let mut envs = shim.envs();
    envs.push(("KIND_SHIM_CREATE_FAILS", "after-node".to_owned()));
    let run = xtask(&["e2e", "datastorage", "--engine", "docker"], &shim.scratch.0.join("after"), &envs);
    assert_failed_with(&run, "cluster", "kind create cluster");
    assert!(run.dir.join("kind-logs/kind-version.txt").is_file(), "no kind logs: {}", run.stderr);
    assert_eq!(run.task("delete-cluster")["status"], "ok");
    assert!(run.stderr.contains("deleted kind cluster remedy-datastorage-"), "{}", run.stderr);
    assert!(shim_clusters(&shim).is_empty(), "the failed cluster's nodes were left");
    // Before any node existed: no logs to export, nothing to delete, and nothing said of either.
    let mut envs = shim.envs();
    envs.push(("KIND_SHIM_CREATE_FAILS", "before-node".to_owned()));
    let before = shim.calls().len();
    let run = xtask(&["e2e", "datastorage", "--engine", "docker"], &shim.scratch.0.join("before"), &envs);
    assert_failed_with(&run, "cluster", "kind create cluster");
    let calls = shim.calls()[before..].to_vec();
    assert!(!calls.iter().any(|c| c.contains("export logs") || c.contains("delete cluster")), "{calls:#?}");
    assert!(!run.stderr.contains("deleted kind cluster") && !run.stderr.contains("kind logs saved"), "{}", run.stderr);
    assert_eq!(run.task("delete-cluster")["status"], "cached");
}

#[test]
#[ignore = "needs the local cluster: run by cargo xtask test"]
fn on_local_cluster_a_kind_cluster_that_never_gets_ready_fails_naming_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let shim = Shim::new("notready");
    let mut envs = shim.envs();
    envs.push(("KIND_SHIM_NOT_READY", "1".to_owned()));
    let run = xtask(&["e2e", "datastorage", "--engine", "docker", "--wait-timeout", "5"], &shim.scratch.0, &envs);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(run.task("cluster")["status"], "ok", "kind's create exits 0 when --wait times out");
    let error = run.task("namespace")["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("the cluster is not ready after 5s: the API server does not answer"), "{error}");
    assert_eq!(run.task("postgresql")["status"], "not_started", "deployed onto a cluster that was not ready");
    assert!(shim_clusters(&shim).is_empty(), "the cluster was not deleted");
}

/// Starts `args`, waits until the deploy phase has begun (PostgreSQL's task log exists), then
/// SIGKILLs it: nothing of the run gets to tear down.
fn killed_in_deploy(args: &[&str], dir: &Path, envs: &[(&str, String)]) -> String {
    let mut child = command(args, dir, envs).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let log = dir.join("logs/postgresql.log");
    let deadline = Instant::now() + Duration::from_secs(240);
    while !log.exists() {
        assert!(Instant::now() < deadline, "the deploy phase never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let state = dir.parent().unwrap().join("state");
    let files: Vec<_> = std::fs::read_dir(&state).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "one run file in {}", state.display());
    files[0].path().file_stem().unwrap().to_str().unwrap().to_owned()
}

#[test]
#[ignore = "needs the local cluster: run by cargo xtask test"]
fn on_local_cluster_what_a_killed_run_left_is_removed_by_the_next() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("killed");
    let args = on_existing(&["e2e", "datastorage"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run_id = killed_in_deploy(&args, &scratch.0.join("run"), &cluster_images());
    let ns = format!("remedy-datastorage-{}", &run_id[run_id.len() - 6..]);
    assert!(namespace_exists(&ns), "the killed run made no namespace: the test proves nothing");
    let dry = xtask(&["e2e", "gc", "--dry-run"], &scratch.0.join("gc"), &[]);
    assert!(
        dry.stderr.contains(&format!("run {run_id} (pid ")) && dry.stderr.contains("would remove"),
        "{}",
        dry.stderr
    );
    assert!(namespace_exists(&ns), "a dry run removed the namespace");
    let gc = xtask(&["e2e", "gc"], &scratch.0.join("gc"), &[]);
    assert_eq!(gc.code, Some(0), "{}", gc.stderr);
    assert!(gc.stderr.contains(&format!("namespace {ns}")), "{}", gc.stderr);
    assert!(!namespace_exists(&ns), "namespace {ns} left behind");
    let left = processes_mentioning(&format!("REMEDY_RUN={run_id}"));
    assert!(left.is_empty(), "processes left behind: {left:?}");
    let again = xtask(&["e2e", "gc"], &scratch.0.join("gc"), &[]);
    assert!(again.stderr.contains("no run left anything behind"), "{}", again.stderr);
}

#[test]
#[ignore = "needs the local cluster: run by cargo xtask test"]
fn on_local_cluster_a_killed_runs_kind_cluster_is_deleted_but_a_kept_one_is_not() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let shim = Shim::new("killedkind");
    let fresh =
        killed_in_deploy(&["e2e", "datastorage", "--engine", "docker"], &shim.scratch.0.join("fresh"), &shim.envs());
    let fresh_name = format!("remedy-datastorage-{}", &fresh[fresh.len() - 6..]);
    let _fresh = KeptCluster { shim: &shim, name: fresh_name.clone() };
    assert!(shim_clusters(&shim).contains(&fresh_name), "the killed run made no cluster: the test proves nothing");
    let gc = xtask(&["e2e", "gc"], &shim.scratch.0.join("gc"), &shim.envs());
    assert_eq!(gc.code, Some(0), "{}", gc.stderr);
    assert!(gc.stderr.contains(&format!("kind cluster {fresh_name}")), "{}", gc.stderr);
    assert!(!shim_clusters(&shim).contains(&fresh_name), "the orphaned cluster was not deleted");
    assert!(!gc.stderr.contains("could not remove"), "{}", gc.stderr);
    assert!(!namespace_exists(&fresh_name), "its namespace outlived the cluster");

    let args = ["e2e", "datastorage", "--engine", "docker", "--keep-cluster", "--cluster-name", "kept"];
    killed_in_deploy(&args, &shim.scratch.0.join("kept"), &shim.envs());
    let _kept = KeptCluster { shim: &shim, name: "kept".into() };
    let gc = xtask(&["e2e", "gc"], &shim.scratch.0.join("gc"), &shim.envs());
    assert_eq!(gc.code, Some(0), "{}", gc.stderr);
    assert_eq!(shim_clusters(&shim), ["kept"], "a kept cluster was deleted");
}

#[test]
#[ignore = "needs the local cluster: run by cargo xtask test"]
fn on_local_cluster_teardown_deletes_what_the_run_made_outside_its_namespace() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("clusterwide");
    // The controller's manifest has a ClusterRole and its binding, which no namespace holds.
    let args = on_existing(&["e2e", "signalprocessing", "--", "a_critical_signal_in_production_is_p0"]);
    let history = root().join("target/e2e/history/signalprocessing-existing.json");
    let before = std::fs::read(&history).ok();
    let run = xtask(&args, &scratch.0, &cluster_images());
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    // One spec is no whole run: the run history learns nothing from it.
    assert_eq!(std::fs::read(&history).ok(), before, "a filtered run changed {}", history.display());
    let run_id = run.report["run_id"].as_str().unwrap();
    let left = kubectl(&[
        "get",
        "clusterroles,clusterrolebindings",
        "-l",
        &format!("remedy.dev/run-id={run_id}"),
        "-o",
        "name",
    ]);
    assert!(left.trim().is_empty(), "left behind: {left}");
    assert!(run.stderr.contains("2 cluster-wide object(s) ("), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("ClusterRole/{}-signalprocessing", run.namespace("signalprocessing"))),
        "{}",
        run.stderr
    );
    assert_clean(&run, "signalprocessing");
}

/// Writes a file's original text back when dropped.
struct Restore(PathBuf, String);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, &self.1);
    }
}

/// A copy of the workspace (tracked and untracked files, not `target`) that the watch test can
/// edit, kept under the cache so that its own `target` stays warm between runs; only files that
/// differ are written, so cargo rebuilds only what changed since the last copy.
fn workspace_copy() -> PathBuf {
    let cache = std::env::var("REMEDY_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").expect("HOME is set")).join(".cache/remedy"));
    let copy = cache.join("watch-test-workspace");
    let out = Command::new("git")
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "git ls-files: {}", String::from_utf8_lossy(&out.stderr));
    for file in String::from_utf8(out.stdout).unwrap().split('\0').filter(|f| !f.is_empty()) {
        let Ok(text) = std::fs::read(root().join(file)) else { continue };
        let dest = copy.join(file);
        if std::fs::read(&dest).ok().as_ref() != Some(&text) {
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::write(&dest, text).unwrap();
        }
    }
    copy
}

/// A running `e2e --watch` session and its stderr lines, as they come. Dropped (a failed
/// assertion) while it runs, it is interrupted and its teardown awaited, so it leaves nothing.
struct Session {
    child: std::process::Child,
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Session {
    fn start(mut cmd: Command) -> Session {
        let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                // Read to the end even when nobody listens: a closed pipe would kill the xtask.
                let _ = tx.send(line);
            }
        });
        Session { child, rx, seen: Vec::new() }
    }

    /// Waits for a line `wanted` accepts; the lines since the last wait, that one included.
    fn until(&mut self, what: &str, wanted: impl Fn(&str) -> bool, timeout: Duration) -> Vec<String> {
        let from = self.seen.len();
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    let found = wanted(&line);
                    self.seen.push(line);
                    if found {
                        return self.seen[from..].to_vec();
                    }
                }
                Err(_) => panic!("no {what} within {timeout:?}:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// The lines up to pass `n`'s verdict, which is the last.
    fn pass(&mut self, n: usize) -> Vec<String> {
        let prefix = format!("watch: pass {n} ");
        let verdict = |l: &str| l.starts_with(&prefix) && !l.starts_with(&format!("{prefix}runs again"));
        self.until(&format!("verdict of pass {n}"), verdict, Duration::from_secs(600))
    }

    fn interrupt(&self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.interrupt();
            let deadline = Instant::now() + Duration::from_secs(120);
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
#[ignore = "needs the local cluster: run by cargo xtask test"]
fn on_local_cluster_watch_reruns_what_an_edit_affects_until_ctrl_c_tears_down() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("watch");
    let copy = workspace_copy();
    let main_rs = copy.join("services/datastorage/src/main.rs");
    let original = std::fs::read_to_string(&main_rs).unwrap();
    let edited = original.replace("\"starting datastorage\"", "\"starting datastorage, edited by the watch test\"");
    assert_ne!(edited, original, "the line the test edits is gone from services/datastorage/src/main.rs");
    let args = on_existing(&["e2e", "datastorage", "--watch", "--", "a_stored_event_is_found_by_its_correlation_id"]);
    let mut cmd = command(&args, &scratch.0, &cluster_images());
    // The xtask reads the workspace `CARGO_MANIFEST_DIR` names: the copy, which the test edits.
    cmd.current_dir(&copy).env("CARGO_MANIFEST_DIR", copy.join("xtask"));
    let mut session = Session::start(cmd);
    let waiting = |l: &str| l.starts_with("watch: waiting for a change");
    let restore = Restore(main_rs.clone(), original.clone());

    let first = session.pass(1);
    assert!(first.last().unwrap().starts_with("watch: pass 1 ok"), "{}", first.join("\n"));
    session.until("waiting line", waiting, Duration::from_secs(10));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(scratch.0.join("report.json")).unwrap()).unwrap();
    let run_id = report["run_id"].as_str().unwrap();
    let ns = format!("remedy-datastorage-{}", &run_id[run_id.len() - 6..]);

    // One edit: one rebuild, one rollout of the new binary, one run of the specs.
    std::fs::write(&main_rs, &edited).unwrap();
    let pass = session.pass(2);
    let text = pass.join("\n");
    assert!(pass.last().unwrap().starts_with("watch: pass 2 ok"), "{text}");
    assert!(pass.iter().any(|l| l == "watch: services/datastorage/src/main.rs changed"), "{text}");
    for task in ["images/build-binaries", "services/datastorage", "tests/specs"] {
        let ran = pass.iter().filter(|l| l.trim_start().starts_with("ok") && l.contains(task)).count();
        assert_eq!(ran, 1, "{task} should run once: {text}");
    }
    assert!(!text.contains("infra/postgresql"), "an unaffected task ran again: {text}");
    // Every pod's (the old one may still be stopping).
    let logs = kubectl(&["logs", "-n", &ns, "-l", "app.kubernetes.io/name=datastorage", "--tail", "-1"]);
    assert!(logs.contains("edited by the watch test"), "the new binary is not what runs: {logs}");

    // A broken edit fails its pass and leaves the environment up.
    std::fs::write(&main_rs, format!("{edited}\ncompile_error!(\"broken by the watch test\");\n")).unwrap();
    let pass = session.pass(3);
    let verdict = pass.last().unwrap();
    assert!(verdict.contains("FAILED") && verdict.contains("images/build-binaries failed"), "{}", pass.join("\n"));
    assert!(verdict.ends_with("the environment stays up for the next change"), "{verdict}");
    assert!(namespace_exists(&ns), "a failed pass took the environment down");

    // An edit during a pass cancels it; the next pass takes both.
    std::fs::write(&main_rs, &edited).unwrap();
    session.until("pass 4", |l| l.starts_with("watch: pass 4 runs again"), Duration::from_secs(30));
    std::fs::write(&main_rs, &original).unwrap();
    let pass = session.pass(4);
    assert!(pass.last().unwrap().starts_with("watch: pass 4 cancelled after"), "{}", pass.join("\n"));
    let pass = session.pass(5);
    assert!(pass.last().unwrap().starts_with("watch: pass 5 ok"), "{}", pass.join("\n"));
    drop(restore);

    // Ctrl-C tears the environment down.
    session.until("waiting line", waiting, Duration::from_secs(10));
    session.interrupt();
    session.until("the session's end", |l| l.starts_with("watch: 5 passes"), Duration::from_secs(120));
    let status = session.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", session.seen.join("\n"));
    assert!(!namespace_exists(&ns), "namespace {ns} outlived the session");
    let left = processes_mentioning(scratch.0.to_str().unwrap());
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

/// `build-binaries`'s log of `run`.
fn binaries_log(run: &Run) -> String {
    std::fs::read_to_string(run.dir.join("logs/build-binaries.log")).unwrap_or_default()
}

#[test]
#[ignore = "needs the local cluster and cargo-zigbuild: run by cargo xtask test"]
fn on_local_cluster_images_built_by_zig_pass_the_gateway_specs() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("zig");
    let args = on_existing(&["e2e", "gateway", "--builder", "zig"]);
    let run = xtask(&args, &scratch.0.join("run"), &cluster_images());
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.report["outcome"], "ok", "{}", run.stderr);
    assert!(run.dir.join("junit.xml").exists(), "the specs ran: {}", run.stderr);
    let log = binaries_log(&run);
    assert!(log.contains("cargo zigbuild --locked --target x86_64-unknown-linux-gnu.2.36"), "{log}");
    assert!(log.contains("2 binaries load with glibc 2.36 on amd64"), "{log}");
}

#[test]
#[ignore = "needs the local cluster: run by cargo xtask test"]
fn on_local_cluster_a_binary_the_base_image_cannot_load_stops_the_run_before_any_image() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("glibc");
    // This machine's glibc is 2.36: its binaries need more than a base image with glibc 2.17.
    let mut envs = cluster_images();
    envs.push(("REMEDY_BASE_GLIBC", "2.17".to_owned()));
    let run = xtask(&on_existing(&["e2e", "gateway", "--builder", "host"]), &scratch.0.join("run"), &envs);
    assert_failed_with(&run, "build-binaries", "but the base image");
    let error = run.task("build-binaries")["error"].as_str().unwrap().to_owned();
    assert!(error.contains("has glibc 2.17") && error.contains("--builder zig"), "{error}");
    assert_eq!(run.task("build-image-gateway")["status"], "not_started", "an image was built: {}", run.stderr);
    assert_clean(&run, "gateway");
}

#[test]
#[ignore = "needs the local cluster and a builder image (test/builder-image.sh): run by cargo xtask test"]
fn on_local_cluster_images_compiled_in_the_engine_pass_the_gateway_specs_and_rebuild_incrementally() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("container");
    let builder = std::env::var("REMEDY_BUILDER_IMAGE")
        .expect("REMEDY_BUILDER_IMAGE is not set: make one with `eval \"$(bash test/builder-image.sh)\"`");
    // A copy of the workspace, so that the runs can change the gateway.
    let copy = workspace_copy();
    let main_rs = copy.join("services/gateway/src/main.rs");
    let original = std::fs::read_to_string(&main_rs).unwrap();
    // Each run's gateway is one no build has seen: BuildKit answers a context it has built before
    // (an earlier CI run on this machine) from its layer cache, without running cargo at all.
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let edit = |run: &str| {
        let line = format!("\"starting gateway, edited by the container builder test {nonce} for its {run} run\"");
        original.replace("\"starting gateway\"", &line)
    };
    assert_ne!(edit("first"), original, "the line the test edits is gone from services/gateway/src/main.rs");
    let _restore = Restore(main_rs.clone(), original.clone());
    // Docker's own client here (/usr/local/bin, 28.x) builds with BuildKit only through buildx,
    // which this machine lacks; Debian's (/usr/bin, 20.10) has it built in.
    let path = format!("/usr/bin:{}", std::env::var("PATH").unwrap());
    let run = |name: &str| {
        let args = on_existing(&["e2e", "gateway", "--builder", "container", "--builder-image", &builder]);
        let dir = scratch.0.join(name);
        let mut cmd = command(&args, &dir, &cluster_images());
        cmd.current_dir(&copy).env("CARGO_MANIFEST_DIR", copy.join("xtask")).env("PATH", &path);
        let started = std::time::Instant::now();
        let run = finish(cmd.output().unwrap(), &dir);
        assert_eq!(run.code, Some(0), "{name}: {}", run.stderr);
        assert!(run.dir.join("junit.xml").exists(), "{name}: the specs ran: {}", run.stderr);
        let compile = run.task("build-binaries")["duration_s"].as_f64().unwrap();
        eprintln!(
            "{name} run: {:.0} s, of which compiling in the engine {compile:.0} s",
            started.elapsed().as_secs_f64()
        );
        run
    };
    std::fs::write(&main_rs, edit("first")).unwrap();
    let first = run("first");
    let log = binaries_log(&first);
    assert!(log.contains("DOCKER_BUILDKIT=1 docker build --platform linux/amd64 --target export"), "{log}");
    assert!(log.contains("2 binaries load with glibc 2.36 on amd64"), "{log}");

    std::fs::write(&main_rs, edit("second")).unwrap();
    let second = run("second");
    let log = binaries_log(&second);
    // Incremental: the changed crate is compiled again, its dependencies come from the cached
    // target directory.
    assert!(log.contains("Compiling gateway v"), "the changed gateway was not recompiled: {log}");
    for unchanged in ["Compiling tokio v", "Compiling datastorage v", "Compiling serde v"] {
        assert!(!log.contains(unchanged), "the second build ran `{unchanged}`: not incremental: {log}");
    }
    assert_eq!(second.task("build-image-datastorage")["status"], "cached", "datastorage's binary did not change");
    assert_eq!(second.task("build-image-gateway")["status"], "ok", "gateway's image was not rebuilt");
}
