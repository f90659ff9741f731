//! The real executor: external commands for build and process tasks, kube-rs for API tasks.
//! Run variables (`${TAG_GATEWAY}`, `${NAMESPACE}`...) are filled in as steps need them.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail, format_err};
use camino::{Utf8Path, Utf8PathBuf};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::{kube, prune};
use crate::builders::{Arch, Glibc, elf};
use crate::phases::{Cancelled, Command, Executor, KubeOp, Outcome, Step, Task, TaskCx, log_line, run_command};

/// How long CRDs get to become Established.
const CRD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an exposed port gets to answer through the node (kube-proxy syncs about once a
/// second; Kind's port mapping is immediate).
const EXPOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// The cluster and namespace the run's API work is done in.
#[derive(Debug, Clone)]
pub struct Target {
    pub kubeconfig: Utf8PathBuf,
    pub namespace: String,
    pub run_id: String,
}

pub struct RealExecutor {
    target: Target,
    vars: Mutex<HashMap<String, String>>,
    client: OnceCell<::kube::Client>,
}

impl RealExecutor {
    pub fn new(target: Target) -> RealExecutor {
        RealExecutor { target, vars: Mutex::default(), client: OnceCell::new() }
    }

    /// The run variables set so far.
    pub fn vars(&self) -> HashMap<String, String> {
        self.vars.lock().unwrap().clone()
    }

    async fn client(&self) -> anyhow::Result<&::kube::Client> {
        self.client.get_or_try_init(|| kube::client(&self.target.kubeconfig)).await
    }

    /// Replaces each `${NAME}` with its run variable; an unknown name is an error naming it.
    pub fn expand(&self, text: &str) -> anyhow::Result<String> {
        let vars = self.vars.lock().unwrap();
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').ok_or_else(|| format_err!("unterminated `${{` in `{text}`"))? + start;
            let name = &rest[start + 2..end];
            let value = vars.get(name).ok_or_else(|| format_err!("unknown placeholder ${{{name}}}"))?;
            out.push_str(value);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn expand_command(&self, cmd: &Command) -> anyhow::Result<Command> {
        let mut out = cmd.clone();
        out.program = self.expand(&cmd.program)?;
        for arg in &mut out.args {
            *arg = self.expand(arg)?;
        }
        for (_, value) in &mut out.env {
            *value = self.expand(value)?;
        }
        Ok(out)
    }

    /// Whether `probe` succeeds; only cancellation is an error.
    fn probe(&self, probe: &Command, cx: &TaskCx) -> anyhow::Result<bool> {
        match run_command(&self.expand_command(probe)?, &cx.log, &cx.cancel) {
            Ok(()) => Ok(true),
            Err(err) if err.is::<Cancelled>() => Err(err),
            Err(_) => Ok(false),
        }
    }

    fn set(&self, var: &str, value: String) {
        self.vars.lock().unwrap().insert(var.to_owned(), value);
    }

    async fn kube_op(&self, op: &KubeOp, cx: &TaskCx) -> anyhow::Result<()> {
        let log = &cx.log;
        let client = self.client().await?;
        let Target { namespace: ns, run_id, .. } = &self.target;
        match op {
            KubeOp::ServerVersion => {
                let version = kube::server_version(client).await?;
                log_line(log, &format!("API server {version}"))?;
            }
            KubeOp::ClusterReady { timeout } => {
                let ready = kube::cluster_ready(client, *timeout).await?;
                log_line(log, &format!("cluster ready: {ready}"))?;
            }
            KubeOp::Namespace => {
                kube::namespace(client, ns, run_id).await?;
                log_line(log, &format!("namespace {ns} ready"))?;
            }
            KubeOp::Secret { name, literal, random } => {
                let data = literal.iter().cloned().collect();
                kube::secret(client, ns, name, data, random, || random_hex(16)).await?;
                log_line(log, &format!("Secret {name} ready"))?;
            }
            KubeOp::Apply { manifest, .. } => {
                let raw =
                    std::fs::read_to_string(manifest).with_context(|| format!("cannot read manifest {manifest}"))?;
                let text = self.expand(&raw).with_context(|| format!("in manifest {manifest}"))?;
                let objects = kube::parse(manifest, &text)?;
                for line in kube::apply(client, ns, run_id, objects).await? {
                    log_line(log, &line)?;
                }
            }
            KubeOp::CrdsEstablished { names } => kube::crds_established(client, names, CRD_TIMEOUT).await?,
            KubeOp::Rollout { workload, name, timeout } => {
                kube::rollout(client, ns, *workload, name, *timeout).await?;
                log_line(log, &format!("{}/{name} rolled out", workload.name()))?;
            }
            KubeOp::JobComplete { job, timeout } => {
                kube::job_complete(client, ns, job, *timeout).await?;
                log_line(log, &format!("job/{job} complete"))?;
            }
            KubeOp::DeleteJob { job, timeout } => {
                if kube::delete_job(client, ns, job, *timeout).await? {
                    log_line(log, &format!("job/{job} deleted"))?;
                }
            }
            KubeOp::Expose { service, port, node_port, url, var } => {
                let allocated = kube::expose(client, ns, service, port, *node_port).await?;
                let url = match url {
                    Some(url) => url.clone(),
                    None => kube::node_url(client, allocated).await?,
                };
                answers_http(&url, EXPOSE_TIMEOUT).await?;
                log_line(log, &format!("{var}={url}"))?;
                self.set(var, url);
            }
            KubeOp::Diagnostics { dir } => {
                kube::save_diagnostics(client, ns, dir).await?;
                cx.note(format!("diagnostics saved in {dir}"));
            }
            KubeOp::DeleteNamespaces { timeout } => {
                let objects = kube::delete_cluster_objects(client, run_id).await?;
                let deleted = kube::delete_namespaces(client, ns, run_id, *timeout).await?;
                let and = match objects.len() {
                    0 => String::new(),
                    n => format!(" and {n} cluster-wide object(s) ({})", objects.join(", ")),
                };
                cx.note(format!("deleted namespaces {}{and}", deleted.join(", ")));
            }
        }
        Ok(())
    }
}

impl Executor for RealExecutor {
    fn run_blocking(&self, task: &Task, cx: &TaskCx) -> anyhow::Result<Outcome> {
        for step in &task.steps {
            match step {
                Step::Run(cmd) => run_command(&self.expand_command(cmd)?, &cx.log, &cx.cancel)?,
                Step::Set { var, value } => self.set(var, self.expand(value)?),
                Step::Tag { var, files, strings } => {
                    let strings = strings.iter().map(|s| self.expand(s)).collect::<anyhow::Result<Vec<_>>>()?;
                    let tag = content_hash(files, &strings)?;
                    log_line(&cx.log, &format!("{var} = {tag}"))?;
                    self.set(var, tag);
                }
                Step::SkipIf(probe) => {
                    if self.probe(probe, cx)? {
                        log_line(&cx.log, "already there: nothing to do")?;
                        return Ok(Outcome::Cached);
                    }
                }
                Step::OnlyIf(probe) => {
                    if !self.probe(probe, cx)? {
                        log_line(&cx.log, "not there: nothing to do")?;
                        cx.note(format!("{}: nothing to do", task.id));
                        return Ok(Outcome::Cached);
                    }
                }
                Step::Try(cmd) => {
                    self.probe(cmd, cx)?;
                }
                Step::SkipIfStamped { stamp, value } => {
                    let value = self.expand(value)?;
                    if std::fs::read_to_string(stamp).is_ok_and(|held| held.trim() == value) {
                        log_line(&cx.log, &format!("unchanged since it last succeeded ({stamp}): nothing to do"))?;
                        return Ok(Outcome::Cached);
                    }
                }
                Step::Stamp { stamp, value } => write_file(stamp, &self.expand(value)?)?,
                Step::Write { path, text } => {
                    write_file(path, &self.expand(text)?)?;
                    log_line(&cx.log, &format!("wrote {path}"))?;
                }
                Step::Remove { path } => match std::fs::remove_file(path) {
                    Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                        return Err(err).with_context(|| format!("cannot remove {path}"));
                    }
                    _ => {}
                },
                Step::Copy { from, to } => {
                    if let Some(dir) = to.parent() {
                        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {dir}"))?;
                    }
                    std::fs::copy(from, to).with_context(|| format!("cannot copy {from} to {to}"))?;
                }
                Step::Loadable { binaries, arch, glibc, image } => {
                    let arch = Arch::parse(arch).with_context(|| format!("unknown architecture {arch}"))?;
                    let glibc = Glibc::parse(glibc).with_context(|| format!("malformed glibc version {glibc}"))?;
                    for binary in binaries {
                        elf::check(binary, arch, glibc, image)?;
                    }
                    log_line(&cx.log, &format!("{} binaries load with glibc {glibc} on {arch}", binaries.len()))?;
                }
                Step::Prune { program, images, keep, node } => {
                    let images = images.iter().map(|i| self.expand(i)).collect::<anyhow::Result<Vec<_>>>()?;
                    // Housekeeping: an engine that cannot list its images does not fail the run.
                    cx.note(match prune::prune(program, &images, *keep) {
                        Ok(removed) if removed.is_empty() => {
                            format!("no image to prune (keeping the newest {keep} per repository)")
                        }
                        Ok(removed) => {
                            log_line(&cx.log, &format!("removed {}", removed.join(", ")))?;
                            let from_node = match node {
                                Some(node) => {
                                    let gone = prune::from_node(program, node, &removed);
                                    format!(", {gone} of them from node {node} too")
                                }
                                None => String::new(),
                            };
                            format!(
                                "pruned {} older image(s){from_node}, keeping the newest {keep} per repository",
                                removed.len()
                            )
                        }
                        Err(err) => format!("could not prune old images: {err:#}"),
                    });
                }
                Step::Kube(op) => bail!("{}: Kubernetes step `{op}` in a {} task", task.id, task.kind.name()),
            }
        }
        Ok(Outcome::Done)
    }

    async fn run_async(&self, task: &Task, cx: &TaskCx) -> anyhow::Result<Outcome> {
        for step in &task.steps {
            match step {
                Step::Kube(op) => self.kube_op(op, cx).await?,
                Step::Set { var, value } => self.set(var, self.expand(value)?),
                other => bail!("{}: step `{other}` does not belong in an API task", task.id),
            }
        }
        Ok(Outcome::Done)
    }
}

/// Writes `text` to `path`, its directory created.
fn write_file(path: &Utf8Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {dir}"))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {path}"))
}

