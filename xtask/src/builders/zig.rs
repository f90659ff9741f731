//! The zig builder: `cargo zigbuild` on this machine cross-compiles every binary for the nodes'
//! architecture against exactly the base image's glibc (`<arch>-unknown-linux-gnu.<glibc>`),
//! then thin images as the host builder makes them. Right on a Linux machine with a newer glibc
//! or another architecture, and on macOS, when the target's standard library is installed.

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::{BuildCx, Engine, ImageBuilder, Target, host};
use crate::phases::{Command, Task};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zig;

impl ImageBuilder for Zig {
    fn describe(&self, engine: Engine) -> String {
        format!(
            "zig (cargo zigbuild on this machine for the nodes' target and the base image's glibc, each binary \
             checked, then {} build onto the base image)",
            engine.program()
        )
    }

    fn preflight(&self, _engine: Engine, target: &Target) -> anyhow::Result<()> {
        let triple = target.arch.linux_gnu();
        if !tools::rust_std(&triple) {
            bail!("the Rust standard library for {triple} is not installed: rustup target add {triple}");
        }
        if !tools::zig_linker() {
            bail!("zig not found (cargo-zigbuild links with it): pip install ziglang, or install zig on PATH");
        }
        Ok(())
    }

    fn host_cargo(&self) -> Option<&'static str> {
        Some(host::BINARIES)
    }

    fn tasks(&self, bins: &[&str], cx: &BuildCx<'_>) -> Vec<Task> {
        let triple = cx.target.arch.linux_gnu();
        let pinned = format!("{triple}.{}", cx.target.glibc);
        let cargo = Command::new("cargo", ["zigbuild", "--locked", "--target", &pinned]).args(host::bin_args(bins));
        host::onto_base(bins, cx, "zig", &format!("target/{triple}/debug"), host::compile(cx, 90).run(cargo))
    }
}

/// What this machine has installed for building, asked without side effects.
pub mod tools {
    use xshell::{Shell, cmd};

    /// Whether rustc has the standard library for `triple`: its sysroot holds it (what
    /// `rustup target add` installs, and a distribution's rust-std package too).
    pub fn rust_std(triple: &str) -> bool {
        let Ok(sh) = Shell::new() else { return false };
        let Ok(sysroot) = cmd!(sh, "rustc --print sysroot").quiet().ignore_stderr().read() else { return false };
        std::path::Path::new(sysroot.trim()).join("lib/rustlib").join(triple).join("lib").is_dir()
    }

    /// Whether cargo-zigbuild and the zig it links with are installed.
    pub fn zigbuild() -> bool {
        which::which("cargo-zigbuild").is_ok() && zig_linker()
    }

    /// Whether zig is: on PATH, or Python's `ziglang` from PyPI, which cargo-zigbuild also uses.
    pub fn zig_linker() -> bool {
        if which::which("zig").is_ok() {
            return true;
        }
        let Ok(sh) = Shell::new() else { return false };
        ["python3", "python"].iter().any(|python| {
            which::which(python).is_ok()
                && cmd!(sh, "{python} -c 'import ziglang'").quiet().ignore_stdout().ignore_stderr().run().is_ok()
        })
    }
}
