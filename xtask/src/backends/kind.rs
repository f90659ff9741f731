//! The Kind backend: a cluster made with `kind` on this machine's engine, images loaded into
//! its node, ports mapped to 127.0.0.1 by the cluster's config.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::time::Duration;

use anyhow::{Context, bail, format_err};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};
use xshell::{Shell, cmd};

use super::{Backend, CLUSTER, Delivery, Leftover};
use crate::builders::{Arch, Engine, platform};
use crate::catalog::Exposed;
use crate::phases::{Command, Kind, KubeOp, Phase, Step, Task, When};

/// The oldest kind release the E2E path supports: it has `load image-archive`, `--kubeconfig`
/// without touching ~/.kube/config, and a working podman provider.
pub const KIND_FLOOR: (u32, u32, u32) = (0, 20, 0);

/// A Kind cluster of this name; its nodes run in this machine's engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCluster {
    pub name: String,
    pub lifecycle: Lifecycle,
    /// The run's private kubeconfig, written by kind.
    kubeconfig: Utf8PathBuf,
    /// The run's report directory: the config and kind's logs go there.
    run_dir: Utf8PathBuf,
}

/// Who makes the cluster and who deletes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// Made by this run; deleted at its end unless kept.
    Fresh { keep: bool },
    /// Made by this run unless it exists; kept for the next.
    Reused,
    /// Made and deleted by another run (`e2e all`); it must exist.
    Shared,
}

impl KindCluster {
    pub fn new(name: String, lifecycle: Lifecycle, run_dir: &Utf8Path) -> anyhow::Result<KindCluster> {
        check_name(&name)?;
        Ok(KindCluster { name, lifecycle, kubeconfig: run_dir.join("kubeconfig"), run_dir: run_dir.to_owned() })
    }

    /// A kind command with `KIND_EXPERIMENTAL_PROVIDER` set to the engine, so neither a value
    /// left in the shell nor kind's own detection (docker first) picks another provider.
    pub fn kind(engine: Engine, args: &[&str]) -> Command {
        Command::new("kind", args.iter().copied()).env("KIND_EXPERIMENTAL_PROVIDER", engine.program())
    }

    /// The node container kind makes for a one-node cluster.
    fn node(&self) -> String {
        format!("{}-control-plane", self.name)
    }

    /// A probe that succeeds when the cluster's node container exists, running or not.
    fn node_exists(&self, engine: Engine) -> Command {
        Command::new(engine.program(), ["container", "inspect", "--format", "{{.State.Status}}", &self.node()])
    }

    fn config_path(&self) -> Utf8PathBuf {
        self.run_dir.join("kind-config.yaml")
    }

    /// `kind create cluster` from the run's Kind config, into the private kubeconfig. With
    /// `--retain`: kind deletes the nodes of a failed create otherwise, and its logs with them.
    pub fn create(&self, engine: Engine) -> Command {
        let (config, kubeconfig) = (self.config_path(), &self.kubeconfig);
        let args = ["create", "cluster", "--name", &self.name, "--config", config.as_str()];
        let wait = ["--kubeconfig", kubeconfig.as_str(), "--retain", "--wait", "5m"];
        Self::kind(engine, &[&args[..], &wait].concat())
    }

    /// `kind export kubeconfig` into the private kubeconfig: succeeds only when the cluster exists.
    fn export_kubeconfig(&self, engine: Engine) -> Command {
        Self::kind(engine, &["export", "kubeconfig", "--name", &self.name, "--kubeconfig", self.kubeconfig.as_str()])
    }

    fn logs_dir(&self) -> Utf8PathBuf {
        self.run_dir.join("kind-logs")
    }

    /// `kind delete cluster`, with the private kubeconfig so the user's stays untouched.
    fn delete(&self, engine: Engine) -> Command {
        Self::kind(engine, &["delete", "cluster", "--name", &self.name, "--kubeconfig", self.kubeconfig.as_str()])
    }

    /// Whether kind lists a cluster of this name (it does with its node stopped, too).
    fn exists(&self, sh: &Shell, engine: Engine) -> bool {
        let env = Self::kind(engine, &[]).env;
        let clusters = cmd!(sh, "kind get clusters").envs(env).quiet().ignore_stderr().read();
        clusters.is_ok_and(|out| out.lines().any(|l| l == self.name))
    }

