//! `cargo xtask pre-push`: what the git pre-push hook runs. It works out the files the pushed
//! commits change, the workspace crates those affect (and every crate depending on them), and
//! runs `cargo fmt --check`, clippy and the tests of just those crates; the E2E runs of the
//! affected services only when asked. The workspace is the repository of the current directory.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;

use anyhow::{Context, bail};
use xshell::{Shell, cmd};

use crate::backends::{Cluster, KindCluster, Lifecycle};
use crate::catalog::catalog;
use crate::envs::{self, Settings};
use crate::flags;

impl flags::PrePush {
    pub fn run(self) -> anyhow::Result<()> {
        let sh = Shell::new()?;
        let top = cmd!(sh, "git rev-parse --show-toplevel").read().context("`git rev-parse --show-toplevel` failed")?;
        sh.change_dir(top);
        let stdin = std::io::stdin();
        let input = if stdin.is_terminal() {
            head_to_upstream(&sh)?
        } else {
            std::io::read_to_string(stdin).context("cannot read the pre-push lines from stdin")?
        };
        let mut files = BTreeSet::new();
        for update in parse_updates(&input)? {
            files.extend(changed_files(&sh, self.remote.as_deref(), &update)?);
        }
        let files: Vec<String> = files.into_iter().collect();
        if files.is_empty() {
            eprintln!("pre-push: nothing to check: no changed files");
            return Ok(());
        }
        if files.iter().all(|f| is_doc(f)) {
            eprintln!("pre-push: nothing to check: only docs changed");
            return Ok(());
        }
        let metadata = cmd!(sh, "cargo metadata --format-version 1 --no-deps")
            .quiet()
            .read()
            .context("pre-push: `cargo metadata` failed (push without the checks: git push --no-verify)")?;
        let workspace = Workspace::from_metadata(&metadata)?;
        let e2e = e2e_opted_in(
            std::env::var("REMEDY_PRE_PUSH_E2E").ok().as_deref(),
            cmd!(sh, "git config --type=bool --get remedy.prePushE2e").quiet().ignore_status().read().ok().as_deref(),
        );
        let checks = Checks::decide(&files, &workspace, &environments()?);
        for line in checks.explain(e2e) {
            eprintln!("pre-push: {line}");
        }
        if self.plan {
            for args in checks.commands(e2e) {
                println!("cargo {}", args.join(" "));
            }
            return Ok(());
        }
        for args in checks.commands(e2e) {
            let shown = format!("cargo {}", args.join(" "));
            if cmd!(sh, "cargo {args...}").run().is_err() {
                bail!("pre-push: `{shown}` failed; fix it, or push without the checks: git push --no-verify");
            }
        }
        Ok(())
    }
}

/// From a terminal: the line git would send for pushing HEAD to its upstream.
fn head_to_upstream(sh: &Shell) -> anyhow::Result<String> {
    let head = cmd!(sh, "git rev-parse HEAD").read().context("`git rev-parse HEAD` failed")?;
    let upstream = "@{upstream}";
    let upstream = cmd!(sh, "git rev-parse --verify --quiet {upstream}").quiet().ignore_stderr().read();
    Ok(format!("HEAD {head} @{{upstream}} {}", upstream.unwrap_or_else(|_| ZERO.to_owned())))
}

const ZERO: &str = "0000000000000000000000000000000000000000";

fn is_zero(sha: &str) -> bool {
    sha.bytes().all(|b| b == b'0')
}

/// One line of git's pre-push input: `<local ref> <local sha> <remote ref> <remote sha>`.
#[derive(Debug, PartialEq, Eq)]
struct Update {
    local_sha: String,
    remote_sha: String,
}

fn parse_updates(input: &str) -> anyhow::Result<Vec<Update>> {
    let lines = input.lines().map(str::trim).filter(|l| !l.is_empty());
    lines
        .map(|line| match line.split_whitespace().collect::<Vec<_>>()[..] {
            [_, local_sha, _, remote_sha] => {
                Ok(Update { local_sha: local_sha.to_owned(), remote_sha: remote_sha.to_owned() })
            }
            _ => bail!("unexpected pre-push line `{line}`: want `<local ref> <local sha> <remote ref> <remote sha>`"),
        })
        .collect()
}

