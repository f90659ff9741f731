//! `cargo xtask hooks install|uninstall`: the git pre-push hook that runs `cargo xtask pre-push`.
//!
//! The hook goes where git looks for hooks (`git rev-parse --git-path hooks`: the common git
//! directory in a worktree, or `core.hooksPath`); nothing else is touched. A hook that is not
//! ours is never overwritten: `--force` keeps it as `pre-push.remedy-backup`, which our hook runs
//! first, and `uninstall` puts it back.

use std::os::unix::fs::PermissionsExt;

use anyhow::{Context, bail};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::{Shell, cmd};

use crate::flags;

/// The line that marks a hook as ours.
const MARKER: &str = "# remedy-xtask-pre-push-hook";

/// Where a chained foreign hook is kept, next to ours.
const BACKUP: &str = "pre-push.remedy-backup";

/// Git runs hooks in the root of the working tree. The backup and ours read the same input.
const SCRIPT: &str = r#"#!/bin/sh
# remedy-xtask-pre-push-hook: written by `cargo xtask hooks install`, removed by `cargo xtask hooks uninstall`.
# Runs pre-push.remedy-backup (the hook this one replaced) if there is one, then `cargo xtask pre-push`,
# each with git's arguments and the same input. `git push --no-verify` skips both.
input=$(cat)
feed() { if [ -n "$input" ]; then printf '%s\n' "$input"; fi; }
backup="$(dirname "$0")/pre-push.remedy-backup"
if [ -x "$backup" ]; then
    feed | "$backup" "$@" || exit $?
fi
feed | cargo xtask pre-push "$@"
"#;

impl flags::Hooks {
    pub fn run(self) -> anyhow::Result<()> {
        let sh = Shell::new()?;
        // From the top of the work tree, where git runs hooks and a relative core.hooksPath starts.
        let top = cmd!(sh, "git rev-parse --show-toplevel").read().context("`git rev-parse --show-toplevel` failed")?;
        sh.change_dir(&top);
        let dir =
            cmd!(sh, "git rev-parse --git-path hooks").read().context("`git rev-parse --git-path hooks` failed")?;
        let dir = Utf8PathBuf::from(top).join(dir);
        match self.subcommand {
            flags::HooksCmd::Install(flags) => install(&dir, flags.force),
            flags::HooksCmd::Uninstall(_) => uninstall(&dir),
        }
    }
}

/// What is at the hook's path now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    Nothing,
    Ours { current: bool },
    Foreign,
}

#[derive(Debug, PartialEq, Eq)]
enum Install {
    Write,
    AlreadyInstalled,
    Update,
    ChainThenWrite,
}

fn existing(hook: &Utf8Path) -> anyhow::Result<Existing> {
    match std::fs::read(hook) {
        Ok(bytes) => Ok(classify(&String::from_utf8_lossy(&bytes))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Existing::Nothing),
        Err(err) => Err(err).with_context(|| format!("cannot read {hook}")),
    }
}

fn classify(text: &str) -> Existing {
    if text.lines().any(|line| line.starts_with(MARKER)) {
        Existing::Ours { current: text == SCRIPT }
    } else {
        Existing::Foreign
    }
}

fn install_action(existing: Existing, force: bool, backup_exists: bool, hook: &Utf8Path) -> anyhow::Result<Install> {
    Ok(match existing {
        Existing::Nothing => Install::Write,
        Existing::Ours { current: true } => Install::AlreadyInstalled,
        Existing::Ours { current: false } => Install::Update,
        Existing::Foreign if !force => bail!(
            "{hook} exists and is not ours: rerun with --force to keep it as {BACKUP} and run it before ours, \
             or remove it"
        ),
        Existing::Foreign if backup_exists => {
            bail!("{hook} is not ours and {BACKUP} already exists: move one of them away, then rerun")
        }
        Existing::Foreign => Install::ChainThenWrite,
    })
}

fn install(dir: &Utf8Path, force: bool) -> anyhow::Result<()> {
    let hook = dir.join("pre-push");
    let backup = dir.join(BACKUP);
    let action = install_action(existing(&hook)?, force, backup.exists(), &hook)?;
    if action == Install::AlreadyInstalled {
        println!("pre-push hook already installed: {hook}");
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {dir}"))?;
    if action == Install::ChainThenWrite {
        std::fs::rename(&hook, &backup).with_context(|| format!("cannot move {hook} to {backup}"))?;
        println!("moved the existing pre-push hook to {backup}; ours runs it first");
    }
    std::fs::write(&hook, SCRIPT).with_context(|| format!("cannot write {hook}"))?;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {hook} executable"))?;
    let verb = if action == Install::Update { "updated" } else { "installed" };
    println!("{verb} pre-push hook: {hook} (runs `cargo xtask pre-push`; remove with `cargo xtask hooks uninstall`)");
    Ok(())
}

fn uninstall(dir: &Utf8Path) -> anyhow::Result<()> {
    let hook = dir.join("pre-push");
    let backup = dir.join(BACKUP);
    match existing(&hook)? {
        Existing::Foreign => bail!("{hook} is not ours: left as it is (delete it yourself if you mean to)"),
        Existing::Nothing if !backup.exists() => {
            println!("no pre-push hook installed: {hook}");
            return Ok(());
        }
        Existing::Nothing => {}
        Existing::Ours { .. } => {
            std::fs::remove_file(&hook).with_context(|| format!("cannot remove {hook}"))?;
            println!("removed pre-push hook: {hook}");
        }
    }
    if backup.exists() {
        std::fs::rename(&backup, &hook).with_context(|| format!("cannot move {backup} back to {hook}"))?;
        println!("restored the previous pre-push hook from {backup}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_our_hook_by_its_marker() {
        assert_eq!(classify(SCRIPT), Existing::Ours { current: true });
        let older = format!("#!/bin/sh\n{MARKER}: an older version\ncargo xtask pre-push\n");
        assert_eq!(classify(&older), Existing::Ours { current: false });
        assert_eq!(classify("#!/bin/sh\nexec lefthook run pre-push\n"), Existing::Foreign);
        assert_eq!(classify(&format!("#!/bin/sh\necho '{MARKER}'\n")), Existing::Foreign);
    }

    #[test]
    fn never_replaces_a_foreign_hook_without_force() {
        let hook = Utf8Path::new(".git/hooks/pre-push");
        let refused = install_action(Existing::Foreign, false, false, hook).unwrap_err().to_string();
        assert!(refused.contains("--force"), "{refused}");
        assert!(install_action(Existing::Foreign, true, true, hook).is_err(), "would overwrite the backup");
        assert_eq!(install_action(Existing::Foreign, true, false, hook).unwrap(), Install::ChainThenWrite);
    }

    #[test]
    fn installing_again_is_idempotent() {
        let hook = Utf8Path::new(".git/hooks/pre-push");
        assert_eq!(install_action(Existing::Nothing, false, false, hook).unwrap(), Install::Write);
        for force in [false, true] {
            assert_eq!(
                install_action(Existing::Ours { current: true }, force, true, hook).unwrap(),
                Install::AlreadyInstalled
            );
            assert_eq!(install_action(Existing::Ours { current: false }, force, false, hook).unwrap(), Install::Update);
        }
    }
}
