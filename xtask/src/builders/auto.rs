//! Which builder serves a run: `--builder auto`'s choice, and whether an asked-for builder can
//! serve at all, as a pure function of what this machine is and has and what the images must
//! run on.

use anyhow::bail;

use super::platform::{HostOs, Machine};
use super::{Build, Builder, Container, Engine, Host, Learned, Target, Zig};

/// `--builder`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Requested {
    /// The fastest builder that makes binaries the nodes can run: host, else zig, else container.
    Auto,
    Host,
    Zig,
    Container,
}

/// What the choice depends on.
#[derive(Debug, Clone)]
pub struct Facts {
    pub machine: Machine,
    pub target: Target,
    /// Where the architecture was learned ("the docker server's") and the glibc ("known from its
    /// name").
    pub learned: Learned,
    pub engine: Engine,
    /// Whether the Rust standard library for the target's `<arch>-unknown-linux-gnu` is installed.
    pub rust_std: bool,
    /// Whether cargo-zigbuild and zig are installed.
    pub zigbuild: bool,
    /// The image the container builder compiles in.
    pub builder_image: String,
}

/// The builder for `requested`, and why; an error with the fix when an asked-for one cannot
/// serve.
pub fn decide(requested: Requested, facts: &Facts) -> anyhow::Result<Build> {
    let target = &facts.target;
    let platform = target.platform();
    let native = native(&facts.machine, target);
    let zig_reason = || format!("cargo-zigbuild cross-compiles for {}.{}", target.arch.linux_gnu(), target.glibc);
    let container = || Builder::Container(Container { image: facts.builder_image.clone() });
    let (builder, why) = match requested {
        Requested::Auto => match &native {
            Ok(fits) => (Builder::Host(Host), fits.clone()),
            Err(why_not) if facts.rust_std && facts.zigbuild => {
                (Builder::Zig(Zig), format!("{why_not}; {}", zig_reason()))
            }
            Err(why_not) => {
                let zig_cannot = if facts.rust_std {
                    "cargo-zigbuild or zig is not installed (pip install cargo-zigbuild ziglang)".to_owned()
                } else {
                    let triple = target.arch.linux_gnu();
                    format!("the Rust standard library for {triple} is not installed (rustup target add {triple})")
                };
                let how =
                    format!("compiling inside {} for {platform} from {}", facts.engine.program(), facts.builder_image);
                (container(), format!("{why_not}; zig cannot serve: {zig_cannot}; {how}"))
            }
        },
        Requested::Host => match &native {
            Ok(fits) => (Builder::Host(Host), format!("asked for; {fits}")),
            // Whether the binaries fit the base image's glibc is checked once they are built.
            Err(why_not) if facts.machine.os == HostOs::Linux && facts.machine.arch == Some(target.arch) => {
                (Builder::Host(Host), format!("asked for; {why_not}: each binary is checked after the build"))
            }
            Err(why_not) => {
                bail!("--builder host cannot build for {platform}: {why_not}; use --builder auto, zig or container")
            }
        },
        Requested::Zig => (Builder::Zig(Zig), format!("asked for; {}", zig_reason())),
        Requested::Container => (
            container(),
            format!(
                "asked for; compiling inside {} for {platform} from {}",
                facts.engine.program(),
                facts.builder_image
            ),
        ),
    };
    Ok(Build { builder, target: target.clone(), learned: facts.learned.clone(), why })
}

