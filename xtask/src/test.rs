//! `cargo xtask test`: the whole test suite on this machine, as CI runs it: lints, every
//! crate's tests (those needing PostgreSQL, Redis or the local Kubernetes included), then each
//! service's E2E environment and specs on the local cluster.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use xshell::{Shell, cmd};

use crate::catalog::catalog;
use crate::flags;
use crate::phases::progress::human;

impl flags::Test {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let sh = Shell::new()?;
        sh.change_dir(crate::project_root());
        let mut steps: Vec<(String, anyhow::Result<()>, std::time::Duration)> = Vec::new();
        let mut step = |name: &str, f: &mut dyn FnMut() -> anyhow::Result<()>| {
            eprintln!("\n==> {name}");
            let started = Instant::now();
            let result = f();
            if let Err(err) = &result {
                eprintln!("==> {name} failed: {err:#}");
            }
            steps.push((name.to_owned(), result, started.elapsed()));
        };

        step("cargo fmt --check", &mut || Ok(cmd!(sh, "cargo fmt --all --check").run()?));
        step("cargo clippy", &mut || {
            cmd!(sh, "cargo clippy --workspace --all-targets --locked -- -D warnings").run()?;
            // The E2E suites are left out of `--all-targets` (they only run against an environment).
            let suites: Vec<String> =
                catalog().names().iter().flat_map(|s| ["--test".to_owned(), s.to_string()]).collect();
            Ok(cmd!(sh, "cargo clippy --locked --package remedy-e2e {suites...} -- -D warnings").run()?)
        });

        let services = Infra::up(&sh, "test/local-services.sh", self.keep_up)?;
        step("cargo test (with PostgreSQL and Redis; the cluster smoke test brings up its own)", &mut || {
            ensure_installed(&sh, &TEST_PROGRAMS)?;
            // A Debian trixie root, whose binaries the ELF check must refuse for bookworm.
            let trixie = cmd!(sh, "bash test/trixie-root.sh").read().context("`test/trixie-root.sh` failed")?;
            let args = ["--include-ignored", "--skip", "on_local_cluster"];
            Ok(cmd!(sh, "cargo test --workspace --locked -- {args...}")
                .envs(services.env.clone())
                .envs(parse_exports(&trixie))
                .run()?)
        });

        if !self.no_e2e {
            ensure_nextest(&sh)?;
            let cluster = Infra::up(&sh, "test/local-cluster/cluster.sh", self.keep_up)?;
            let kubeconfig = cluster.var("REMEDY_KUBECONFIG")?;
            for service in catalog().names() {
                step(&format!("e2e {service} on the local cluster"), &mut || {
                    // Through cargo: the tests above may have rebuilt this very binary.
                    let args = ["--cluster", "existing", "--kubeconfig", &kubeconfig];
                    Ok(cmd!(sh, "cargo run --quiet --locked --package xtask -- e2e {service} {args...}")
                        .envs(cluster.env.clone())
                        .run()?)
                });
            }
            step(
                "xtask on the local cluster: Kind through a shim, podman, a registry, the builders, failures",
                &mut || {
                    ensure_installed(&sh, &XTASK_TEST_PROGRAMS)?;
                    ensure_zigbuild(&sh)?;
                    // For `--builder container`: no official Rust image can be pulled here.
                    let builder = cmd!(sh, "bash test/builder-image.sh").envs(cluster.env.clone()).read()?;
                    let args = ["--include-ignored", "--test-threads", "1"];
                    Ok(cmd!(sh, "cargo test --locked --package xtask --test on_local_cluster -- {args...}")
                        .envs(cluster.env.clone())
                        .envs(parse_exports(&builder))
                        .run()?)
                },
            );
        }

        eprintln!("\ntest steps:");
        let failed = steps.iter().filter(|(_, r, _)| r.is_err()).count();
        for (name, result, took) in &steps {
            eprintln!("  {:<6} {name} ({})", if result.is_ok() { "ok" } else { "FAILED" }, human(*took));
        }
        println!("{} passed, {failed} failed", steps.len() - failed);
        Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    }
}