    /// The state of the node container (`running`, `exited`...), if there is one.
    fn node_state(&self, sh: &Shell, engine: Engine) -> Option<String> {
        let Command { program, args, .. } = self.node_exists(engine);
        cmd!(sh, "{program} {args...}").quiet().ignore_stderr().read().ok()
    }
}

/// A Kind config whose port mappings come from the port table.
pub fn config(name: &str, exposed: &[Exposed]) -> String {
    let mut out =
        format!("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nname: {name}\nnodes:\n- role: control-plane\n");
    if !exposed.is_empty() {
        out.push_str("  extraPortMappings:\n");
        for e in exposed {
            out.push_str(&format!(
                "  - containerPort: {}\n    hostPort: {}\n    listenAddress: 127.0.0.1\n    protocol: TCP\n",
                e.node_port, e.host_port
            ));
        }
    }
    out
}

impl Backend for KindCluster {
    fn describe(&self) -> String {
        let what = match self.lifecycle {
            Lifecycle::Fresh { keep: false } => "made for this run, deleted after it",
            Lifecycle::Fresh { keep: true } => "made for this run, kept after it",
            Lifecycle::Reused => "reused if it exists, kept after the run",
            Lifecycle::Shared => "shared: made and deleted by `e2e all`",
        };
        format!("kind `{}` ({what}), kubeconfig {}", self.name, self.kubeconfig)
    }

    fn describe_delivery(&self) -> String {
        "kind load image-archive, unless the node has the image".to_owned()
    }

    fn kubeconfig(&self) -> &Utf8Path {
        &self.kubeconfig
    }

    fn image_repo(&self) -> String {
        // Fully qualified, so docker, podman and the node's containerd agree on the name.
        "localhost/remedy".to_owned()
    }

    fn identity(&self) -> String {
        format!("kind {}", self.name)
    }

    fn history_key(&self) -> String {
        let lifecycle = match self.lifecycle {
            Lifecycle::Fresh { .. } => "fresh",
            Lifecycle::Reused => "reused",
            Lifecycle::Shared => "shared",
        };
        format!("kind-{lifecycle}")
    }

    fn node_arch(&self, engine: Engine) -> anyhow::Result<(Arch, String)> {
        // Kind's nodes are containers of the engine's server.
        Ok((platform::engine_arch(engine)?, format!("the {} server's, where Kind's nodes run", engine.program())))
    }

    fn cluster(&self, exposed: &[Exposed], engine: Engine) -> Task {
        let task = Task::new(CLUSTER, Phase::Cluster, Kind::Process);
        let config = Step::Write { path: self.config_path(), text: config(&self.name, exposed) };
        match self.lifecycle {
            Lifecycle::Fresh { .. } => task.estimate(150).step(config).run(self.create(engine)),
            // A node stopped by a reboot (podman sets no restart policy) is started again; then
            // exporting the kubeconfig, which reads it from the node, succeeds only when the
            // cluster exists.
            Lifecycle::Reused => task
                .estimate(150)
                .step(Step::Try(Command::new(engine.program(), ["start", &self.node()])))
                .skip_if(self.export_kubeconfig(engine))
                .step(config)
                .run(self.create(engine)),
            Lifecycle::Shared => task.estimate(1).run(self.export_kubeconfig(engine)),
        }
    }

    fn readiness(&self, timeout: Duration) -> Option<KubeOp> {
        // `kind create --wait` only warns when the control plane is not Ready in time.
        Some(KubeOp::ClusterReady { timeout })
    }

    fn delivered(&self, _image: &str) -> Option<Command> {
        None
    }

    fn deliver(&self, bin: &str, image: &str, engine: Engine, built: Option<&str>) -> Delivery {
        let archive = self.run_dir.join("images").join(format!("{bin}.tar"));
        let save = match engine {
            Engine::Docker => Command::new("docker", ["save", "--output", archive.as_str(), image]),
            Engine::Podman => {
                Command::new("podman", ["save", "--format", "docker-archive", "--output", archive.as_str(), image])
            }
        };
        // As `kind load docker-image` does: an image the node already has is not loaded again
        // (the tag is a content hash, so the same tag is the same image).
        let present = Command::new(engine.program(), ["exec", &self.node(), "crictl", "inspecti", image]);
        let id = format!("load-image-{bin}");
        let load = Task::new(&id, Phase::Images, Kind::Process).estimate(12);
        let load = match built {
            Some(built) => load.after(&[built, CLUSTER]),
            // A third-party image: loaded when the engine has it, else the node pulls it.
            None => load.after(&[CLUSTER]).only_if(engine.has(image)),
        };
        let load = load
            .skip_if(present)
            .run(save)
            .run(Self::kind(engine, &["load", "image-archive", archive.as_str(), "--name", &self.name]))
            .step(Step::Remove { path: archive });
        Delivery { tasks: vec![load], ready: Some(id) }
    }

