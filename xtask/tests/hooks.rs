//! `cargo xtask hooks` and `cargo xtask pre-push` on throwaway git repositories with a bare
//! remote, through real `git push`es. Git's configuration is the scratch directory's (HOME,
//! no system config), so neither this repository's hooks nor ~/.gitconfig are ever touched.
//! The hook calls `cargo xtask`; a stand-in `cargo` first on PATH sends that to the xtask under
//! test and anything else to the real cargo.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Scratch {
    dir: PathBuf,
    work: PathBuf,
}

impl Scratch {
    /// A repository with one commit, pushed to a bare `origin`.
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("xtask-hooks-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let cargo = format!(
            "#!/bin/sh\nif [ \"$1\" = xtask ]; then shift; exec '{}' \"$@\"; fi\nexec '{}' \"$@\"\n",
            env!("CARGO_BIN_EXE_xtask"),
            env!("CARGO"),
        );
        write_executable(&dir.join("bin/cargo"), &cargo);
        let scratch = Scratch { work: dir.join("work"), dir };
        scratch.git(&scratch.dir, &["init", "-q", "--bare", "-b", "main", "origin.git"]);
        scratch.git(&scratch.dir, &["init", "-q", "-b", "main", "work"]);
        scratch.git(&scratch.work, &["remote", "add", "origin", "../origin.git"]);
        scratch.commit("README.md", "# scratch\n");
        scratch.git(&scratch.work, &["push", "-q", "-u", "origin", "main"]);
        scratch
    }

    fn command(&self, program: &str, dir: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(dir).stdin(Stdio::null());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("GIT_") {
                cmd.env_remove(key);
            }
        }
        let path = format!("{}:{}", self.dir.join("bin").display(), std::env::var("PATH").unwrap_or_default());
        cmd.env("PATH", path)
            .env("HOME", &self.dir)
            .env("XDG_CONFIG_HOME", self.dir.join(".config"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "test")
            .env("GIT_AUTHOR_EMAIL", "test@example.com")
            .env("GIT_COMMITTER_NAME", "test")
            .env("GIT_COMMITTER_EMAIL", "test@example.com")
            .env("CARGO_TARGET_DIR", self.dir.join("target"))
            .env_remove("REMEDY_PRE_PUSH_E2E");
        cmd
    }

    /// Git in `dir`; panics unless it succeeds.
    fn git(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.command("git", dir).args(args).output().unwrap();
        assert!(out.status.success(), "git {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// `git push` in the work tree, whatever its outcome.
    fn push(&self, args: &[&str]) -> Output {
        self.command("git", &self.work).arg("push").args(args).output().unwrap()
    }

    fn xtask(&self, args: &[&str]) -> Output {
        self.command(env!("CARGO_BIN_EXE_xtask"), &self.work).args(args).output().unwrap()
    }

    fn xtask_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .command(env!("CARGO_BIN_EXE_xtask"), &self.work)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    fn commit(&self, file: &str, text: &str) -> String {
        let path = self.work.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        self.git(&self.work, &["add", "-A"]);
        self.git(&self.work, &["commit", "-q", "-m", file]);
        self.git(&self.work, &["rev-parse", "HEAD"])
    }

    fn hook(&self) -> PathBuf {
        self.work.join(".git/hooks/pre-push")
    }

    fn backup(&self) -> PathBuf {
        self.work.join(".git/hooks/pre-push.remedy-backup")
    }

    /// A hook of someone else's that records its arguments and input in `foreign.out`.
    fn foreign_hook(&self, exit: u8) -> String {
        let out = self.dir.join("foreign.out");
        let text =
            format!("#!/bin/sh\necho \"args: $*\" > '{}'\ncat >> '{}'\nexit {exit}\n", out.display(), out.display());
        write_executable(&self.hook(), &text);
        text
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn installs_into_a_repo_without_a_hook_and_again_idempotently() {
    let s = Scratch::new("install");
    let out = s.xtask(&["hooks", "install"]);
    assert_ok(&out);
    assert!(text(&out.stdout).contains(&format!("installed pre-push hook: {}", s.hook().display())), "{out:?}");
    let installed = std::fs::read_to_string(s.hook()).unwrap();
    assert!(installed.contains("cargo xtask pre-push \"$@\""));

    let again = s.xtask(&["hooks", "install"]);
    assert_ok(&again);
    assert!(text(&again.stdout).contains("already installed"), "{again:?}");
    assert_eq!(std::fs::read_to_string(s.hook()).unwrap(), installed);
    assert!(!s.backup().exists());
}

#[test]
fn refuses_to_overwrite_a_foreign_hook() {
    let s = Scratch::new("refuse");
    let foreign = s.foreign_hook(0);
    let out = s.xtask(&["hooks", "install"]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("is not ours") && stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read_to_string(s.hook()).unwrap(), foreign);
    assert!(!s.backup().exists());

    let out = s.xtask(&["hooks", "uninstall"]);
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(s.hook()).unwrap(), foreign, "uninstall deleted a foreign hook");
}

#[test]
fn force_chains_the_foreign_hook_and_uninstall_restores_it() {
    let s = Scratch::new("chain");
    let foreign = s.foreign_hook(0);
    let out = s.xtask(&["hooks", "install", "--force"]);
    assert_ok(&out);
    assert!(text(&out.stdout).contains("moved the existing pre-push hook to"), "{out:?}");
    assert_eq!(std::fs::read_to_string(s.backup()).unwrap(), foreign);

    let tip = s.commit("docs/notes.md", "notes\n");
    let out = s.push(&["origin", "main"]);
    assert_ok(&out);
    assert!(text(&out.stderr).contains("pre-push: nothing to check: only docs changed"), "{out:?}");
    let recorded = std::fs::read_to_string(s.dir.join("foreign.out")).unwrap();
    assert!(recorded.starts_with("args: origin ../origin.git\n"), "{recorded}");
    assert!(recorded.contains(&format!("refs/heads/main {tip} refs/heads/main ")), "{recorded}");

    let out = s.xtask(&["hooks", "uninstall"]);
    assert_ok(&out);
    assert!(text(&out.stdout).contains("restored the previous pre-push hook"), "{out:?}");
    assert_eq!(std::fs::read_to_string(s.hook()).unwrap(), foreign);
    assert!(!s.backup().exists());
}

#[test]
fn a_failing_chained_hook_aborts_the_push() {
    let s = Scratch::new("chain-fails");
    s.foreign_hook(1);
    assert_ok(&s.xtask(&["hooks", "install", "--force"]));
    s.commit("docs/notes.md", "notes\n");
    let out = s.push(&["origin", "main"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(!text(&out.stderr).contains("pre-push:"), "ours ran after the backup failed: {out:?}");
}

#[test]
fn docs_only_pushes_and_deletions_check_nothing() {
    let s = Scratch::new("docs");
    assert_ok(&s.xtask(&["hooks", "install"]));

    s.git(&s.work, &["checkout", "-q", "-b", "feature"]);
    s.commit("README.md", "# scratch, edited\n");
    s.commit("docs/guide.md", "guide\n");
    let out = s.push(&["origin", "feature"]);
    assert_ok(&out);
    assert!(text(&out.stderr).contains("pre-push: nothing to check: only docs changed"), "{out:?}");

    let out = s.push(&["origin", ":feature"]);
    assert_ok(&out);
    assert!(text(&out.stderr).contains("pre-push: nothing to check: no changed files"), "{out:?}");

    // The same lines given directly, with a deletion among them.
    let tip = s.git(&s.work, &["rev-parse", "HEAD"]);
    let zero = "0".repeat(40);
    let stdin = format!("(delete) {zero} refs/heads/gone {tip}\nrefs/heads/feature {tip} refs/heads/feature {zero}\n");
    let out = s.xtask_with_stdin(&["pre-push", "origin", "../origin.git"], &stdin);
    assert_ok(&out);
    assert_eq!(text(&out.stderr).trim(), "pre-push: nothing to check: only docs changed");

    let out =
        s.xtask_with_stdin(&["pre-push", "origin", "../origin.git"], &format!("(delete) {zero} refs/heads/x {tip}\n"));
    assert_ok(&out);
    assert_eq!(text(&out.stderr).trim(), "pre-push: nothing to check: no changed files");
}

/// The whole path on a one-crate workspace: the crate is linted and tested, and a failing test
/// stops the push with a line naming it and the bypass.
#[test]
fn a_failing_test_in_an_affected_crate_stops_the_push() {
    let s = Scratch::new("crate");
    s.commit("Cargo.toml", "[package]\nname = \"tiny\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[workspace]\n");
    s.commit("Cargo.lock", "version = 4\n\n[[package]]\nname = \"tiny\"\nversion = \"0.1.0\"\n");
    s.commit("src/lib.rs", "pub fn two() -> u32 {\n    2\n}\n");
    s.git(&s.work, &["push", "-q", "--no-verify", "origin", "main"]);
    assert_ok(&s.xtask(&["hooks", "install"]));

    s.commit("src/lib.rs", "pub fn two() -> u32 {\n    3\n}\n\n#[test]\nfn is_two() {\n    assert_eq!(two(), 2);\n}\n");
    let out = s.push(&["origin", "main"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("pre-push: fmt: src/lib.rs changed"), "{stderr}");
    assert!(stderr.contains("pre-push: clippy, tests: tiny (src/lib.rs changed)"), "{stderr}");
    assert!(
        stderr.contains("error: pre-push: `cargo test -p tiny --locked` failed; fix it, or push without the checks: git push --no-verify"),
        "{stderr}"
    );
    let remote_tip = s.git(&s.dir, &["--git-dir", "origin.git", "rev-parse", "main"]);
    assert_ne!(remote_tip, s.git(&s.work, &["rev-parse", "HEAD"]), "the push went through");
}

#[test]
fn installs_where_git_looks_for_hooks_from_a_subdirectory() {
    let s = Scratch::new("hooks-path");
    s.git(&s.work, &["config", "core.hooksPath", "shared-hooks"]);
    std::fs::write(s.work.join(".git/info/exclude"), "shared-hooks/\n").unwrap();
    let sub = s.work.join("a/b");
    std::fs::create_dir_all(&sub).unwrap();
    let out = s.command(env!("CARGO_BIN_EXE_xtask"), &sub).args(["hooks", "install"]).output().unwrap();
    assert_ok(&out);
    let hook = s.work.join("shared-hooks/pre-push");
    assert!(text(&out.stdout).contains(&format!("installed pre-push hook: {}", hook.display())), "{out:?}");
    assert!(hook.exists() && !s.hook().exists());

    s.commit("docs/notes.md", "notes\n");
    let out = s.push(&["origin", "main"]);
    assert_ok(&out);
    assert!(text(&out.stderr).contains("pre-push: nothing to check: only docs changed"), "{out:?}");
}
