//! Runs an external command in its own process group, its output appended to the task's log,
//! and kills the whole group when the run is cancelled.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use camino::Utf8Path;
use rustix::process::{Pid, Signal, kill_process_group};
use tokio_util::sync::CancellationToken;
use xshell::{Shell, cmd};

use super::plan::Command;
use super::scheduler::Cancelled;

/// How often a running child's watcher checks for cancellation.
const POLL: Duration = Duration::from_millis(10);

/// Runs `command` to completion; a non-zero exit is an error naming the command. When `cancel`
/// fires, the child's process group gets SIGKILL (SIGINT, then the wait goes on, for a command
/// that is to be interrupted) and the error is [`Cancelled`].
pub fn run_command(command: &Command, log: &Utf8Path, cancel: &CancellationToken) -> anyhow::Result<()> {
    if cancel.is_cancelled() {
        return Err(Cancelled.into());
    }
    let mut file =
        OpenOptions::new().create(true).append(true).open(log).with_context(|| format!("cannot open log {log}"))?;
    writeln!(file, "$ {command}")?;

    let sh = Shell::new()?;
    let (program, args) = (&command.program, &command.args);
    let mut child: std::process::Command = cmd!(sh, "{program} {args...}").into();
    child
        .envs(command.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .process_group(0);
    if command.interrupt {
        // A command to interrupt must see SIGINT: one started from a shell's background job
        // (`nohup ... &`, some CI runners) inherits it ignored, and a shell cannot trap a
        // signal ignored when it started.
        // SAFETY: between fork and exec only the async-signal-safe `signal` runs.
        unsafe {
            child.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
    }
    let mut child = child.spawn().with_context(|| format!("cannot start `{command}`"))?;
    let pgid = Pid::from_child(&child);

    // This thread waits, so the exit is seen at once; a watcher kills (or interrupts) the group
    // on cancellation, which ends the wait.
    let (exited, killed) = (AtomicBool::new(false), AtomicBool::new(false));
    let status = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            while !exited.load(Ordering::Acquire) {
                if cancel.is_cancelled() && !killed.swap(true, Ordering::AcqRel) {
                    if command.interrupt {
                        let _ = kill_process_group(pgid, Signal::INT);
                    } else {
                        // The group outlives its leader's exit only if children remain; kill both.
                        let _ = kill_process_group(pgid, Signal::KILL);
                        return;
                    }
                }
                std::thread::park_timeout(POLL);
            }
        });
        let status = child.wait();
        exited.store(true, Ordering::Release);
        watcher.thread().unpark();
        status
    })?;
    // Children the command left running in its group do not outlive the task.
    let _ = kill_process_group(pgid, Signal::KILL);
    if killed.load(Ordering::Acquire) {
        return Err(Cancelled.into());
    }
    if !status.success() {
        bail!("`{command}` failed: {status}");
    }
    Ok(())
}

/// Appends a line to a task's log.
pub fn log_line(log: &Utf8Path, line: &str) -> anyhow::Result<()> {
    let mut file =
        OpenOptions::new().create(true).append(true).open(log).with_context(|| format!("cannot open log {log}"))?;
    writeln!(file, "{line}")?;
    Ok(())
}
