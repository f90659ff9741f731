//! Whether a built binary loads on the nodes: its ELF header says the machine it is for, its
//! version needs (`.gnu.version_r`) the oldest glibc it runs with, and `PT_INTERP` the loader it
//! asks for. Catching a mismatch here turns an image that dies with `exec format error` or
//! `GLIBC_2.41 not found` in the cluster into a failed build step that says the fix.

use std::fmt;

use anyhow::{anyhow, bail};
use camino::Utf8Path;
use object::Endianness;
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};

use super::platform::{Arch, Glibc};

/// What a binary needs of the system that loads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Needs {
    /// An ELF executable, which a Linux loads.
    Elf {
        arch: ElfArch,
        /// The highest `GLIBC_x.y` among its version needs; `None` when it needs none (static).
        glibc: Option<Glibc>,
        /// The loader it asks for (`PT_INTERP`); `None` when static.
        interpreter: Option<String>,
    },
    /// An executable of another system, which no Linux loads.
    NotElf(Foreign),
}

/// The machine an ELF is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElfArch {
    /// One a node runs (64-bit little-endian).
    Node(Arch),
    /// Another, named after its `e_machine` (and its class or byte order when those differ).
    Other(String),
}

impl fmt::Display for ElfArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfArch::Node(arch) => f.write_str(arch.rust()),
            ElfArch::Other(name) => f.write_str(name),
        }
    }
}

/// A non-Linux executable format, known by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Foreign {
    /// macOS (thin or universal).
    MachO,
    /// Windows.
    Pe,
}

impl fmt::Display for Foreign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Foreign::MachO => "Mach-O",
            Foreign::Pe => "Windows PE",
        })
    }
}

/// What the binary `bytes` needs. An error says what the bytes are instead (`an empty file`,
/// `an ELF relocatable object`, `a malformed ELF (...)`), for a message to go on.
pub fn needs(bytes: &[u8]) -> anyhow::Result<Needs> {
    match bytes {
        [0x7f, b'E', b'L', b'F', elf::ELFCLASS64, ..] => elf_needs::<elf::FileHeader64<Endianness>>(bytes),
        [0x7f, b'E', b'L', b'F', elf::ELFCLASS32, ..] => elf_needs::<elf::FileHeader32<Endianness>>(bytes),
        [0x7f, b'E', b'L', b'F', ..] => bail!("a malformed ELF (no class)"),
        [0xfe, 0xed, 0xfa, 0xce | 0xcf, ..]
        | [0xce | 0xcf, 0xfa, 0xed, 0xfe, ..]
        | [0xca, 0xfe, 0xba, 0xbe | 0xbf, ..] => Ok(Needs::NotElf(Foreign::MachO)),
        [b'M', b'Z', ..] => Ok(Needs::NotElf(Foreign::Pe)),
        [] => bail!("an empty file"),
        _ => {
            let start: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
            bail!("an unknown format (it starts with {})", start.join(" "))
        }
    }
}

fn elf_needs<Elf: FileHeader<Endian = Endianness>>(data: &[u8]) -> anyhow::Result<Needs> {
    let malformed = |err: object::Error| anyhow!("a malformed ELF ({err})");
    let header = Elf::parse(data).map_err(malformed)?;
    let endian = header.endian().map_err(malformed)?;
    match header.e_type(endian) {
        elf::ET_EXEC | elf::ET_DYN => {}
        elf::ET_REL => bail!("an ELF relocatable object"),
        elf::ET_CORE => bail!("an ELF core dump"),
        other => bail!("an ELF of type {other:#x}"),
    }
    let arch = elf_arch(header.e_machine(endian), header.is_class_64(), header.is_little_endian());

    let mut interpreter = None;
    let mut dynamic = false;
    for segment in header.program_headers(endian, data).map_err(malformed)? {
        if let Some(path) = segment.interpreter(endian, data).map_err(malformed)? {
            interpreter = Some(String::from_utf8_lossy(path).into_owned());
        }
        dynamic |= segment.p_type(endian) == elf::PT_DYNAMIC;
    }

    // The version needs are read through the section headers, and each name from the string
    // table its section links to: the `vna_hash` beside it is never trusted (nor needed).
    let sections = header.sections(endian, data).map_err(malformed)?;
    if sections.is_empty() && dynamic {
        bail!("a dynamically linked ELF without section headers, whose glibc needs cannot be read");
    }
    let mut glibc = None;
    if let Some((mut verneeds, link)) = sections.gnu_verneed(endian, data).map_err(malformed)? {
        let strings = sections.strings(endian, data, link).map_err(malformed)?;
        while let Some((_, mut vernauxs)) = verneeds.next().map_err(malformed)? {
            while let Some(vernaux) = vernauxs.next().map_err(malformed)? {
                // A weak need that the system lacks does not stop the loader.
                if vernaux.vna_flags.get(endian) & elf::VER_FLG_WEAK != 0 {
                    continue;
                }
                glibc = glibc.max(glibc_of(vernaux.name(endian, strings).map_err(malformed)?));
            }
        }
    }
    Ok(Needs::Elf { arch, glibc, interpreter })
}