/// The commits a pushed ref brings.
#[derive(Debug, PartialEq, Eq)]
enum Range<'a> {
    /// A deleted ref: nothing to check.
    Deleted,
    /// The remote has `base`: what changed from it to `tip`.
    Since { base: &'a str, tip: &'a str },
    /// A new ref on the remote: from the merge-base with the remote's default branch.
    New { tip: &'a str },
}

impl Update {
    fn range(&self) -> Range<'_> {
        match (is_zero(&self.local_sha), is_zero(&self.remote_sha)) {
            (true, _) => Range::Deleted,
            (false, true) => Range::New { tip: &self.local_sha },
            (false, false) => Range::Since { base: &self.remote_sha, tip: &self.local_sha },
        }
    }
}

/// Where a new branch most likely forks from: the remote's default branch, else origin's.
fn default_branches(remote: Option<&str>) -> Vec<String> {
    let mut remotes: Vec<&str> = remote.filter(|r| !r.contains(['/', ':'])).into_iter().collect();
    if !remotes.contains(&"origin") {
        remotes.push("origin");
    }
    remotes.iter().flat_map(|r| ["HEAD", "main", "master"].map(|b| format!("refs/remotes/{r}/{b}"))).collect()
}

fn changed_files(sh: &Shell, remote: Option<&str>, update: &Update) -> anyhow::Result<Vec<String>> {
    let tip = match update.range() {
        Range::Deleted => return Ok(Vec::new()),
        Range::Since { base, tip } => {
            // A remote commit we have not fetched: treated like a new branch.
            let commit = format!("{base}^{{commit}}");
            if cmd!(sh, "git cat-file -e {commit}").quiet().ignore_stderr().run().is_ok() {
                return diff(sh, base, tip);
            }
            tip
        }
        Range::New { tip } => tip,
    };
    for branch in default_branches(remote) {
        if let Ok(base) = cmd!(sh, "git merge-base {tip} {branch}").quiet().ignore_stderr().read() {
            return diff(sh, &base, tip);
        }
    }
    // No known fork point: every file the commits not on any remote touch (all of them without remotes).
    let log = cmd!(sh, "git log --format= --name-only {tip} --not --remotes")
        .read()
        .with_context(|| format!("`git log {tip} --not --remotes` failed"))?;
    Ok(log.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect())
}

fn diff(sh: &Shell, base: &str, tip: &str) -> anyhow::Result<Vec<String>> {
    let out = cmd!(sh, "git diff --name-only {base} {tip}")
        .read()
        .with_context(|| format!("`git diff --name-only {base} {tip}` failed"))?;
    Ok(out.lines().map(str::to_owned).collect())
}

/// Nothing builds from these.
fn is_doc(file: &str) -> bool {
    file.starts_with("docs/") || file.ends_with(".md")
}

/// A change here can change how every crate builds, lints or formats.
fn is_workspace_wide(file: &str) -> bool {
    matches!(
        file,
        "Cargo.toml"
            | "Cargo.lock"
            | "rustfmt.toml"
            | ".rustfmt.toml"
            | "clippy.toml"
            | ".clippy.toml"
            | "rust-toolchain"
            | "rust-toolchain.toml"
    ) || file.starts_with(".cargo/")
}

fn needs_fmt(file: &str) -> bool {
    let name = file.rsplit('/').next().unwrap_or(file);
    file.ends_with(".rs") || matches!(name, "Cargo.toml" | "Cargo.lock" | "rustfmt.toml" | ".rustfmt.toml")
}

/// Files outside a crate's directory that its tests read.
const READ_BY_TESTS: [(&str, &str); 2] = [("test/manifests/", "remedy-api"), ("test/manifests/", "xtask")];

/// The crate whose E2E suites live in test/e2e: `--all-targets` leaves them out.
const E2E_CRATE: &str = "remedy-e2e";