/// Waits until `url` (`http://host:port`) answers an HTTP request with any status: the whole
/// path from the host to a pod works. A bare TCP connect is not enough: proxies in between
/// accept before the backend does.
async fn answers_http(url: &str, timeout: Duration) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address =
        url.strip_prefix("http://").ok_or_else(|| format_err!("not an http URL: {url}"))?.trim_end_matches('/');
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let attempt = async {
            let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
            stream.write_all(format!("GET / HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes()).await.ok()?;
            let mut head = [0u8; 5];
            stream.read_exact(&mut head).await.ok()?;
            (&head == b"HTTP/").then_some(())
        };
        if tokio::time::timeout(Duration::from_secs(2), attempt).await.ok().flatten().is_some() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("{url} does not answer after {}s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A 16-hex-digit SHA-256 over the files' bytes (a directory: each file under it, with its
/// path, in order) and the strings, each length-prefixed.
pub fn content_hash(files: &[camino::Utf8PathBuf], strings: &[String]) -> anyhow::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for file in files {
        for file in files_under(file)? {
            let mut f = std::fs::File::open(&file).with_context(|| format!("cannot read {file}: was it built?"))?;
            hasher.update((file.as_str().len() as u64).to_le_bytes());
            hasher.update(file.as_str().as_bytes());
            let len = f.metadata()?.len();
            hasher.update(len.to_le_bytes());
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
        }
    }
    for s in strings {
        hasher.update((s.len() as u64).to_le_bytes());
        hasher.update(s.as_bytes());
    }
    let digest = hasher.finalize();
    Ok(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
}

/// `path` itself, or every file under the directory `path`, sorted.
fn files_under(path: &Utf8Path) -> anyhow::Result<Vec<camino::Utf8PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut out = Vec::new();
    for entry in path.read_dir_utf8().with_context(|| format!("cannot list {path}"))? {
        out.extend(files_under(entry?.path())?);
    }
    out.sort();
    Ok(out)
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executor() -> RealExecutor {
        let target = Target { kubeconfig: "k".into(), namespace: "remedy-ns".into(), run_id: "r".into() };
        let exec = RealExecutor::new(target);
        exec.set("NAMESPACE", "remedy-ns".into());
        exec.set("IMAGE_POSTGRES", "postgres:16".into());
        exec
    }

    #[test]
    fn expands_run_variables_and_built_images() {
        let exec = executor();
        exec.set("TAG_GATEWAY", "0123abcd".into());
        let cx = TaskCx::new(tokio_util::sync::CancellationToken::new(), "unused.log".into());
        let set = Task::new("t", crate::phases::Phase::Images, crate::phases::Kind::Build)
            .set("IMAGE_GATEWAY", "localhost/remedy/gateway:${TAG_GATEWAY}")
            .set("IMAGE_PULL_POLICY", "IfNotPresent");
        assert_eq!(exec.run_blocking(&set, &cx).unwrap(), Outcome::Done);
        let text = "ns: ${NAMESPACE}\nimage: ${IMAGE_GATEWAY}\ndb: ${IMAGE_POSTGRES}\npolicy: ${IMAGE_PULL_POLICY}";
        assert_eq!(
            exec.expand(text).unwrap(),
            "ns: remedy-ns\nimage: localhost/remedy/gateway:0123abcd\ndb: postgres:16\npolicy: IfNotPresent"
        );
    }

    #[test]
    fn unknown_or_unbuilt_placeholders_are_errors() {
        let exec = executor();
        assert_eq!(
            exec.expand("x ${IMAGE_DATASTORAGE}").unwrap_err().to_string(),
            "unknown placeholder ${IMAGE_DATASTORAGE}"
        );
        assert_eq!(exec.expand("${NOPE}").unwrap_err().to_string(), "unknown placeholder ${NOPE}");
        assert!(exec.expand("${OPEN").is_err());
    }

    #[test]
    fn content_hash_changes_with_any_input() {
        let dir = std::env::temp_dir().join(format!("xtask-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = camino::Utf8PathBuf::from_path_buf(dir.join("bin")).unwrap();
        std::fs::write(&file, b"binary v1").unwrap();
        let a = content_hash(std::slice::from_ref(&file), &["BASE_IMAGE=x".into()]).unwrap();
        assert_eq!(a.len(), 16);
        assert_eq!(a, content_hash(std::slice::from_ref(&file), &["BASE_IMAGE=x".into()]).unwrap());
        assert_ne!(a, content_hash(std::slice::from_ref(&file), &["BASE_IMAGE=y".into()]).unwrap());
        std::fs::write(&file, b"binary v2").unwrap();
        let b = content_hash(std::slice::from_ref(&file), &["BASE_IMAGE=x".into()]).unwrap();
        assert_ne!(a, b);
        // A directory stands for every file under it, names included.
        let tree = camino::Utf8PathBuf::from_path_buf(dir.clone()).unwrap();
        let whole = content_hash(std::slice::from_ref(&tree), &[]).unwrap();
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/more"), b"x").unwrap();
        let grown = content_hash(std::slice::from_ref(&tree), &[]).unwrap();
        assert_ne!(whole, grown);
        std::fs::rename(dir.join("sub/more"), dir.join("sub/renamed")).unwrap();
        assert_ne!(grown, content_hash(std::slice::from_ref(&tree), &[]).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stamped_task_runs_once_per_set_of_inputs() {
        let dir = camino::Utf8PathBuf::from_path_buf(
            std::env::temp_dir().join(format!("xtask-stamp-{}", std::process::id())),
        )
        .unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let exec = executor();
        let cx = TaskCx::new(tokio_util::sync::CancellationToken::new(), dir.join("task.log"));
        let runs = dir.join("runs");
        let count_run = Command::new("sh", ["-c", &format!("echo run >> {runs}")]);
        let task = Task::new("t", crate::phases::Phase::Tests, crate::phases::Kind::Process).unless_stamped(
            dir.join("stamp"),
            "${NAMESPACE}",
            vec![Step::Run(count_run)],
        );
        let times_run = || std::fs::read_to_string(&runs).unwrap_or_default().lines().count();
        assert_eq!(exec.run_blocking(&task, &cx).unwrap(), Outcome::Done);
        assert_eq!(std::fs::read_to_string(dir.join("stamp")).unwrap(), "remedy-ns");
        assert_eq!(exec.run_blocking(&task, &cx).unwrap(), Outcome::Cached);
        assert_eq!(times_run(), 1);
        exec.set("NAMESPACE", "elsewhere".into());
        assert_eq!(exec.run_blocking(&task, &cx).unwrap(), Outcome::Done);
        assert_eq!(times_run(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_step_leaves_no_stamp() {
        let dir = camino::Utf8PathBuf::from_path_buf(
            std::env::temp_dir().join(format!("xtask-nostamp-{}", std::process::id())),
        )
        .unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let cx = TaskCx::new(tokio_util::sync::CancellationToken::new(), dir.join("task.log"));
        let task = Task::new("t", crate::phases::Phase::Tests, crate::phases::Kind::Process).unless_stamped(
            dir.join("stamp"),
            "x",
            vec![Step::Run(Command::new("false", Vec::<String>::new()))],
        );
        assert!(executor().run_blocking(&task, &cx).is_err());
        assert!(!dir.join("stamp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn malformed_manifest_is_named() {
        let err = kube::parse("m.yaml".into(), "apiVersion: v1\nkind: ConfigMap\nmetadata: [oops").unwrap_err();
        assert!(err.to_string().starts_with("malformed manifest m.yaml:"), "{err}");
        let err =
            kube::parse("m.yaml".into(), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels: {}\n").unwrap_err();
        assert_eq!(err.to_string(), "malformed manifest m.yaml: document 1 has no metadata.name");
    }
}