/// The glibc a version need names: `GLIBC_2.34`, `GLIBC_2.2.5`, or `GLIBC_ABI_DT_RELR` (packed
/// relocations, since 2.36). `None` for other libraries' versions and `GLIBC_PRIVATE`.
fn glibc_of(name: &[u8]) -> Option<Glibc> {
    let version = std::str::from_utf8(name).ok()?.strip_prefix("GLIBC_")?;
    match version {
        "ABI_DT_RELR" => Some(Glibc::new(2, 36)),
        _ => Glibc::parse(version),
    }
}

fn elf_arch(machine: u16, wide: bool, little: bool) -> ElfArch {
    let name = match machine {
        elf::EM_X86_64 => "x86_64",
        elf::EM_AARCH64 => "aarch64",
        elf::EM_386 => "i386",
        elf::EM_ARM => "arm",
        elf::EM_RISCV => "riscv",
        elf::EM_PPC64 => "powerpc64",
        elf::EM_PPC => "powerpc",
        elf::EM_S390 => "s390x",
        elf::EM_MIPS => "mips",
        elf::EM_LOONGARCH => "loongarch",
        other => return ElfArch::Other(format!("e_machine {other}")),
    };
    match Arch::parse(name) {
        Some(arch) if wide && little => ElfArch::Node(arch),
        Some(_) => {
            let bits = if wide { 64 } else { 32 };
            let order = if little { "little" } else { "big" };
            ElfArch::Other(format!("{name} ({bits}-bit {order}-endian)"))
        }
        None => ElfArch::Other(name.to_owned()),
    }
}

/// Where glibc's loader is on `arch`, as every glibc binary for it names it.
fn glibc_loader(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "/lib64/ld-linux-x86-64.so.2",
        Arch::Arm64 => "/lib/ld-linux-aarch64.so.1",
    }
}

/// Fails, with a one-line cause and the fix, unless the binary at `path` is a Linux ELF
/// executable for `arch` whose glibc needs fit `glibc` (that of the base image `image`).
pub fn check(path: &Utf8Path, arch: Arch, glibc: Glibc, image: &str) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).map_err(|err| anyhow!("cannot read {path}: {err}"))?;
    verdict(path, &bytes, arch, glibc, image)
}