    fn expose(&self, e: &Exposed) -> (Option<u16>, Option<String>) {
        (Some(e.node_port), Some(format!("http://127.0.0.1:{}", e.host_port)))
    }

    fn teardown(&self, run_dir: &Utf8Path, engine: Engine) -> Vec<Task> {
        if self.lifecycle == Lifecycle::Shared {
            // The cluster's own logs are the run that made it's to save.
            let dir = run_dir.join("diagnostics");
            return vec![Task::teardown("diagnostics", Kind::Api, When::Failed).kube(KubeOp::Diagnostics { dir })];
        }
        // Only a cluster whose node exists has logs, or is there to delete: a create that
        // failed before making one leaves nothing (and kind's delete says it deleted it anyway).
        let logs = self.logs_dir();
        let mut tasks = vec![
            Task::teardown("export-logs", Kind::Process, When::Failed)
                .done(format!("kind logs saved in {logs}"))
                .only_if(self.node_exists(engine))
                .run(Self::kind(engine, &["export", "logs", logs.as_str(), "--name", &self.name])),
        ];
        // Only a cluster this run made: preflight refused a name that existed.
        if self.lifecycle == (Lifecycle::Fresh { keep: false }) {
            tasks.push(
                Task::teardown("delete-cluster", Kind::Process, When::Always)
                    .after(&["export-logs"])
                    .estimate(5)
                    .done(format!("deleted kind cluster {}", self.name))
                    .only_if(self.node_exists(engine))
                    .run(self.delete(engine))
                    .step(Step::Remove { path: self.kubeconfig.clone() }),
            );
        }
        tasks
    }

    fn node_images(&self) -> Option<String> {
        matches!(self.lifecycle, Lifecycle::Fresh { keep: true } | Lifecycle::Reused).then(|| self.node())
    }

    fn kept(&self, engine: Engine, _namespace: &str) -> Option<String> {
        if matches!(self.lifecycle, Lifecycle::Fresh { keep: false } | Lifecycle::Shared) {
            return None;
        }
        let sh = Shell::new().ok()?;
        if self.node_state(&sh, engine).is_none() {
            return Some(format!("no kind cluster {} to keep: it was not made", self.name));
        }
        Some(if self.kubeconfig.is_file() {
            format!("kept kind cluster {}, kubeconfig {}", self.name, self.kubeconfig)
        } else {
            let args = ["export", "kubeconfig", "--name", &self.name, "--kubeconfig", self.kubeconfig.as_str()];
            let export = Self::kind(engine, &args);
            format!("kept kind cluster {}; no kubeconfig of it was written (`{export}` writes one)", self.name)
        })
    }

    fn leftovers(&self, engine: Engine, _namespace: &str, _run_id: &str) -> Vec<Leftover> {
        match self.lifecycle {
            Lifecycle::Fresh { keep: false } => vec![Leftover::KindCluster { name: self.name.clone(), engine }],
            _ => Vec::new(),
        }
    }

    fn preflight(&self, exposed: &[Exposed], engine: Engine) -> anyhow::Result<()> {
        let sh = Shell::new()?;
        let env = Self::kind(engine, &[]).env;
        let version = cmd!(sh, "kind version").envs(env).quiet().read().context("`kind version` failed")?;
        check_kind_version(&version)?;
        let exists = self.exists(&sh, engine);
        match self.lifecycle {
            // This run deletes only a cluster it made.
            Lifecycle::Fresh { .. } if exists => bail!(
                "a kind cluster named {} already exists: pass --reuse-cluster to use it (and keep it), or another \
                 --cluster-name",
                self.name
            ),
            Lifecycle::Shared if !exists => {
                bail!("the shared kind cluster {} does not exist: run `cargo xtask e2e all`", self.name)
            }
            Lifecycle::Reused if exists => {
                if let Some(state) = self.node_state(&sh, engine).filter(|s| s != "running") {
                    let (program, node) = (engine.program(), self.node());
                    eprintln!(
                        "kind cluster {}: its node is {state}; the run starts it (`{program} start {node}`)",
                        self.name
                    );
                }
            }
            _ => {}
        }
        if !exists {
            for e in exposed {
                port_free(e.host_port)?;
            }
        }
        Ok(())
    }
}