/// The workspace's crates: names, directories relative to the root, and the workspace crates
/// each depends on (any kind of dependency).
#[derive(Debug)]
struct Workspace {
    crates: Vec<Crate>,
}

#[derive(Debug)]
struct Crate {
    name: String,
    dir: String,
    deps: Vec<String>,
}

impl Workspace {
    fn from_metadata(json: &str) -> anyhow::Result<Workspace> {
        #[derive(serde::Deserialize)]
        struct Metadata {
            packages: Vec<Package>,
            workspace_root: String,
        }
        #[derive(serde::Deserialize)]
        struct Package {
            name: String,
            manifest_path: String,
            dependencies: Vec<Dependency>,
        }
        #[derive(serde::Deserialize)]
        struct Dependency {
            name: String,
        }
        let metadata: Metadata = serde_json::from_str(json).context("cannot parse `cargo metadata` output")?;
        let names: BTreeSet<&str> = metadata.packages.iter().map(|p| p.name.as_str()).collect();
        let root = format!("{}/", metadata.workspace_root.trim_end_matches('/'));
        let crates = metadata
            .packages
            .iter()
            .map(|p| {
                let dir = p.manifest_path.strip_prefix(&root).unwrap_or(&p.manifest_path);
                let dir = dir.strip_suffix("Cargo.toml").unwrap_or(dir);
                let mut deps: Vec<String> =
                    p.dependencies.iter().filter(|d| names.contains(d.name.as_str())).map(|d| d.name.clone()).collect();
                deps.sort();
                deps.dedup();
                Crate { name: p.name.clone(), dir: dir.to_owned(), deps }
            })
            .collect();
        Ok(Workspace { crates })
    }

    /// The crate whose directory holds `file` (the innermost one); directories end with `/`.
    fn crate_of(&self, file: &str) -> Option<&str> {
        let holders = self.crates.iter().filter(|c| file.starts_with(&c.dir));
        holders.max_by_key(|c| c.dir.len()).map(|c| c.name.as_str())
    }

    /// Adds every crate that depends, directly or not, on one in `affected`, with why.
    fn add_dependents(&self, affected: &mut BTreeMap<String, String>) {
        let mut queue: Vec<String> = affected.keys().cloned().collect();
        while let Some(changed) = queue.pop() {
            for c in &self.crates {
                if c.deps.contains(&changed) && !affected.contains_key(&c.name) {
                    affected.insert(c.name.clone(), format!("depends on {changed}"));
                    queue.push(c.name.clone());
                }
            }
        }
    }
}

/// Each service's environment and the files it depends on (`Plan::inputs`), relative to the
/// workspace root.
fn environments() -> anyhow::Result<Vec<(&'static str, Vec<String>)>> {
    let root = crate::project_root();
    let run_dir = root.join("target/e2e/pre-push");
    catalog()
        .services()
        .iter()
        .map(|service| {
            let cluster = Cluster::Kind(KindCluster::new("remedy-pre-push".into(), Lifecycle::Reused, &run_dir)?);
            let settings = Settings::defaults(&service.name, "pre-push", &run_dir, cluster);
            let plan =
                envs::plan(service, &settings).with_context(|| format!("pre-push: the {} plan", service.name))?;
            let inputs = plan.inputs().iter().map(|p| p.strip_prefix(root).unwrap_or(p).to_string()).collect();
            Ok((service.name.as_str(), inputs))
        })
        .collect()
}

/// What a push gets checked with, and why.
#[derive(Debug, Default, PartialEq, Eq)]
struct Checks {
    /// Why `cargo fmt --check` runs, if it does.
    fmt: Option<String>,
    /// Why every crate is affected, if it is.
    everything: Option<String>,
    /// The crates to lint and test, each with why.
    crates: BTreeMap<String, String>,
    /// The services whose E2E runs apply, each with why.
    services: BTreeMap<&'static str, String>,
    /// Changed files no rule covers.
    unowned: Vec<String>,
}

