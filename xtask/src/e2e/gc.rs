//! What runs leave behind when they cannot tear down: SIGKILL, a closed laptop lid, a power
//! cut. Before a run makes what its teardown deletes (its Kind cluster, its namespaces), it
//! records them in a run file with its pid and its start time; the processes it starts carry
//! its run id in `REMEDY_RUN`. Every later run, and `cargo xtask e2e gc`, removes what belongs
//! to runs whose process is gone: never a live run's, never what a run kept.

use std::io::Read;

use anyhow::Context;
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use super::kube;
use crate::backends::{KindCluster, Leftover};
use crate::phases::run_command;

/// The environment variable that marks a run's processes with its run id.
pub const RUN_VAR: &str = "REMEDY_RUN";

/// A run as its file records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFile {
    pub run_id: String,
    pub pid: u32,
    /// When the process started, as the system tells it, so a reused pid is not taken for it.
    pub started: String,
    pub run_dir: Utf8PathBuf,
    pub leftovers: Vec<Leftover>,
}

/// Where run files are: `REMEDY_STATE_DIR`, else `$XDG_STATE_HOME/remedy/runs`, else
/// `~/.local/state/remedy/runs`. Shared by every checkout on the machine, as its clusters are.
pub fn state_dir() -> Utf8PathBuf {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let Some(dir) = var("REMEDY_STATE_DIR") {
        return dir.into();
    }
    let state = var("XDG_STATE_HOME")
        .map(Utf8PathBuf::from)
        .unwrap_or_else(|| Utf8PathBuf::from(var("HOME").unwrap_or_else(|| "/tmp".to_owned())).join(".local/state"));
    state.join("remedy/runs")
}

/// A registered run: its file is removed when the run has torn down.
pub struct Registration {
    path: Utf8PathBuf,
}

impl Registration {
    /// Records this process as the run `run_id`, and what it will make, before it makes it; marks
    /// the processes it starts from now on.
    pub fn new(run_id: &str, run_dir: &Utf8Path, leftovers: Vec<Leftover>) -> anyhow::Result<Registration> {
        let pid = std::process::id();
        let started = process_start(pid).context("cannot read this process's start time")?;
        let file = RunFile { run_id: run_id.to_owned(), pid, started, run_dir: run_dir.to_owned(), leftovers };
        let dir = state_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {dir}"))?;
        let path = dir.join(format!("{run_id}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&file)? + "\n")
            .with_context(|| format!("cannot write {path}"))?;
        // SAFETY: the run's threads only read the environment (their children inherit it).
        unsafe { std::env::set_var(RUN_VAR, run_id) };
        Ok(Registration { path })
    }

    /// The run tore down: nothing is left for a later run to remove.
    pub fn done(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes (or with `dry_run` only lists) what the runs whose process is gone left behind.
/// Returns a line per run, saying what was removed, or what could not be and why.
pub fn collect(dry_run: bool) -> Vec<String> {
    let dir = state_dir();
    let Ok(entries) = dir.read_dir_utf8() else { return Vec::new() };
    let mut lines = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path().to_owned();
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let run: RunFile = match serde_json::from_str(&text) {
            Ok(run) => run,
            Err(err) => {
                lines.push(format!("ignored {path}: not a run file ({err})"));
                continue;
            }
        };
        if !gone(process_start(run.pid).as_deref(), &run.started) {
            continue;
        }
        let (removed, failed) = remove(&run, dry_run);
        let what = if removed.is_empty() { "nothing".to_owned() } else { removed.join(", ") };
        let verb = if dry_run { "would remove" } else { "removed" };
        let mut line = format!("run {} (pid {} is gone) left {what}: {verb} it", run.run_id, run.pid);
        if !failed.is_empty() {
            line.push_str(&format!("; could not remove {} (run `cargo xtask e2e gc` again)", failed.join(", ")));
        } else if !dry_run {
            let _ = std::fs::remove_file(&path);
        }
        lines.push(line);
    }
    lines
}

/// Whether the run whose process started at `recorded` is gone, given the start time of the
/// process with its pid now, if there is one.
fn gone(now: Option<&str>, recorded: &str) -> bool {
    now != Some(recorded)
}

/// Removes what `run` left: its processes, the things its teardown would have deleted, its
/// image archives. Returns what it removed and what it could not.
fn remove(run: &RunFile, dry_run: bool) -> (Vec<String>, Vec<String>) {
    let (mut removed, mut failed) = (Vec::new(), Vec::new());
    let pids = marked_processes(&run.run_id);
    if !pids.is_empty() {
        if !dry_run {
            for &pid in &pids {
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        removed.push(format!("{} process(es)", pids.len()));
    }
    let log = run.run_dir.join("logs/gc.log");
    for leftover in &run.leftovers {
        let (what, result) = match leftover {
            Leftover::KindCluster { name, engine } => {
                let delete = KindCluster::kind(*engine, &["delete", "cluster", "--name", name]);
                (format!("kind cluster {name}"), if dry_run { Ok(()) } else { delete_with(&delete, &log) })
            }
            Leftover::Namespaces { kubeconfig, namespace, run_id } => {
                let what = format!("namespace {namespace} and what is labelled remedy.dev/run-id={run_id}");
                (what, if dry_run { Ok(()) } else { delete_namespaces(kubeconfig, namespace, run_id) })
            }
        };
        match result {
            Ok(()) => removed.push(what),
            Err(err) => failed.push(format!("{what} ({err:#})")),
        }
    }
    let archives: Vec<Utf8PathBuf> = run
        .run_dir
        .join("images")
        .read_dir_utf8()
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().to_owned())
        .filter(|path| path.extension() == Some("tar"))
        .collect();
    if !archives.is_empty() {
        if !dry_run {
            archives.iter().for_each(|archive| drop(std::fs::remove_file(archive)));
        }
        removed.push(format!("{} image archive(s) in {}", archives.len(), run.run_dir.join("images")));
    }
    (removed, failed)
}

fn delete_with(command: &crate::phases::Command, log: &Utf8Path) -> anyhow::Result<()> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    run_command(command, log, &tokio_util::sync::CancellationToken::new())
}

fn delete_namespaces(kubeconfig: &Utf8Path, namespace: &str, run_id: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = kube::client(kubeconfig).await?;
        kube::delete_cluster_objects(&client, run_id).await?;
        kube::delete_namespaces(&client, namespace, run_id, std::time::Duration::from_secs(120)).await?;
        Ok(())
    })
}

/// The processes marked with `REMEDY_RUN=<run_id>`, read from /proc (on a system without it,
/// none: the run's processes are not found).
fn marked_processes(run_id: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let me = std::process::id();
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            let mut environ = Vec::new();
            let read =
                std::fs::File::open(format!("/proc/{pid}/environ")).and_then(|mut f| f.read_to_end(&mut environ));
            read.is_ok() && marked(&environ, run_id)
        })
        .collect()
}

