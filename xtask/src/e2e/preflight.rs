//! Checks made before any work starts: every tool the plan runs is on PATH and the engine
//! answers; then the builder's own checks (the Rust target, zig, BuildKit) and the backend's
//! (kind's version and the host ports, the kubeconfig, the registry).

use std::collections::BTreeSet;

use anyhow::format_err;
use xshell::{Shell, cmd};

use crate::backends::Backend;
use crate::builders::{Build, Engine};
use crate::catalog::Exposed;
use crate::phases::{Command, Plan};

/// Before `plan` runs on `backend`, its images built with `engine` as `build` says; `exposed`
/// are the host ports it will use.
pub fn check(
    plan: &Plan,
    engine: Engine,
    build: &Build,
    backend: &dyn Backend,
    exposed: &[Exposed],
) -> anyhow::Result<()> {
    let programs: BTreeSet<&str> =
        plan.tasks().iter().flat_map(|t| &t.steps).filter_map(|step| step.command().map(needs)).collect();
    for program in &programs {
        which::which(program).map_err(|_| format_err!("`{program}` not found on PATH: {}", install_hint(program)))?;
    }
    engine_answers(engine)?;
    build.builder.get().preflight(engine, &build.target)?;
    backend.preflight(exposed, engine)
}

/// The program `cmd` needs on PATH: cargo's external subcommands (`cargo nextest`) are
/// programs of their own.
fn needs(cmd: &Command) -> &str {
    match (cmd.program.as_str(), cmd.args.first().map(String::as_str)) {
        ("cargo", Some("nextest")) => "cargo-nextest",
        ("cargo", Some("zigbuild")) => "cargo-zigbuild",
        (program, _) => program,
    }
}

fn engine_answers(engine: Engine) -> anyhow::Result<()> {
    let sh = Shell::new()?;
    let probe = match engine {
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
        let program = engine.program();
        format_err!("{program} is installed but its engine does not answer: start it (for docker: dockerd, or `systemctl start docker`)")
    })
}

fn install_hint(program: &str) -> &'static str {
    match program {
        "kind" => "install kind >= 0.20 (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)",
        "docker" => "install Docker (Debian: apt-get install docker.io) or pass --engine podman",
        "podman" => "install podman (Debian: apt-get install podman) or pass --engine docker",
        "cargo" => "install Rust with rustup",
        "cargo-nextest" => "cargo install cargo-nextest --locked (https://nexte.st)",
        "cargo-zigbuild" => {
            "pip install cargo-zigbuild ziglang (or cargo install --locked cargo-zigbuild, and zig on PATH)"
        }
        "curl" => "install curl (Debian: apt-get install curl)",
        _ => "install it or put it on PATH",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_subcommands_need_their_own_program() {
        assert_eq!(needs(&Command::new("cargo", ["nextest", "run"])), "cargo-nextest");
        assert_eq!(needs(&Command::new("cargo", ["build", "--locked"])), "cargo");
        assert_eq!(needs(&Command::new("cargo", ["zigbuild", "--target", "x"])), "cargo-zigbuild");
        assert_eq!(needs(&Command::new("kind", ["create", "cluster"])), "kind");
        assert!(install_hint("cargo-nextest").starts_with("cargo install cargo-nextest"));
    }
}
