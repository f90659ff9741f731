//! Checks made before any work starts: every tool the plan runs is on PATH, kind is recent
//! enough, the engine answers, the kubeconfig exists, the host ports are free, the registry
//! answers.

use std::collections::BTreeSet;
use std::net::TcpListener;

use anyhow::{Context, bail, format_err};
use xshell::{Shell, cmd};

use crate::envs::{Delivery, Exposed, Registry, Settings, Target};
use crate::flags::Engine;
use crate::phases::{Plan, Step};

/// The oldest kind release the E2E path supports: it has `load image-archive`, `--kubeconfig`
/// without touching ~/.kube/config, and a working podman provider.
pub const KIND_FLOOR: (u32, u32, u32) = (0, 20, 0);

pub fn check(settings: &Settings, plan: &Plan, exposed: &[Exposed]) -> anyhow::Result<()> {
    let programs: BTreeSet<&str> = plan
        .tasks()
        .iter()
        .flat_map(|t| &t.steps)
        .filter_map(|step| match step {
            Step::Run(cmd) | Step::SkipIf(cmd) => Some(cmd.program.as_str()),
            _ => None,
        })
        .collect();
    for program in &programs {
        which::which(program).map_err(|_| format_err!("`{program}` not found on PATH: {}", install_hint(program)))?;
    }
    let sh = Shell::new()?;
    let engine = settings.engine.program();
    let probe = match settings.engine {
        Engine::Docker => {
            let format = "{{.Server.Version}}";
            cmd!(sh, "docker version --format {format}")
        }
        Engine::Podman => {
            let format = "{{.Version.Version}}";
            cmd!(sh, "podman info --format {format}")
        }
    };
    probe.quiet().ignore_stdout().ignore_stderr().run().map_err(|_| {
        format_err!("{engine} is installed but its engine does not answer: start it (for docker: dockerd, or `systemctl start docker`)")
    })?;
    match &settings.target {
        Target::Kind { name, reuse } => {
            let env = settings.kind(&[]).env;
            let version = cmd!(sh, "kind version").envs(env.clone()).quiet().read().context("`kind version` failed")?;
            check_kind_version(&version)?;
            // A reused cluster that exists holds its ports itself.
            let exists = *reuse
                && cmd!(sh, "kind get clusters")
                    .envs(env)
                    .quiet()
                    .read()
                    .is_ok_and(|out| out.lines().any(|l| l == name));
            if !exists {
                for e in exposed {
                    port_free(e.host_port)?;
                }
            }
        }
        Target::Existing { kubeconfig } => {
            if !kubeconfig.is_file() {
                bail!("kubeconfig {kubeconfig} does not exist: pass the path of your cluster's kubeconfig");
            }
        }
    }
    if let Delivery::Registry(registry) = &settings.delivery {
        registry_answers(&sh, registry)?;
    }
    Ok(())
}

/// The registry answers its API's base URL: 200, or 401 when it wants credentials (the engine
/// has them).
fn registry_answers(sh: &Shell, registry: &Registry) -> anyhow::Result<()> {
    let url = registry.api();
    let status = "%{http_code}";
    let out = cmd!(sh, "curl --silent --show-error --output /dev/null --max-time 5 --write-out {status} {url}")
        .quiet()
        .ignore_status()
        .output()
        .context("cannot run curl")?;
    let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if code == "200" || code == "401" {
        return Ok(());
    }
    let why = match String::from_utf8_lossy(&out.stderr).trim() {
        "" => format!("HTTP {code}"),
        // `curl: (7) Failed to connect to ...`: the message without curl's exit code.
        err => {
            let line = err.lines().last().unwrap_or(err).trim_start_matches("curl: ");
            line.split_once(") ").filter(|(code, _)| code.starts_with('(')).map_or(line, |(_, msg)| msg).to_owned()
        }
    };
    let address = registry.address();
    bail!("registry {address} does not answer at {url} ({why}): start it, or pass the right --registry")
}

fn install_hint(program: &str) -> &'static str {
    match program {
        "kind" => "install kind >= 0.20 (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)",
        "docker" => "install Docker (Debian: apt-get install docker.io) or pass --engine podman",
        "podman" => "install podman (Debian: apt-get install podman) or pass --engine docker",
        "cargo" => "install Rust with rustup",
        "curl" => "install curl (Debian: apt-get install curl)",
        _ => "install it or put it on PATH",
    }
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
}
