//! Where the images run and where they are built: the nodes' architecture, the base image's
//! glibc, and what this machine is. Detection asks the engine, the cluster or the system;
//! everything that decides from the answers is a pure function.

use std::fmt;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use xshell::{Shell, cmd};

use super::Engine;

/// A CPU architecture a Kubernetes node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// From the names the OCI (`amd64`), uname and Rust (`x86_64`, `aarch64`) use.
    pub fn parse(name: &str) -> Option<Arch> {
        match name.trim().to_ascii_lowercase().as_str() {
            "amd64" | "x86_64" | "x86-64" | "x64" => Some(Arch::Amd64),
            "arm64" | "aarch64" | "arm64/v8" => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// The OCI name, as in `--platform linux/<oci>`.
    pub fn oci(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The first part of the Rust target triple.
    pub fn rust(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }

    /// `<arch>-unknown-linux-gnu`, the Rust target whose binaries a node runs.
    pub fn linux_gnu(self) -> String {
        format!("{}-unknown-linux-gnu", self.rust())
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.oci())
    }
}

/// A glibc version, as `GLIBC_2.36` in an ELF version need names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Glibc {
    pub major: u32,
    pub minor: u32,
}

impl Glibc {
    pub const fn new(major: u32, minor: u32) -> Glibc {
        Glibc { major, minor }
    }

    /// `2.36` (or `2.36.1`: the patch level does not change the ABI).
    pub fn parse(text: &str) -> Option<Glibc> {
        let mut parts = text.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Glibc { major, minor })
    }
}

impl fmt::Display for Glibc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The operating system this machine runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostOs {
    Linux,
    Macos,
    Other(String),
}

impl fmt::Display for HostOs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostOs::Linux => f.write_str("Linux"),
            HostOs::Macos => f.write_str("macOS"),
            HostOs::Other(name) => f.write_str(name),
        }
    }
}

/// What this machine is, as far as building Linux binaries goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub os: HostOs,
    /// `None` for an architecture no node runs.
    pub arch: Option<Arch>,
    /// The glibc a native `cargo build` links against; `None` off glibc (macOS, musl).
    pub glibc: Option<Glibc>,
}

impl Machine {
    /// This machine, as the xtask was built for and runs on.
    pub fn this() -> Machine {
        let os = match std::env::consts::OS {
            "linux" => HostOs::Linux,
            "macos" => HostOs::Macos,
            other => HostOs::Other(other.to_owned()),
        };
        Machine { os, arch: Arch::parse(std::env::consts::ARCH), glibc: running_glibc() }
    }

    /// `Linux on amd64 with glibc 2.36`.
    pub fn describe(&self) -> String {
        let arch = self.arch.map_or(std::env::consts::ARCH.to_owned(), |a| a.to_string());
        match self.glibc {
            Some(glibc) => format!("{} on {arch} with glibc {glibc}", self.os),
            None => format!("{} on {arch}", self.os),
        }
    }
}

/// The glibc this process runs with: what a native build links against.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn running_glibc() -> Option<Glibc> {
    // SAFETY: gnu_get_libc_version returns a pointer to a static NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
    Glibc::parse(version.to_str().ok()?)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn running_glibc() -> Option<Glibc> {
    None
}

/// The glibc of a base image known by its name (`debian:bookworm-slim`, `ubuntu:24.04`...).
pub fn glibc_by_name(image: &str) -> Option<Glibc> {
    const KNOWN: &[(&[&str], Glibc)] = &[
        (&["buster", "debian:10"], Glibc::new(2, 28)),
        (&["bullseye", "debian:11"], Glibc::new(2, 31)),
        (&["bookworm", "debian:12"], Glibc::new(2, 36)),
        (&["trixie", "debian:13"], Glibc::new(2, 41)),
        (&["focal", "ubuntu:20.04"], Glibc::new(2, 31)),
        (&["jammy", "ubuntu:22.04"], Glibc::new(2, 35)),
        (&["noble", "ubuntu:24.04"], Glibc::new(2, 39)),
    ];
    // The name after the last `/`: a registry's port or path says nothing of the image.
    let name = image.rsplit('/').next().unwrap_or(image).to_ascii_lowercase();
    let (repo, tag) = name.split_once(':').unwrap_or((&name, "latest"));
    KNOWN.iter().find_map(|(names, glibc)| {
        let known = names.iter().any(|n| match n.split_once(':') {
            Some((r, t)) => {
                repo == r && (tag == t || tag.starts_with(&format!("{t}-")) || tag.starts_with(&format!("{t}.")))
            }
            None => tag.split(['-', '.', '_']).any(|part| part == *n) || repo == *n,
        });
        known.then_some(*glibc)
    })
}

/// The glibc that `ldd --version` printed first: `ldd (Debian GLIBC 2.36-9+deb12u10) 2.36`.
pub fn glibc_from_ldd(output: &str) -> Option<Glibc> {
    let first = output.lines().next()?;
    Glibc::parse(first.rsplit(' ').next()?)
}

/// The architecture of the engine's server, where Kind's nodes run: `docker version` (Docker
/// Desktop's is its Linux VM's), `podman info` (podman machine's is the VM's).
pub fn engine_arch(engine: Engine) -> anyhow::Result<Arch> {
    let sh = Shell::new()?;
    let program = engine.program();
    if which::which(program).is_err() {
        bail!("{program} is not on PATH");
    }
    let out = match engine {
        Engine::Docker => {
            let format = "{{.Server.Os}}/{{.Server.Arch}}";
            cmd!(sh, "docker version --format {format}")
        }
        Engine::Podman => {
            let format = "{{.Host.OS}}/{{.Host.Arch}}";
            cmd!(sh, "podman info --format {format}")
        }
    };
    let out = out.quiet().ignore_stderr().read().with_context(|| format!("{program} does not say its platform"))?;
    linux_arch(&out).with_context(|| format!("the {program} server"))
}