/// Kind names become container and host names: lowercase letters, digits and dashes.
fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 40
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if !valid {
        bail!("invalid --cluster-name `{name}`: use at most 40 lowercase letters, digits and dashes");
    }
    Ok(())
}

/// Parses `kind v0.23.0 go1.22.1 linux/amd64` and refuses versions below the floor.
pub fn check_kind_version(output: &str) -> anyhow::Result<()> {
    let version = output
        .split_whitespace()
        .find_map(|word| word.strip_prefix('v'))
        .ok_or_else(|| format_err!("cannot read the kind version from `{}`", output.trim()))?;
    let numbers: Vec<u32> = version.split(['.', '-']).take(3).map(|n| n.parse().unwrap_or(0)).collect();
    let found = (
        numbers.first().copied().unwrap_or(0),
        numbers.get(1).copied().unwrap_or(0),
        numbers.get(2).copied().unwrap_or(0),
    );
    if found < KIND_FLOOR {
        let (a, b, c) = KIND_FLOOR;
        bail!("kind v{version} is too old: install kind >= v{a}.{b}.{c}");
    }
    Ok(())
}

/// Fails naming the port and the process that holds it.
pub fn port_free(port: u16) -> anyhow::Result<()> {
    if TcpListener::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("0.0.0.0", port)).is_ok() {
        return Ok(());
    }
    let holder =
        port_holder(port).map_or_else(|| "another process".to_owned(), |(pid, name)| format!("{name} (pid {pid})"));
    bail!("host port {port} is in use by {holder}: stop it, or run this environment on an existing cluster")
}

/// The pid and command name of the process listening on a TCP port, from /proc.
fn port_holder(port: u16) -> Option<(u32, String)> {
    let mut inodes = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(local) = fields.get(1) else { continue };
            let listening = fields.get(3) == Some(&"0A");
            let local_port = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if listening && local_port == Some(port) {
                inodes.extend(fields.get(9).map(|i| format!("socket:[{i}]")));
            }
        }
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let target = std::fs::read_link(fd.path()).ok().map(|t| t.to_string_lossy().into_owned());
            if target.is_some_and(|t| inodes.contains(&t)) {
                let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                return Some((pid, name.trim().to_owned()));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_versions_below_the_floor_are_refused() {
        assert!(check_kind_version("kind v0.23.0 go1.22.1 linux/amd64").is_ok());
        assert!(check_kind_version("kind v0.20.0 go1.20.4 linux/amd64").is_ok());
        assert!(check_kind_version("kind v1.0.0-alpha go1.25 linux/amd64").is_ok());
        let err = check_kind_version("kind v0.17.0 go1.19.2 linux/amd64").unwrap_err();
        assert_eq!(err.to_string(), "kind v0.17.0 is too old: install kind >= v0.20.0");
        assert!(check_kind_version("garbage").is_err());
    }

    #[test]
    fn a_port_in_use_names_its_holder() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let err = port_free(port).unwrap_err().to_string();
        assert!(err.starts_with(&format!("host port {port} is in use by ")), "{err}");
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(listener);
        // Another process may hold the freed ephemeral port for a moment (seen once in a full
        // run of the unit tests); it is ours no longer.
        let freed = (0..20).any(|_| {
            port_free(port).is_ok() || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                false
            }
        });
        assert!(freed, "port {port} still in use after its listener was dropped");
    }

    #[test]
    fn cluster_names_become_container_names() {
        let make = |name: &str| KindCluster::new(name.into(), Lifecycle::Reused, "r".into());
        assert!(make("remedy-gateway-0a1b2c").is_ok());
        for bad in ["", "Upper", "-lead", "under_score", &"x".repeat(41)] {
            assert!(make(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_kind_config_maps_each_exposed_port_to_loopback() {
        let exposed = crate::catalog::catalog().get("gateway").unwrap().exposed();
        let text = config("c", &exposed);
        let expected = "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nname: c\nnodes:\n- role: control-plane\n  \
            extraPortMappings:\n  - containerPort: 30080\n    hostPort: 18080\n    listenAddress: 127.0.0.1\n    \
            protocol: TCP\n  - containerPort: 30081\n    hostPort: 18081\n    listenAddress: 127.0.0.1\n    protocol: TCP\n";
        assert_eq!(text, expected);
    }
}