/// Whether a plain `cargo build` here makes binaries the target runs: what says so, or why not.
fn native(machine: &Machine, target: &Target) -> Result<String, String> {
    let this = machine.describe();
    match (&machine.os, machine.arch, machine.glibc) {
        (HostOs::Linux, Some(arch), Some(glibc)) if arch == target.arch && glibc <= target.glibc => {
            Ok(format!("this machine is {this}, which the base image's glibc {} runs", target.glibc))
        }
        (HostOs::Linux, Some(arch), Some(glibc)) if arch == target.arch => {
            Err(format!("this machine's glibc {glibc} is newer than the base image's {}", target.glibc))
        }
        (HostOs::Linux, Some(arch), None) if arch == target.arch => {
            Err(format!("this machine ({this}) has no glibc to link against"))
        }
        (HostOs::Linux, _, _) => Err(format!("this machine is {this}, the nodes run {}", target.arch)),
        (HostOs::Macos, _, _) => Err(format!("this machine is {this}, where cargo build makes Mach-O binaries")),
        (HostOs::Other(_), _, _) => Err(format!("this machine is {this}, not Linux")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::{Arch, Glibc};

    const BOOKWORM: Glibc = Glibc::new(2, 36);

    fn facts(os: HostOs, arch: Arch, glibc: Option<(u32, u32)>, node: Arch, rust_std: bool, zigbuild: bool) -> Facts {
        Facts {
            machine: Machine { os, arch: Some(arch), glibc: glibc.map(|(a, b)| Glibc::new(a, b)) },
            target: Target { arch: node, glibc: BOOKWORM },
            learned: Learned { arch: "the engine's".into(), glibc: "known from its name".into() },
            engine: Engine::Docker,
            rust_std,
            zigbuild,
            builder_image: "rust:1-slim-bookworm".into(),
        }
    }

    fn auto(facts: &Facts) -> (&'static str, String) {
        let build = decide(Requested::Auto, facts).unwrap();
        (build.builder.name(), build.why)
    }

    #[test]
    fn a_linux_machine_like_the_nodes_builds_on_the_host() {
        let (builder, why) = auto(&facts(HostOs::Linux, Arch::Amd64, Some((2, 36)), Arch::Amd64, true, true));
        assert_eq!(builder, "host");
        assert!(why.contains("Linux on amd64 with glibc 2.36"), "{why}");
        // An older glibc than the image's fits too.
        assert_eq!(auto(&facts(HostOs::Linux, Arch::Amd64, Some((2, 31)), Arch::Amd64, false, false)).0, "host");
        assert_eq!(auto(&facts(HostOs::Linux, Arch::Arm64, Some((2, 36)), Arch::Arm64, false, false)).0, "host");
    }

    #[test]
    fn a_newer_glibc_or_another_architecture_cross_compiles_with_zig_when_it_can() {
        // A Debian trixie or Fedora laptop, the nodes on bookworm.
        let (builder, why) = auto(&facts(HostOs::Linux, Arch::Amd64, Some((2, 41)), Arch::Amd64, true, true));
        assert_eq!(builder, "zig");
        assert!(why.contains("glibc 2.41 is newer than the base image's 2.36"), "{why}");
        assert!(why.contains("x86_64-unknown-linux-gnu.2.36"), "{why}");
        // An amd64 machine and arm64 nodes, with the arm64 standard library installed.
        let (builder, why) = auto(&facts(HostOs::Linux, Arch::Amd64, Some((2, 36)), Arch::Arm64, true, true));
        assert_eq!(builder, "zig");
        assert!(why.contains("aarch64-unknown-linux-gnu.2.36"), "{why}");
        // Without the standard library, or without zig, the container builder serves and says
        // what would let zig.
        let (builder, why) = auto(&facts(HostOs::Linux, Arch::Amd64, Some((2, 36)), Arch::Arm64, false, true));
        assert_eq!(builder, "container");
        assert!(why.contains("rustup target add aarch64-unknown-linux-gnu"), "{why}");
        let (builder, why) = auto(&facts(HostOs::Linux, Arch::Amd64, Some((2, 41)), Arch::Amd64, true, false));
        assert_eq!(builder, "container");
        assert!(why.contains("pip install cargo-zigbuild ziglang"), "{why}");
    }

    #[test]
    fn macos_on_arm64_compiles_in_the_engine_unless_zig_is_set_up() {
        // podman machine and Docker Desktop both run linux/arm64 nodes on Apple silicon.
        for engine in [Engine::Podman, Engine::Docker] {
            let mut mac = facts(HostOs::Macos, Arch::Arm64, None, Arch::Arm64, false, false);
            mac.engine = engine;
            let (builder, why) = auto(&mac);
            assert_eq!(builder, "container");
            assert!(why.contains("Mach-O"), "{why}");
            assert!(why.contains(&format!("inside {} for linux/arm64", engine.program())), "{why}");
            // A user who installed the target and cargo-zigbuild gets the native cross-compile.
            mac.rust_std = true;
            mac.zigbuild = true;
            assert_eq!(auto(&mac).0, "zig");
        }
        // An Intel Mac.
        assert_eq!(auto(&facts(HostOs::Macos, Arch::Amd64, None, Arch::Amd64, false, true)).0, "container");
    }

    #[test]
    fn the_host_builder_is_refused_where_it_cannot_make_a_linux_binary_for_the_nodes() {
        let mac = facts(HostOs::Macos, Arch::Arm64, None, Arch::Arm64, true, true);
        let err = decide(Requested::Host, &mac).unwrap_err().to_string();
        assert!(
            err.starts_with("--builder host cannot build for linux/arm64: this machine is macOS on arm64"),
            "{err}"
        );
        assert!(err.contains("use --builder auto"), "{err}");
        let other_arch = facts(HostOs::Linux, Arch::Amd64, Some((2, 36)), Arch::Arm64, true, true);
        assert!(decide(Requested::Host, &other_arch).is_err());
        // A newer glibc may still give binaries that fit: the check after the build says.
        let trixie = facts(HostOs::Linux, Arch::Amd64, Some((2, 41)), Arch::Amd64, false, false);
        let build = decide(Requested::Host, &trixie).unwrap();
        assert_eq!(build.builder.name(), "host");
        assert!(build.why.contains("checked after the build"), "{}", build.why);
    }

    #[test]
    fn an_asked_for_builder_is_used_and_the_reason_names_the_platform() {
        let linux = facts(HostOs::Linux, Arch::Amd64, Some((2, 36)), Arch::Amd64, false, false);
        let zig = decide(Requested::Zig, &linux).unwrap();
        assert_eq!(zig.builder, Builder::Zig(Zig));
        let container = decide(Requested::Container, &linux).unwrap();
        assert_eq!(container.builder, Builder::Container(Container { image: "rust:1-slim-bookworm".into() }));
        assert_eq!(container.why, "asked for; compiling inside docker for linux/amd64 from rust:1-slim-bookworm");
        assert_eq!(container.learned.arch, "the engine's");
    }
}