/// [`check`] of the bytes of `path`.
fn verdict(path: &Utf8Path, bytes: &[u8], arch: Arch, glibc: Glibc, image: &str) -> anyhow::Result<()> {
    let found = needs(bytes).map_err(|what| anyhow!("{path} is {what}, not a Linux executable: rebuild it"))?;
    let (machine, needed, interpreter) = match found {
        Needs::NotElf(foreign) => {
            bail!("{path} is a {foreign} binary, not a Linux one: build with --builder container or --builder zig")
        }
        Needs::Elf { arch, glibc, interpreter } => (arch, glibc, interpreter),
    };
    if machine != ElfArch::Node(arch) {
        bail!(
            "{path} is an ELF for {machine} but the nodes run {arch}: build with --builder zig or --builder container"
        );
    }
    match (&interpreter, needed) {
        (Some(loader), _) if loader != glibc_loader(arch) => bail!(
            "{path} asks for the loader {loader} but the glibc base image {image} has {}: build for {} with --builder zig or --builder container",
            glibc_loader(arch),
            arch.linux_gnu()
        ),
        (None, Some(_)) => {
            bail!("{path} is a shared library (it needs glibc but names no loader), not a Linux executable: rebuild it")
        }
        _ => {}
    }
    if let Some(needed) = needed.filter(|needed| *needed > glibc) {
        bail!(
            "{path} needs GLIBC_{needed} but the base image {image} has glibc {glibc}: build with --builder zig (cargo-zigbuild pins the glibc) or --builder container, or use a base image with glibc >= {needed} (REMEDY_IMAGE_BASE)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use camino::Utf8PathBuf;

    use super::*;

    const BOOKWORM: &str = "debian:bookworm-slim";

    fn message(result: anyhow::Result<()>) -> String {
        format!("{:#}", result.expect_err("the check passed"))
    }

    fn this_exe() -> (Utf8PathBuf, Vec<u8>) {
        let path = Utf8PathBuf::try_from(std::env::current_exe().unwrap()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        (path, bytes)
    }

    fn this_arch() -> Arch {
        Arch::parse(std::env::consts::ARCH).expect("the tests run on amd64 or arm64")
    }

    fn glibc_need(bytes: &[u8]) -> Glibc {
        match needs(bytes).unwrap() {
            Needs::Elf { glibc: Some(glibc), .. } => glibc,
            other => panic!("not a dynamic glibc ELF: {other:?}"),
        }
    }

    /// The test binary itself, linked against this machine's glibc (2.36 on Debian bookworm).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn this_test_binary_loads_here_only() {
        let (path, bytes) = this_exe();
        let arch = this_arch();
        let here = crate::builders::platform::Machine::this().glibc.unwrap();
        let Needs::Elf { arch: machine, glibc: Some(needed), interpreter } = needs(&bytes).unwrap() else {
            panic!("{path} is no dynamic glibc ELF");
        };
        assert_eq!(machine, ElfArch::Node(arch));
        assert!(Glibc::new(2, 2) <= needed && needed <= here, "{path} needs GLIBC_{needed} on glibc {here}");
        assert_eq!(interpreter.as_deref(), Some(glibc_loader(arch)));

        check(&path, arch, here, BOOKWORM).unwrap();
        let other = match arch {
            Arch::Amd64 => Arch::Arm64,
            Arch::Arm64 => Arch::Amd64,
        };
        assert_eq!(
            message(check(&path, other, here, BOOKWORM)),
            format!(
                "{path} is an ELF for {} but the nodes run {other}: build with --builder zig or --builder container",
                arch.rust()
            )
        );
        assert_eq!(
            message(check(&path, arch, Glibc::new(2, 2), "centos:1")),
            format!(
                "{path} needs GLIBC_{needed} but the base image centos:1 has glibc 2.2: build with --builder zig (cargo-zigbuild pins the glibc) or --builder container, or use a base image with glibc >= {needed} (REMEDY_IMAGE_BASE)"
            )
        );
        assert_eq!(
            message(check(Utf8Path::new("/nonexistent/gateway"), arch, here, BOOKWORM)).split(':').next(),
            Some("cannot read /nonexistent/gateway")
        );
    }

    /// A GLIBC_2.41 need without a trixie system: the test binary with every two-digit
    /// `GLIBC_2.xx` string rewritten in place to `GLIBC_2.41` (same length, so no offset moves).
    /// Writing an ELF with `object::write` would pull crates (crc32fast) the lock file lacks.
    /// The `vna_hash` of the rewritten needs goes stale, which `needs` never reads: it takes the
    /// names from the string table.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_newer_glibc_need_is_refused() {
        let (_, mut bytes) = this_exe();
        let mut rewritten = 0;
        let pattern = b"\0GLIBC_2.";
        for at in 0..bytes.len().saturating_sub(pattern.len() + 3) {
            let digits = &bytes[at + pattern.len()..at + pattern.len() + 3];
            if bytes[at..].starts_with(pattern) && digits[..2].iter().all(u8::is_ascii_digit) && digits[2] == 0 {
                bytes[at + pattern.len()..at + pattern.len() + 2].copy_from_slice(b"41");
                rewritten += 1;
            }
        }
        assert!(rewritten > 0, "the test binary names no GLIBC_2.xx");
        assert_eq!(glibc_need(&bytes), Glibc::new(2, 41));

        let path = Utf8Path::new("target/debug/gateway");
        assert_eq!(
            message(verdict(path, &bytes, this_arch(), Glibc::new(2, 36), BOOKWORM)),
            "target/debug/gateway needs GLIBC_2.41 but the base image debian:bookworm-slim has glibc 2.36: build with --builder zig (cargo-zigbuild pins the glibc) or --builder container, or use a base image with glibc >= 2.41 (REMEDY_IMAGE_BASE)"
        );
        verdict(path, &bytes, this_arch(), Glibc::new(2, 41), "debian:trixie-slim").unwrap();
    }

    /// The test binary with its `e_machine` (bytes 18-19, little-endian) rewritten.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn other_machines_are_named() {
        let (_, bytes) = this_exe();
        let with_machine = |machine: u16| {
            let mut bytes = bytes.clone();
            bytes[18..20].copy_from_slice(&machine.to_le_bytes());
            bytes
        };
        let path = Utf8Path::new("target/debug/gateway");
        let aarch64 = with_machine(elf::EM_AARCH64);
        assert!(matches!(needs(&aarch64).unwrap(), Needs::Elf { arch: ElfArch::Node(Arch::Arm64), .. }));
        assert_eq!(
            message(verdict(path, &aarch64, Arch::Amd64, Glibc::new(2, 36), BOOKWORM)),
            "target/debug/gateway is an ELF for aarch64 but the nodes run amd64: build with --builder zig or --builder container"
        );
        let riscv = with_machine(elf::EM_RISCV);
        assert!(matches!(needs(&riscv).unwrap(), Needs::Elf { arch: ElfArch::Other(name), .. } if name == "riscv"));
        assert_eq!(
            message(verdict(path, &riscv, Arch::Arm64, Glibc::new(2, 36), BOOKWORM)),
            "target/debug/gateway is an ELF for riscv but the nodes run arm64: build with --builder zig or --builder container"
        );
        assert_eq!(elf_arch(elf::EM_X86_64, false, true), ElfArch::Other("x86_64 (32-bit little-endian)".to_owned()));
        assert_eq!(elf_arch(0x1234, true, true), ElfArch::Other("e_machine 4660".to_owned()));
    }

    /// The test binary with its `PT_INTERP` rewritten in place to musl's loader.
    #[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
    #[test]
    fn another_loader_is_refused() {
        let (_, mut bytes) = this_exe();
        let glibc = b"/lib64/ld-linux-x86-64.so.2\0";
        let at = bytes.windows(glibc.len()).position(|w| w == glibc).expect("no glibc loader named");
        let musl = b"/lib/ld-musl-x86_64.so.1\0\0\0\0";
        bytes[at..at + musl.len()].copy_from_slice(musl);
        assert!(
            matches!(needs(&bytes).unwrap(), Needs::Elf { interpreter: Some(i), .. } if i == "/lib/ld-musl-x86_64.so.1")
        );
        assert_eq!(
            message(verdict(Utf8Path::new("gw"), &bytes, Arch::Amd64, Glibc::new(2, 36), BOOKWORM)),
            "gw asks for the loader /lib/ld-musl-x86_64.so.1 but the glibc base image debian:bookworm-slim has /lib64/ld-linux-x86-64.so.2: build for x86_64-unknown-linux-gnu with --builder zig or --builder container"
        );
    }

    #[test]
    fn macos_and_windows_binaries_are_not_elf() {
        // A 64-bit Mach-O as its magic appears on disk on arm64/x86_64 (0xfeedfacf little-endian),
        // the same big-endian, and a universal binary.
        for magic in [[0xcf, 0xfa, 0xed, 0xfe], [0xfe, 0xed, 0xfa, 0xcf], [0xca, 0xfe, 0xba, 0xbe]] {
            let bytes = [&magic[..], &[0x0c, 0, 0, 0x01, 0, 0, 0, 0]].concat();
            assert_eq!(needs(&bytes).unwrap(), Needs::NotElf(Foreign::MachO), "{magic:x?}");
        }
        let macho = [0xcf, 0xfa, 0xed, 0xfe, 0x0c, 0, 0, 0x01];
        assert_eq!(
            message(verdict(Utf8Path::new("target/debug/gateway"), &macho, Arch::Arm64, Glibc::new(2, 36), BOOKWORM)),
            "target/debug/gateway is a Mach-O binary, not a Linux one: build with --builder container or --builder zig"
        );
        let pe = b"MZ\x90\0\x03\0\0\0";
        assert_eq!(needs(pe).unwrap(), Needs::NotElf(Foreign::Pe));
        assert_eq!(
            message(verdict(Utf8Path::new("gateway.exe"), pe, Arch::Amd64, Glibc::new(2, 36), BOOKWORM)),
            "gateway.exe is a Windows PE binary, not a Linux one: build with --builder container or --builder zig"
        );
    }

    #[test]
    fn garbage_is_no_executable() {
        for (bytes, what) in [
            (&b""[..], "an empty file"),
            (b"#!/bin/sh\necho hi\n", "an unknown format (it starts with 23 21 2f 62)"),
            (b"\x7fELF\x02\x01\x01\0\0", "a malformed ELF (Invalid ELF header size or alignment)"),
            (b"\x7fELF\x07", "a malformed ELF (no class)"),
        ] {
            assert_eq!(needs(bytes).unwrap_err().to_string(), what);
            assert_eq!(
                message(verdict(Utf8Path::new("gw"), bytes, Arch::Amd64, Glibc::new(2, 36), BOOKWORM)),
                format!("gw is {what}, not a Linux executable: rebuild it")
            );
        }
        assert_eq!(glibc_of(b"GLIBC_2.2.5"), Some(Glibc::new(2, 2)));
        assert_eq!(glibc_of(b"GLIBC_ABI_DT_RELR"), Some(Glibc::new(2, 36)));
        assert_eq!(glibc_of(b"GLIBC_PRIVATE"), None);
        assert_eq!(glibc_of(b"GCC_3.0"), None);
    }

    /// Real Debian trixie (glibc 2.41) binaries: `chrt` (util-linux, in every minbase root)
    /// needs GLIBC_2.41 for `sched_setattr`/`sched_getattr`, `ls` GLIBC_2.38 for the C23
    /// `__isoc23_strtoumax` (found with `readelf -V` over the root's /usr/bin).
    #[test]
    #[ignore = "needs a Debian trixie root: eval \"$(test/trixie-root.sh)\""]
    fn refuses_a_trixie_binary() {
        let Ok(root) = std::env::var("REMEDY_TRIXIE_ROOT") else {
            panic!(
                "REMEDY_TRIXIE_ROOT is not set: make a Debian trixie root with `eval \"$(test/trixie-root.sh)\"` (as root, with debootstrap), then rerun"
            );
        };
        let root = Utf8PathBuf::from(root);
        assert!(root.join("usr/bin/ls").is_file(), "{root} is no trixie root: rerun test/trixie-root.sh");
        for (bin, needed) in [("usr/bin/chrt", Glibc::new(2, 41)), ("usr/bin/ls", Glibc::new(2, 38))] {
            let path = root.join(bin);
            assert_eq!(glibc_need(&std::fs::read(&path).unwrap()), needed, "{path}");
            assert_eq!(
                message(check(&path, this_arch(), Glibc::new(2, 36), BOOKWORM)),
                format!(
                    "{path} needs GLIBC_{needed} but the base image debian:bookworm-slim has glibc 2.36: build with --builder zig (cargo-zigbuild pins the glibc) or --builder container, or use a base image with glibc >= {needed} (REMEDY_IMAGE_BASE)"
                )
            );
            check(&path, this_arch(), Glibc::new(2, 41), "debian:trixie-slim").unwrap();
        }
    }
}
