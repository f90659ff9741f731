//! The plans and the bench on a machine with no container engine: PATH holds only cargo, rustc
//! and what the bench's shim runs (sleep), so neither docker nor podman (nor kind) can be found.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A PATH directory with links to cargo, rustc and sleep only.
fn bare_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-no-engine-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for program in ["cargo", "rustc", "sleep"] {
        let found = which::which(program).unwrap_or_else(|_| panic!("{program} is not on PATH"));
        std::os::unix::fs::symlink(found, dir.join(program)).unwrap();
    }
    dir
}

fn xtask(args: &[&str], path: &Path) -> (bool, String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_xtask")).args(args).current_dir(root).env("PATH", path).output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn the_plan_says_what_it_would_build_with_and_why() {
    let path = bare_path("plan");
    let (ok, stdout, stderr) = xtask(&["e2e", "gateway", "--plan"], &path);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("engine: docker (not found on PATH)"), "{stdout}");
    assert!(stdout.contains("platform: linux/"), "{stdout}");
    assert!(stdout.contains("(assumed this machine's, as docker is not on PATH)"), "{stdout}");
    assert!(stdout.contains("base image: debian:bookworm-slim, glibc 2.36 (known from its name)"), "{stdout}");
    let builder = stdout.lines().find(|l| l.starts_with("builder: ")).unwrap_or_default();
    if cfg!(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64")) {
        // This machine makes binaries an amd64 node runs only if its glibc is bookworm's or older.
        assert!(
            builder.starts_with("builder: host, because this machine is Linux on amd64")
                || builder.contains("newer than"),
            "{builder}"
        );
    }
    // Asked for, the container builder is planned with its builder image.
    let (ok, stdout, stderr) = xtask(&["e2e", "gateway", "--plan", "--builder", "container"], &path);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("--target export --output type=local,dest=target/container/linux-"), "{stdout}");
    assert!(stdout.contains("BUILDER_IMAGE=docker.io/library/rust:1-slim-bookworm"), "{stdout}");
    std::fs::remove_dir_all(&path).unwrap();
}

#[test]
fn the_bench_replays_the_plan_without_an_engine() {
    let path = bare_path("bench");
    let out = std::env::temp_dir().join(format!("xtask-no-engine-bench-out-{}", std::process::id()));
    let (ok, _, stderr) = xtask(&["bench", "--rounds", "1", "--scale", "0.05", "--out", out.to_str().unwrap()], &path);
    assert!(ok, "{stderr}");
    assert!(out.join("bench.json").is_file(), "{stderr}");
    std::fs::remove_dir_all(&path).unwrap();
    std::fs::remove_dir_all(&out).unwrap();
}