/// `path changed`, or `path and N more changed`.
fn changed(files: &[&str]) -> String {
    match files {
        [] => String::new(),
        [one] => format!("{one} changed"),
        [first, rest @ ..] => format!("{first} and {} more changed", rest.len()),
    }
}

impl Checks {
    fn decide(files: &[String], workspace: &Workspace, environments: &[(&'static str, Vec<String>)]) -> Checks {
        let files: Vec<&str> = files.iter().map(String::as_str).filter(|f| !is_doc(f)).collect();
        let mut checks = Checks::default();
        let fmt: Vec<&str> = files.iter().copied().filter(|f| needs_fmt(f)).collect();
        if !fmt.is_empty() {
            checks.fmt = Some(changed(&fmt));
        }
        let wide: Vec<&str> = files.iter().copied().filter(|f| is_workspace_wide(f)).collect();
        if !wide.is_empty() {
            let why = changed(&wide);
            checks.crates = workspace.crates.iter().map(|c| (c.name.clone(), why.clone())).collect();
            checks.everything = Some(why);
        }

        let mut direct: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut tests_only: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for &file in &files {
            if let Some(name) = workspace.crate_of(file) {
                direct.entry(name).or_default().push(file);
            } else {
                let readers: Vec<&str> =
                    READ_BY_TESTS.iter().filter(|(dir, _)| file.starts_with(dir)).map(|(_, c)| *c).collect();
                for name in &readers {
                    tests_only.entry(name).or_default().push(file);
                }
                if readers.is_empty() && !is_workspace_wide(file) {
                    checks.unowned.push(file.to_owned());
                }
            }
        }
        if checks.everything.is_none() {
            for (name, files) in &direct {
                checks.crates.insert(name.to_string(), changed(files));
            }
            workspace.add_dependents(&mut checks.crates);
            for (name, files) in &tests_only {
                if workspace.crates.iter().any(|c| c.name == *name) && !checks.crates.contains_key(*name) {
                    checks.crates.insert(name.to_string(), format!("{}, read by its tests", changed(files)));
                }
            }
        }
        checks.services = services(&files, environments);
        checks
    }

    /// The lines that say what runs and why.
    fn explain(&self, e2e: bool) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(why) = &self.fmt {
            lines.push(format!("fmt: {why}"));
        }
        if let Some(why) = &self.everything {
            lines.push(format!("clippy, tests: the whole workspace ({why})"));
        } else if !self.crates.is_empty() {
            // The changed crates first, then those depending on them.
            let (dependents, changed): (Vec<_>, Vec<_>) =
                self.crates.iter().partition(|(_, why)| why.starts_with("depends on "));
            let crates: Vec<String> =
                changed.iter().chain(&dependents).map(|(name, why)| format!("{name} ({why})")).collect();
            lines.push(format!("clippy, tests: {}", crates.join(", ")));
        }
        if self.fmt.is_none() && self.crates.is_empty() {
            lines.push(format!("nothing to check: no crate affected ({})", self.unowned.join(", ")));
        }
        if !self.services.is_empty() {
            let services: Vec<String> = self.services.iter().map(|(name, why)| format!("{name} ({why})")).collect();
            if e2e {
                lines.push(format!("e2e: {}", services.join(", ")));
            } else {
                let names: Vec<&str> = self.services.keys().copied().collect();
                lines.push(format!(
                    "e2e: not run for {} (opt in: REMEDY_PRE_PUSH_E2E=1 or `git config remedy.prePushE2e true`)",
                    names.join(", ")
                ));
            }
        }
        lines
    }

    /// The cargo commands to run, in order, as arguments after `cargo`.
    fn commands(&self, e2e: bool) -> Vec<Vec<String>> {
        let args = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        let mut commands = Vec::new();
        if self.fmt.is_some() {
            commands.push(args("fmt --all --check"));
        }
        if !self.crates.is_empty() {
            let packages: Vec<String> = if self.everything.is_some() {
                args("--workspace")
            } else {
                self.crates.keys().flat_map(|name| ["-p".to_owned(), name.clone()]).collect()
            };
            commands.push([args("clippy"), packages.clone(), args("--all-targets --locked -- -D warnings")].concat());
            if self.crates.contains_key(E2E_CRATE) {
                let suites = catalog().names().into_iter().flat_map(|s| ["--test".to_owned(), s.to_owned()]);
                let suites: Vec<String> = suites.collect();
                commands.push([args("clippy --locked -p"), args(E2E_CRATE), suites, args("-- -D warnings")].concat());
            }
            commands.push([args("test"), packages, args("--locked")].concat());
        }
        if e2e {
            for service in self.services.keys() {
                commands.push(args(&format!("run --quiet --locked -p xtask -- e2e {service}")));
            }
        }
        commands
    }
}

/// The services whose E2E runs a change applies to: those whose environment depends on a
/// changed file (its binaries' crates and the crates those depend on, its manifests, its
/// specs), each with why.
fn services(files: &[&str], environments: &[(&'static str, Vec<String>)]) -> BTreeMap<&'static str, String> {
    let mut services = BTreeMap::new();
    for (service, inputs) in environments {
        let within = |file: &str| {
            inputs
                .iter()
                .any(|input| file == input || file.strip_prefix(input.as_str()).is_some_and(|r| r.starts_with('/')))
        };
        let touched: Vec<&str> = files.iter().copied().filter(|f| within(f)).collect();
        if !touched.is_empty() {
            services.insert(*service, changed(&touched));
        }
    }
    services
}

/// The environment variable decides when set, else git config (`--type=bool` prints true/false).
fn e2e_opted_in(env: Option<&str>, git_config: Option<&str>) -> bool {
    let yes = |v: &str| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on");
    match env.filter(|v| !v.trim().is_empty()) {
        Some(v) => yes(v),
        None => git_config.is_some_and(yes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    /// This workspace's shape, as `cargo metadata --no-deps` describes it.
    fn workspace() -> Workspace {
        let package = |name: &str, dir: &str, deps: &[&str]| {
            let deps: Vec<_> = deps.iter().map(|d| serde_json::json!({ "name": d, "kind": null })).collect();
            serde_json::json!({ "name": name, "manifest_path": format!("/r/{dir}/Cargo.toml"), "dependencies": deps })
        };
        let metadata = serde_json::json!({
            "workspace_root": "/r",
            "packages": [
                package("xtask", "xtask", &["anyhow", "xshell"]),
                package("remedy-api", "services/api", &["serde"]),
                package("gateway", "services/gateway", &["remedy-api", "remedy-api", "axum"]),
                package("datastorage", "services/datastorage", &["remedy-api"]),
                package("remedy-e2e", "test/e2e", &["remedy-api"]),
                package("local-cluster-smoke", "test/local-cluster/smoke", &[]),
                package("leaf-user", "test/leaf", &["gateway"]),
            ],
        });
        Workspace::from_metadata(&metadata.to_string()).unwrap()
    }

    fn decide(files: &[&str]) -> Checks {
        let files: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        Checks::decide(&files, &workspace(), &environments().unwrap())
    }

    fn names(map: &BTreeMap<String, String>) -> Vec<&str> {
        map.keys().map(String::as_str).collect()
    }

    #[test]
    fn parses_pushes_deletions_and_new_branches() {
        let input = format!(
            "refs/heads/main {B} refs/heads/main {A}\n\nrefs/heads/new {B} refs/heads/new {ZERO}\n(delete) {ZERO} refs/heads/old {A}\n"
        );
        let updates = parse_updates(&input).unwrap();
        let ranges: Vec<Range> = updates.iter().map(Update::range).collect();
        assert_eq!(ranges, [Range::Since { base: A, tip: B }, Range::New { tip: B }, Range::Deleted]);
        assert!(parse_updates("").unwrap().is_empty());
        assert!(parse_updates("refs/heads/main 1234").is_err());
    }

    #[test]
    fn new_branches_fork_from_the_remotes_default_branch_then_origins() {
        assert_eq!(
            default_branches(Some("upstream")),
            [
                "refs/remotes/upstream/HEAD",
                "refs/remotes/upstream/main",
                "refs/remotes/upstream/master",
                "refs/remotes/origin/HEAD",
                "refs/remotes/origin/main",
                "refs/remotes/origin/master"
            ]
        );
        assert_eq!(default_branches(Some("origin")).len(), 3);
        assert_eq!(default_branches(Some("https://example.com/remedy.git")), default_branches(None));
    }

    #[test]
    fn files_belong_to_the_innermost_crate() {
        let ws = workspace();
        assert_eq!(ws.crate_of("services/gateway/src/lib.rs"), Some("gateway"));
        assert_eq!(ws.crate_of("test/local-cluster/smoke/src/main.rs"), Some("local-cluster-smoke"));
        assert_eq!(ws.crate_of("test/local-cluster/cluster.sh"), None);
        assert_eq!(ws.crate_of("services/gateway-old/x.rs"), None, "directory prefixes end with /");
        assert_eq!(ws.crate_of("Cargo.toml"), None);
    }

    #[test]
    fn a_change_affects_the_crate_and_its_reverse_dependencies() {
        let checks = decide(&["services/gateway/src/lib.rs"]);
        assert_eq!(names(&checks.crates), ["gateway", "leaf-user"]);
        assert_eq!(checks.crates["gateway"], "services/gateway/src/lib.rs changed");
        assert_eq!(checks.crates["leaf-user"], "depends on gateway");

        let checks = decide(&["services/api/src/lib.rs", "services/api/src/audit.rs"]);
        assert_eq!(names(&checks.crates), ["datastorage", "gateway", "leaf-user", "remedy-api", "remedy-e2e"]);
        assert_eq!(checks.crates["remedy-api"], "services/api/src/lib.rs and 1 more changed");
        assert_eq!(checks.everything, None);
    }

    #[test]
    fn workspace_wide_files_affect_everything() {
        for file in ["Cargo.lock", "Cargo.toml", ".cargo/config.toml", "rust-toolchain.toml", "rustfmt.toml"] {
            let checks = decide(&[file, "services/gateway/src/lib.rs"]);
            assert_eq!(checks.crates.len(), 7, "{file}");
            assert_eq!(checks.everything.as_deref(), Some(format!("{file} changed").as_str()));
            assert!(checks.fmt.is_some(), "{file}");
        }
        assert_eq!(decide(&["services/gateway/Cargo.toml"]).everything, None, "a crate's own manifest");
    }

    #[test]
    fn fmt_runs_for_rust_and_cargo_files_only() {
        assert!(decide(&["xtask/src/main.rs"]).fmt.is_some());
        assert!(decide(&["services/gateway/Cargo.toml"]).fmt.is_some());
        let checks = decide(&["services/datastorage/migrations/0002.sql"]);
        assert_eq!(checks.fmt, None);
        assert_eq!(names(&checks.crates), ["datastorage"]);
    }

    #[test]
    fn docs_and_unowned_files_check_nothing() {
        assert!(["README.md", "docs/e2e.md", "services/gateway/README.md"].iter().all(|f| is_doc(f)));
        assert!(!is_doc("services/gateway/src/lib.rs"));
        let checks = decide(&["test/local-services.sh", "README.md"]);
        assert_eq!(checks.crates.len(), 0);
        assert!(checks.commands(true).is_empty());
        assert_eq!(checks.explain(false), ["nothing to check: no crate affected (test/local-services.sh)"]);
    }

    #[test]
    fn manifests_are_read_by_the_api_and_xtask_tests_without_their_dependents() {
        let checks = decide(&["test/manifests/gateway.yaml"]);
        assert_eq!(names(&checks.crates), ["remedy-api", "xtask"]);
        assert_eq!(checks.crates["xtask"], "test/manifests/gateway.yaml changed, read by its tests");
        assert_eq!(checks.services.keys().copied().collect::<Vec<_>>(), ["gateway"]);
    }

    #[test]
    fn services_for_e2e_are_those_deploying_what_changed() {
        let services = |files: &[&str]| decide(files).services.into_keys().collect::<Vec<_>>();
        let every = ["datastorage", "gateway", "remediationorchestrator", "signalprocessing", "workflowexecution"];
        assert_eq!(services(&["services/gateway/src/lib.rs"]), ["gateway"]);
        assert_eq!(
            services(&["services/signalprocessing/src/classify.rs"]),
            ["remediationorchestrator", "signalprocessing"]
        );
        // Every environment deploys datastorage, with PostgreSQL, and builds on remedy-api.
        assert_eq!(services(&["services/api/src/lib.rs"]), every);
        assert_eq!(services(&["services/datastorage/src/db.rs"]), every);
        assert_eq!(services(&["test/manifests/datastorage-migrate.yaml"]), every);
        assert_eq!(services(&["test/manifests/postgresql.yaml"]), every);
        assert_eq!(services(&["test/manifests/redis.yaml"]), ["gateway"]);
        assert_eq!(services(&["test/e2e/tests/signalprocessing.rs"]), ["signalprocessing"]);
        assert_eq!(services(&["test/e2e/src/lib.rs"]), every);
        assert!(services(&["xtask/src/main.rs", "services/gateway-old/x.rs"]).is_empty());
        assert_eq!(decide(&["test/manifests/redis.yaml"]).services["gateway"], "test/manifests/redis.yaml changed");
    }

    #[test]
    fn commands_for_the_affected_crates() {
        let commands = |checks: &Checks, e2e| -> Vec<String> {
            checks.commands(e2e).iter().map(|args| format!("cargo {}", args.join(" "))).collect()
        };
        let checks = decide(&["services/gateway/src/lib.rs"]);
        assert_eq!(
            commands(&checks, false),
            [
                "cargo fmt --all --check",
                "cargo clippy -p gateway -p leaf-user --all-targets --locked -- -D warnings",
                "cargo test -p gateway -p leaf-user --locked"
            ]
        );
        assert_eq!(commands(&checks, true).last().unwrap(), "cargo run --quiet --locked -p xtask -- e2e gateway");

        let checks = decide(&["test/e2e/tests/gateway.rs"]);
        assert_eq!(
            commands(&checks, false)[2],
            "cargo clippy --locked -p remedy-e2e --test gateway --test signalprocessing --test datastorage \
             --test remediationorchestrator --test workflowexecution -- -D warnings"
        );

        let checks = decide(&["Cargo.lock"]);
        assert_eq!(commands(&checks, false)[1], "cargo clippy --workspace --all-targets --locked -- -D warnings");
        assert_eq!(checks.explain(false)[1], "clippy, tests: the whole workspace (Cargo.lock changed)");
    }

    #[test]
    fn explains_what_runs_and_why() {
        let lines = decide(&["services/gateway/src/lib.rs"]).explain(false);
        assert_eq!(
            lines,
            [
                "fmt: services/gateway/src/lib.rs changed",
                "clippy, tests: gateway (services/gateway/src/lib.rs changed), leaf-user (depends on gateway)",
                "e2e: not run for gateway (opt in: REMEDY_PRE_PUSH_E2E=1 or `git config remedy.prePushE2e true`)",
            ]
        );
        let lines = decide(&["services/gateway/src/lib.rs"]).explain(true);
        assert_eq!(lines[2], "e2e: gateway (services/gateway/src/lib.rs changed)");
        let lines = decide(&["services/api/src/lib.rs"]).explain(false);
        assert!(
            lines[1]
                .starts_with("clippy, tests: remedy-api (services/api/src/lib.rs changed), datastorage (depends on")
        );
    }

    #[test]
    fn e2e_is_opt_in() {
        assert!(!e2e_opted_in(None, None));
        assert!(e2e_opted_in(Some("1"), None));
        assert!(e2e_opted_in(None, Some("true")));
        assert!(!e2e_opted_in(Some("0"), Some("true")), "the environment decides when set");
        assert!(!e2e_opted_in(None, Some("false")));
        assert!(e2e_opted_in(Some(""), Some("true")));
    }
}
