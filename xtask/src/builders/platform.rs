//! Where the images run and where they are built: the nodes' architecture, the base image's
//! glibc, and what this machine is. Detection asks the engine, the cluster or the system;
//! everything that decides from the answers is a pure function.

use std::fmt;

use serde::{Deserialize, Serialize};

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
}