/// The architecture of `os/arch` (`linux/arm64`), which must be Linux: nodes run Linux.
pub fn linux_arch(platform: &str) -> anyhow::Result<Arch> {
    let (os, arch) = platform.trim().split_once('/').unwrap_or(("linux", platform.trim()));
    if os != "linux" {
        bail!(
            "runs {os}/{arch}, and Kubernetes nodes for these services run Linux (switch the engine to Linux containers)"
        );
    }
    Arch::parse(arch)
        .with_context(|| format!("runs linux/{arch}, an architecture no image here is built for (amd64, arm64)"))
}

/// The base image's glibc: `REMEDY_BASE_GLIBC`, else known from its name, else what its `ldd`
/// says (the engine must have the image); and where that was learned.
pub fn base_glibc(engine: Engine, image: &str, arch: Arch) -> anyhow::Result<(Glibc, String)> {
    if let Ok(version) = std::env::var("REMEDY_BASE_GLIBC") {
        let glibc = Glibc::parse(&version)
            .with_context(|| format!("REMEDY_BASE_GLIBC={version} is no version: set it like 2.36"))?;
        return Ok((glibc, "REMEDY_BASE_GLIBC".to_owned()));
    }
    if let Some(glibc) = glibc_by_name(image) {
        return Ok((glibc, "known from its name".to_owned()));
    }
    let sh = Shell::new()?;
    let (program, platform) = (engine.program(), format!("linux/{arch}"));
    let ldd = cmd!(sh, "{program} run --rm --pull=never --platform {platform} --entrypoint ldd {image} --version")
        .quiet()
        .ignore_stderr()
        .read();
    match ldd.ok().as_deref().and_then(glibc_from_ldd) {
        Some(glibc) => Ok((glibc, "its ldd --version".to_owned())),
        None => bail!(
            "cannot tell the glibc of the base image {image} (not a known name, and `{program} run {image} ldd \
             --version` did not say): set REMEDY_BASE_GLIBC, for example REMEDY_BASE_GLIBC=2.36"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_have_every_name() {
        for name in ["amd64", "x86_64", "X86_64 "] {
            assert_eq!(Arch::parse(name), Some(Arch::Amd64), "{name}");
        }
        for name in ["arm64", "aarch64"] {
            assert_eq!(Arch::parse(name), Some(Arch::Arm64), "{name}");
        }
        assert_eq!(Arch::parse("s390x"), None);
        assert_eq!(Arch::Arm64.linux_gnu(), "aarch64-unknown-linux-gnu");
        assert_eq!(Arch::Amd64.to_string(), "amd64");
    }

    #[test]
    fn glibc_versions_order_by_number() {
        assert_eq!(Glibc::parse("2.36"), Some(Glibc::new(2, 36)));
        assert_eq!(Glibc::parse("2.41.9"), Some(Glibc::new(2, 41)));
        assert_eq!(Glibc::parse("2"), None);
        assert!(Glibc::new(2, 9) < Glibc::new(2, 36));
        assert_eq!(Glibc::new(2, 36).to_string(), "2.36");
    }

    #[test]
    fn nodes_run_linux_on_a_known_architecture() {
        assert_eq!(linux_arch("linux/arm64\n").unwrap(), Arch::Arm64);
        assert_eq!(linux_arch("linux/amd64").unwrap(), Arch::Amd64);
        let windows = linux_arch("windows/amd64").unwrap_err().to_string();
        assert!(windows.contains("run Linux"), "{windows}");
        assert!(linux_arch("linux/riscv64").is_err());
    }

    #[test]
    fn base_images_are_known_by_name() {
        for (image, glibc) in [
            ("debian:bookworm-slim", Some((2, 36))),
            ("localhost/remedy/debian:bookworm-slim", Some((2, 36))),
            ("docker.io/library/debian:12-slim", Some((2, 36))),
            ("debian:12.8", Some((2, 36))),
            ("debian:trixie", Some((2, 41))),
            ("gcr.io/distroless/cc-debian12:nonroot", None),
            ("ubuntu:24.04", Some((2, 39))),
            ("registry:5000/ubuntu:jammy-20240101", Some((2, 35))),
            ("alpine:3.20", None),
            ("debian:latest", None),
        ] {
            assert_eq!(glibc_by_name(image), glibc.map(|(a, b)| Glibc::new(a, b)), "{image}");
        }
    }

    #[test]
    fn ldd_says_its_glibc_on_its_first_line() {
        let debian = "ldd (Debian GLIBC 2.36-9+deb12u10) 2.36\nCopyright (C) 2022 Free Software Foundation, Inc.\n";
        assert_eq!(glibc_from_ldd(debian), Some(Glibc::new(2, 36)));
        assert_eq!(glibc_from_ldd("ldd (GNU libc) 2.41\n"), Some(Glibc::new(2, 41)));
        assert_eq!(glibc_from_ldd("musl libc (x86_64)\nVersion 1.2.5\n"), None);
    }

    #[test]
    fn this_machine_is_what_the_xtask_was_built_for() {
        let machine = Machine::this();
        assert_eq!(machine.arch, Arch::parse(std::env::consts::ARCH));
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert_eq!(machine.os, HostOs::Linux);
            assert!(machine.glibc.is_some_and(|g| g >= Glibc::new(2, 17)), "{machine:?}");
        }
    }
}