/// The programs the crates' tests run, from Debian's packages of the same names: chromium opens
/// a failed run's report.html (xtask/tests/report_in_browser.rs).
/// debootstrap makes the Debian trixie root of the ELF check's test.
const TEST_PROGRAMS: [&str; 2] = ["chromium", "debootstrap"];

/// The programs the xtask's own tests on the local cluster run besides docker, from Debian's
/// packages of the same names: podman and runc for the podman tests, docker-registry (the CNCF
/// distribution registry) for the registry tests.
const XTASK_TEST_PROGRAMS: [&str; 3] = ["podman", "runc", "docker-registry"];

/// Installs the Debian packages of `programs` that are not on PATH.
fn ensure_installed(sh: &Shell, programs: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = programs.iter().copied().filter(|p| which::which(p).is_err()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let install = || {
        let missing = &missing;
        cmd!(sh, "apt-get install -y -qq --no-install-recommends {missing...}").env("DEBIAN_FRONTEND", "noninteractive")
    };
    if install().run().is_err() {
        // A fresh machine may have no package lists yet.
        cmd!(sh, "apt-get update -qq").run().context("apt-get update failed")?;
        let names = missing.join(" ");
        install().run().with_context(|| format!("apt-get install {names} failed: install them"))?;
    }
    Ok(())
}

/// The E2E specs run under cargo-nextest: installed from crates.io when missing.
fn ensure_nextest(sh: &Shell) -> anyhow::Result<()> {
    if which::which("cargo-nextest").is_ok() {
        return Ok(());
    }
    cmd!(sh, "cargo install --locked cargo-nextest")
        .run()
        .context("`cargo install --locked cargo-nextest` failed: install cargo-nextest (https://nexte.st)")
}

/// `--builder zig` runs cargo-zigbuild and zig: installed from PyPI when missing.
fn ensure_zigbuild(sh: &Shell) -> anyhow::Result<()> {
    if crate::builders::zig::tools::zigbuild() {
        return Ok(());
    }
    cmd!(sh, "python3 -m pip install --quiet --disable-pip-version-check cargo-zigbuild ziglang")
        .run()
        .context("`pip install cargo-zigbuild ziglang` failed: install cargo-zigbuild and zig")?;
    if !crate::builders::zig::tools::zigbuild() {
        anyhow::bail!("pip installed cargo-zigbuild, but it is not on PATH: put pip's scripts directory on PATH");
    }
    Ok(())
}

/// A test dependency started by one of the scripts under test/ (`up`, `env`, `down`), stopped
/// again when dropped unless asked to keep it.
struct Infra<'a> {
    sh: &'a Shell,
    script: &'static str,
    keep: bool,
    env: Vec<(String, String)>,
}

impl<'a> Infra<'a> {
    fn up(sh: &'a Shell, script: &'static str, keep: bool) -> anyhow::Result<Infra<'a>> {
        eprintln!("\n==> {script} up");
        cmd!(sh, "bash {script} up").run().with_context(|| format!("`{script} up` failed"))?;
        let exports = cmd!(sh, "bash {script} env").read()?;
        Ok(Infra { sh, script, keep, env: parse_exports(&exports) })
    }

    fn var(&self, name: &str) -> anyhow::Result<String> {
        let found = self.env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        found.with_context(|| format!("`{} env` did not set {name}", self.script))
    }
}

impl Drop for Infra<'_> {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept running: {} (stop it with `{} down`)", self.script, self.script);
            return;
        }
        let script = self.script;
        if cmd!(self.sh, "bash {script} down").run().is_err() {
            eprintln!("warning: `{script} down` failed");
        }
    }
}

/// `export NAME=value` lines, as the scripts print them.
fn parse_exports(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|rest| rest.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches(['"', '\'']).to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_export_lines() {
        let env = super::parse_exports("export A=1\n# comment\nexport B='two words'\nexport C=\"x\"\n");
        let expected: Vec<(String, String)> =
            [("A", "1"), ("B", "two words"), ("C", "x")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(env, expected);
    }
}
