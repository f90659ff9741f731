//! `cargo xtask e2e all`: the five environments and their specs, each in its own namespace of
//! one shared cluster, `--parallel` at a time, then one table across services.
//!
//! Each environment is a child `cargo xtask e2e <service>` run (its own report directory, log
//! and teardown), so a service's run is the same whether it runs alone or here. On Kind this
//! command creates the one cluster first, with every environment's port mappings (the port
//! table keeps them apart), hands it to the children as a reused cluster, and deletes it last.

use std::os::unix::process::CommandExt;
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use camino::{Utf8Path, Utf8PathBuf};
use clap::ValueEnum;
use rayon::prelude::*;
use rustix::process::{Pid, Signal, kill_process_group};
use tokio_util::sync::CancellationToken;

use super::{check_cluster_name, detect_engine, kind_config, preflight, run_id};
use crate::envs::{Delivery, Exposed, Service, Settings, Target};
use crate::flags::{self, ClusterMode, Engine};
use crate::phases::progress::human;
use crate::phases::run_command;

/// Longest environments first, so the last to start are the short ones.
const ORDER: [Service; 5] = [
    Service::Gateway,
    Service::Remediationorchestrator,
    Service::Datastorage,
    Service::Signalprocessing,
    Service::Workflowexecution,
];

/// One child run's outcome.
struct Outcome {
    service: Service,
    code: Option<i32>,
    report_dir: Utf8PathBuf,
    log: Utf8PathBuf,
}