/// Whether a process environment (`NAME=value` entries, each ended by a NUL) holds
/// `REMEDY_RUN=<run_id>`.
fn marked(environ: &[u8], run_id: &str) -> bool {
    let wanted = format!("{RUN_VAR}={run_id}");
    environ.split(|&b| b == 0).any(|entry| entry == wanted.as_bytes())
}

/// When the process `pid` started, if it runs: the kernel's start time in clock ticks (from
/// /proc), or what `ps` says where there is no /proc.
fn process_start(pid: u32) -> Option<String> {
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // After the command name, which may hold spaces, in parentheses: field 22 is the start.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let zombie = fields.first() == Some(&"Z");
        return if zombie { None } else { fields.get(19).map(|s| s.to_string()) };
    }
    if std::path::Path::new("/proc/self").exists() {
        return None;
    }
    let pid = pid.to_string();
    let sh = xshell::Shell::new().ok()?;
    let out = xshell::cmd!(sh, "ps -o lstart= -p {pid}").quiet().ignore_stderr().read().ok()?;
    Some(out.trim().to_owned()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_gone_when_its_pid_runs_nothing_or_something_started_later() {
        assert!(!gone(Some("12345"), "12345"));
        assert!(gone(None, "12345"), "no process");
        assert!(gone(Some("99999"), "12345"), "the pid was reused");
        let me = process_start(std::process::id()).unwrap();
        assert!(!gone(process_start(std::process::id()).as_deref(), &me));
    }

    #[test]
    fn a_run_marks_its_processes() {
        assert!(marked(b"PATH=/bin\0REMEDY_RUN=20261201-120000-abcdef\0HOME=/root\0", "20261201-120000-abcdef"));
        assert!(!marked(b"REMEDY_RUN=20261201-120000-abcdef0\0", "20261201-120000-abcdef"));
        assert!(!marked(b"X_REMEDY_RUN=20261201-120000-abcdef\0", "20261201-120000-abcdef"));
        // A child of this test process, marked as a run's would be, is found.
        let mut child = std::process::Command::new("sleep").arg("30").env(RUN_VAR, "gc-test-run").spawn().unwrap();
        let found = marked_processes("gc-test-run");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found, [child.id()]);
    }

    #[test]
    fn run_files_are_read_back_and_only_dead_runs_are_collected() {
        let dir =
            Utf8PathBuf::from(std::env::temp_dir().to_str().unwrap()).join(format!("xtask-gc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("run/images")).unwrap();
        std::fs::write(dir.join("run/images/gateway.tar"), b"x").unwrap();
        let run = |pid: u32, started: &str| RunFile {
            run_id: format!("r{pid}"),
            pid,
            started: started.to_owned(),
            run_dir: dir.join("run"),
            leftovers: Vec::new(),
        };
        let live = run(std::process::id(), &process_start(std::process::id()).unwrap());
        let dead = run(std::process::id(), "0");
        let text = serde_json::to_string(&dead).unwrap();
        assert_eq!(serde_json::from_str::<RunFile>(&text).unwrap(), dead);
        assert!(!gone(process_start(live.pid).as_deref(), &live.started));
        assert!(gone(process_start(dead.pid).as_deref(), &dead.started));
        let (removed, failed) = remove(&dead, true);
        assert_eq!((removed.len(), failed.len()), (1, 0), "{removed:?}");
        assert!(dir.join("run/images/gateway.tar").exists(), "a dry run removed it");
        let (removed, _) = remove(&dead, false);
        assert!(removed[0].starts_with("1 image archive(s) in "), "{removed:?}");
        assert!(!dir.join("run/images/gateway.tar").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