pub fn run(flags: &flags::E2e) -> anyhow::Result<ExitCode> {
    let cwd = Utf8PathBuf::try_from(std::env::current_dir()?)?;
    let root = crate::project_root();
    std::env::set_current_dir(root)?;
    let run_id = run_id();
    let suffix = &run_id[run_id.len() - 6..];
    let dir = match &flags.report_dir {
        Some(dir) => cwd.join(dir),
        None => root.join(format!("target/e2e/all/{run_id}")),
    };
    let engine = flags.engine.or_else(detect_engine).unwrap_or(Engine::Docker);
    let shared = match flags.cluster {
        ClusterMode::Kind => {
            let default = if flags.reuse_cluster { "remedy-all".to_owned() } else { format!("remedy-all-{suffix}") };
            let name = flags.cluster_name.clone().unwrap_or(default);
            check_cluster_name(&name)?;
            Some(shared_cluster(&dir, engine, name, flags.reuse_cluster))
        }
        ClusterMode::Existing => None,
    };
    let children: Vec<(Service, Vec<String>)> = ORDER
        .iter()
        .map(|&service| Ok((service, child_args(flags, &cwd, service, &dir, engine, shared.as_ref())?)))
        .collect::<anyhow::Result<_>>()?;

    if flags.plan {
        let mut out = format!("all five environments, run {run_id}, {} at a time; report in {dir}\n", flags.parallel);
        if let Some(s) = &shared {
            let Target::Kind { name, .. } = &s.target else { unreachable!("a shared cluster is a Kind cluster") };
            out.push_str(&format!("shared cluster: {}\n", s.kind_create(name)));
        }
        for (_, args) in &children {
            out.push_str(&format!("    cargo xtask {}\n", args.join(" ")));
        }
        if let Some(s) = &shared {
            out.push_str(&format!("then: {}\n", s.teardown(flags.keep_cluster).join("; ")));
        }
        let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
        return Ok(ExitCode::SUCCESS);
    }

    let all_exposed: Vec<Exposed> = ORDER.iter().flat_map(|s| s.exposed()).collect();
    if let Some(s) = &shared {
        // Before anything is made: a missing tool or a busy port leaves nothing behind.
        preflight::check(s, &Service::Gateway.plan(s)?, &all_exposed)?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {dir}"))?;
    let running: Arc<Mutex<Vec<u32>>> = Arc::default();
    let cancel = forward_interrupts(running.clone());
    let started = Instant::now();
    if let Some(s) = &shared {
        let Target::Kind { name, .. } = &s.target else { unreachable!("a shared cluster is a Kind cluster") };
        let config = dir.join("kind-config.yaml");
        std::fs::write(&config, kind_config(name, &all_exposed)).with_context(|| format!("cannot write {config}"))?;
        let log = dir.join("cluster.log");
        let exists = run_command(&s.kind(&["get", "clusters"]), &log, &cancel).is_ok()
            && std::fs::read_to_string(&log).is_ok_and(|l| l.lines().any(|line| line == name));
        if !exists || !flags.reuse_cluster {
            eprintln!("creating the shared Kind cluster {name} ({log})");
            if let Err(err) = run_command(&s.kind_create(name), &log, &cancel) {
                let never = tokio_util::sync::CancellationToken::new();
                let _ = run_command(&s.kind_delete(name), &log, &never);
                return Err(err.context("cannot create the shared Kind cluster"));
            }
        }
    }

    // Resolved now: a rebuild during the run would leave `/proc/self/exe` pointing at a
    // deleted file.
    let exe = Utf8PathBuf::try_from(std::env::current_exe()?)?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(usize::from(flags.parallel)).build()?;
    let outcomes: Vec<Outcome> = pool.install(|| {
        children.par_iter().map(|(service, args)| run_child(&exe, *service, args, &dir, &running, &cancel)).collect()
    });

    let mut teardown = Vec::new();
    if let Some(s) = &shared {
        let Target::Kind { name, .. } = &s.target else { unreachable!() };
        let failed = outcomes.iter().any(|o| o.code != Some(0));
        let never = tokio_util::sync::CancellationToken::new();
        let log = dir.join("cluster.log");
        if failed {
            let _ = run_command(&s.kind_export_logs(name), &log, &never);
            teardown.push(format!("kind logs in {}", s.run_dir.join("kind-logs")));
        }
        if flags.keep_cluster || flags.reuse_cluster {
            teardown.push(format!("kept kind cluster {name}, kubeconfig {}", s.kubeconfig()));
        } else {
            run_command(&s.kind_delete(name), &log, &never).context("cannot delete the shared Kind cluster")?;
            let _ = std::fs::remove_file(s.kubeconfig());
            teardown.push(format!("deleted kind cluster {name}"));
        }
    }

    eprintln!("\nall environments ({} at a time) took {}", flags.parallel, human(started.elapsed()));
    // One table (and merged JUnit) of the runs that wrote a report; the others are listed as
    // missing, then with the last error in their log.
    let reported: Vec<Utf8PathBuf> =
        outcomes.iter().filter(|o| o.report_dir.join("report.json").is_file()).map(|o| o.report_dir.clone()).collect();
    let mut summary = crate::report_merge::summarize(&reported)?;
    summary.expect(&outcomes.iter().map(|o| o.service).collect::<Vec<_>>());
    eprint!("{}", summary.table());
    summary.write(&dir)?;
    eprintln!("  merged junit.xml, summary.md and summary.json in {dir}");
    for o in outcomes.iter().filter(|o| !o.report_dir.join("report.json").is_file()) {
        eprintln!("  {:<24} no report: {} (log {})", o.service.name(), last_error(&o.log), o.log);
    }
    for line in teardown {
        eprintln!("  {line}");
    }
    if cancel.is_cancelled() {
        return Ok(ExitCode::from(130));
    }
    let failed: Vec<&str> = outcomes.iter().filter(|o| o.code != Some(0)).map(|o| o.service.name()).collect();
    if !failed.is_empty() {
        bail!("e2e all: {} failed; see each one's log and report above", failed.join(", "));
    }
    if !flags.spec_args.is_empty() && summary.totals().total() == 0 {
        bail!(
            "e2e all: no spec of any suite matched `{}`: list a suite's with `cargo test -p remedy-e2e --test <service> -- --list`",
            flags.spec_args.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The settings of the one Kind cluster the children share.
fn shared_cluster(dir: &Utf8Path, engine: Engine, name: String, reuse: bool) -> Settings {
    Settings {
        run_id: String::new(),
        run_dir: dir.to_owned(),
        engine,
        target: Target::Kind { name, reuse },
        delivery: Delivery::KindLoad,
        namespace: String::new(),
        image_repo: String::new(),
        base_image: String::new(),
        manifests: Utf8PathBuf::new(),
        wait_timeout: Duration::ZERO,
        skip_unchanged_tests: false,
        spec_args: Vec::new(),
        builds_after_cluster: false,
    }
}

/// The child's command line: the same flags, the service's own report directory, and the
/// shared cluster as a reused one.
fn child_args(
    flags: &flags::E2e,
    cwd: &Utf8Path,
    service: Service,
    dir: &Utf8Path,
    engine: Engine,
    shared: Option<&Settings>,
) -> anyhow::Result<Vec<String>> {
    let mut args: Vec<String> = vec!["e2e".into(), service.name().into()];
    let mut push = |flag: &str, value: &str| args.extend([flag.to_owned(), value.to_owned()]);
    push("--report-dir", dir.join(service.name()).as_str());
    push("--strategy", flags.strategy.name());
    push("--engine", engine.program());
    push("--wait-timeout", &flags.wait_timeout.to_string());
    push("--keep-images", &flags.keep_images.0.map_or_else(|| "all".to_owned(), |n| n.to_string()));
    if let Some(jobs) = flags.jobs {
        push("--jobs", &jobs.to_string());
    }
    if let Some(manifests) = &flags.manifests {
        push("--manifests", cwd.join(manifests).as_str());
    }
    match shared {
        Some(s) => {
            let Target::Kind { name, .. } = &s.target else { unreachable!("a shared cluster is a Kind cluster") };
            push("--cluster", "kind");
            push("--cluster-name", name);
            args.push("--reuse-cluster".into());
        }
        None => {
            let kubeconfig = flags.kubeconfig.as_ref().expect("clap requires --kubeconfig with --cluster existing");
            push("--cluster", "existing");
            push("--kubeconfig", cwd.join(kubeconfig).as_str());
            let delivery = flags.image_delivery.to_possible_value().expect("no skipped variants");
            push("--image-delivery", delivery.get_name());
            if flags.reuse_cluster {
                args.push("--reuse-cluster".into());
            }
            if flags.keep_cluster {
                args.push("--keep-cluster".into());
            }
        }
    }
    if flags.skip_unchanged_tests {
        args.push("--skip-unchanged-tests".into());
    }
    if flags.builds_after_cluster {
        args.push("--builds-after-cluster".into());
    }
    if let Some(registry) = &flags.registry {
        if shared.is_some() {
            bail!("--registry needs --cluster existing: a Kind node reaches no registry on this host");
        }
        args.extend(["--registry".to_owned(), registry.clone()]);
    }
    if !flags.spec_args.is_empty() {
        args.push("--allow-no-specs".into());
        args.push("--".into());
        args.extend(flags.spec_args.iter().cloned());
    }
    Ok(args)
}

/// Runs one child in its own process group (so a Ctrl-C reaches it once, forwarded), its
/// output in `<dir>/<service>.log`.
fn run_child(
    exe: &Utf8Path,
    service: Service,
    args: &[String],
    dir: &Utf8Path,
    running: &Mutex<Vec<u32>>,
    cancel: &CancellationToken,
) -> Outcome {
    let log = dir.join(format!("{}.log", service.name()));
    let report_dir = dir.join(service.name());
    let started = Instant::now();
    if cancel.is_cancelled() {
        let _ = std::fs::write(&log, "not started: interrupted\n");
        return Outcome { service, code: None, report_dir, log };
    }
    eprintln!("{:<24} started, log {log}", service.name());
    let spawned = std::fs::File::create(&log).and_then(|file| {
        let err = file.try_clone()?;
        std::process::Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .process_group(0)
            .spawn()
    });
    let code = match spawned {
        Ok(mut child) => {
            running.lock().unwrap().push(child.id());
            let status = child.wait();
            running.lock().unwrap().retain(|&pid| pid != child.id());
            status.ok().and_then(|s| s.code())
        }
        Err(err) => {
            let _ = std::fs::write(&log, format!("cannot start the child run: {err}\n"));
            None
        }
    };
    let took = started.elapsed();
    let verdict = match code {
        Some(0) => "ok".to_owned(),
        Some(code) => format!("failed (exit {code}): {}", last_error(&log)),
        None => format!("did not finish: {}", last_error(&log)),
    };
    eprintln!("{:<24} {verdict} in {}", service.name(), human(took));
    Outcome { service, code, report_dir, log }
}

/// The child's `error: ...` line, or its last line.
fn last_error(log: &Utf8Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let line = text.lines().rev().find(|l| l.starts_with("error: ")).or_else(|| text.lines().last());
    line.unwrap_or("no output").trim_start_matches("error: ").to_owned()
}

/// Forwards each Ctrl-C to the running children (each tears down its own environment).
fn forward_interrupts(running: Arc<Mutex<Vec<u32>>>) -> CancellationToken {
    let cancel = CancellationToken::new();
    let flag = cancel.clone();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async {
            while tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: each environment stops and tears down (Ctrl-C again: at once)");
                flag.cancel();
                for &pid in running.lock().unwrap().iter() {
                    if let Some(pid) = Pid::from_raw(pid as i32) {
                        let _ = kill_process_group(pid, Signal::INT);
                    }
                }
            }
        });
    });
    cancel
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::flags::{Xtask, XtaskCmd};

    fn e2e(args: &[&str]) -> flags::E2e {
        let line = ["cargo xtask", "e2e"].iter().chain(args);
        match Xtask::try_parse_from(line).unwrap().subcommand {
            XtaskCmd::E2e(e2e) => e2e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_child_gets_the_flags_it_shares_and_the_spec_args_last() {
        let flags =
            e2e(&["all", "--cluster", "existing", "--kubeconfig", "k.yaml", "--", "dedup", "--skip", "restart"]);
        let args =
            child_args(&flags, "/work".into(), Service::Gateway, "/r".into(), Engine::Podman, None).unwrap().join(" ");
        assert!(args.starts_with("e2e gateway --report-dir /r/gateway --strategy dag --engine podman"), "{args}");
        assert!(args.contains("--cluster existing --kubeconfig /work/k.yaml --image-delivery auto"), "{args}");
        assert!(args.ends_with(" --allow-no-specs -- dedup --skip restart"), "{args}");
        assert!(args.contains(" --keep-images 3 "), "the default: {args}");
        let flags = e2e(&["all", "--cluster", "existing", "--kubeconfig", "k.yaml", "--keep-images", "all"]);
        let args = child_args(&flags, "/work".into(), Service::Gateway, "/r".into(), Engine::Podman, None).unwrap();
        assert!(!args.contains(&"--".to_owned()), "{args:?}");
        assert!(args.join(" ").contains(" --keep-images all "), "{args:?}");
    }
}
