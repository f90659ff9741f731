//! The files a plan reads when it is made, and the files its tasks' results depend on: the
//! manifests, and the crates the binaries and the specs are built from.

use std::collections::BTreeSet;

use anyhow::{Context, bail, format_err};
use camino::{Utf8Component, Utf8Path, Utf8PathBuf};

use crate::phases::{KubeOp, Workload, placeholders};

/// A manifest as the plan sees it: its documents, with the placeholders still in.
pub struct Manifest {
    pub path: Utf8PathBuf,
    text: String,
    docs: Vec<serde_json::Value>,
}

impl Manifest {
    /// Reads and parses `path`; every document needs an apiVersion, a kind and a name.
    pub fn load(path: &Utf8Path) -> anyhow::Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read manifest {path}: restore it, or pass the right --manifests DIR"))?;
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&text).map_err(|err| format_err!("malformed manifest {path}: {err}"))?;
        for (n, doc) in docs.iter().enumerate() {
            if !(doc["apiVersion"].is_string() && doc["kind"].is_string()) {
                bail!("malformed manifest {path}: document {} has no apiVersion/kind", n + 1);
            }
            if !doc["metadata"]["name"].is_string() {
                bail!("malformed manifest {path}: document {} has no metadata.name", n + 1);
            }
        }
        Ok(Manifest { path: path.to_owned(), text, docs })
    }

    /// Every manifest in `<manifests>/crds`, by file name.
    pub fn crds(manifests: &Utf8Path) -> anyhow::Result<Vec<Manifest>> {
        let dir = manifests.join("crds");
        let mut paths = Vec::new();
        for entry in dir.read_dir_utf8().with_context(|| format!("cannot list the CRD manifests in {dir}"))? {
            let path = entry?.path().to_owned();
            if path.extension() == Some("yaml") {
                paths.push(path);
            }
        }
        paths.sort();
        paths.iter().map(|p| Manifest::load(p)).collect()
    }

    /// The run variables its placeholders read, each once.
    pub fn reads(&self) -> Vec<&str> {
        let names: BTreeSet<&str> = placeholders(&self.text).collect();
        names.into_iter().collect()
    }

    /// Its server-side apply.
    pub fn apply(&self) -> KubeOp {
        KubeOp::Apply { manifest: self.path.clone(), reads: self.reads().into_iter().map(str::to_owned).collect() }
    }

    /// The names of its documents of `kind`.
    pub fn names(&self, kind: &str) -> Vec<String> {
        let docs = self.docs.iter().filter(|d| d["kind"] == kind);
        docs.filter_map(|d| d["metadata"]["name"].as_str().map(str::to_owned)).collect()
    }

    /// Whether it runs `name` as a StatefulSet or (by default) a Deployment.
    pub fn workload(&self, name: &str) -> Workload {
        if self.names("StatefulSet").iter().any(|n| n == name) { Workload::StatefulSet } else { Workload::Deployment }
    }
}

/// What the binaries of these crates (directories relative to the workspace root) are built
/// from: each crate, the workspace crates they depend on by path, the workspace's manifest
/// and lock file.
pub fn crates(dirs: &[&str]) -> Vec<Utf8PathBuf> {
    let mut found = BTreeSet::new();
    for dir in dirs {
        path_crates(Utf8Path::new(dir), &mut found);
    }
    found.into_iter().chain(["Cargo.toml".into(), "Cargo.lock".into()]).collect()
}

/// What a suite's specs are built from: the E2E crate's manifest and library, the suite's file,
/// and the crates the E2E crate depends on.
pub fn suite(suite: &str) -> Vec<Utf8PathBuf> {
    let mut deps = BTreeSet::new();
    path_crates(Utf8Path::new("test/e2e"), &mut deps);
    deps.remove(Utf8Path::new("test/e2e"));
    let own = ["test/e2e/Cargo.toml".to_owned(), "test/e2e/src".to_owned(), format!("test/e2e/tests/{suite}.rs")];
    own.into_iter().map(Utf8PathBuf::from).chain(deps).chain(["Cargo.lock".into()]).collect()
}

/// Adds `dir` and, following `path` dependencies in its Cargo.toml, every workspace crate it
/// depends on. A crate whose manifest cannot be read adds only itself.
fn path_crates(dir: &Utf8Path, found: &mut BTreeSet<Utf8PathBuf>) {
    if !found.insert(dir.to_owned()) {
        return;
    }
    let manifest = crate::project_root().join(dir).join("Cargo.toml");
    let Ok(text) = std::fs::read_to_string(&manifest) else { return };
    let Ok(toml) = text.parse::<toml::Table>() else { return };
    for section in ["dependencies", "build-dependencies"] {
        let Some(deps) = toml.get(section).and_then(|d| d.as_table()) else { continue };
        for dep in deps.values() {
            if let Some(path) = dep.get("path").and_then(|p| p.as_str()) {
                path_crates(&normalize(&dir.join(path)), found);
            }
        }
    }
}

/// `a/b/../c` as `a/c`.
fn normalize(path: &Utf8Path) -> Utf8PathBuf {
    let mut out = Utf8PathBuf::new();
    for part in path.components() {
        match part {
            Utf8Component::ParentDir => {
                out.pop();
            }
            Utf8Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_is_built_from_its_crate_and_the_crates_it_depends_on() {
        let gateway = crates(&["services/gateway"]);
        assert_eq!(gateway, ["services/api", "services/gateway", "Cargo.toml", "Cargo.lock"].map(Utf8PathBuf::from));
        let specs = suite("gateway");
        assert!(specs.contains(&"test/e2e/tests/gateway.rs".into()) && specs.contains(&"services/api".into()));
        assert!(!specs.iter().any(|p| p.as_str().contains("datastorage.rs")), "{specs:?}");
        assert_eq!(normalize("test/e2e/../../services/api".into()), "services/api");
    }

    #[test]
    fn a_manifest_is_read_when_the_plan_is_made() {
        let dir = crate::project_root().join("test/manifests");
        let manifest = Manifest::load(&dir.join("postgresql.yaml")).unwrap();
        assert_eq!(manifest.reads(), ["IMAGE_POSTGRES", "IMAGE_PULL_POLICY", "NAMESPACE"]);
        assert_eq!(manifest.workload("postgresql"), Workload::StatefulSet);
        let err = Manifest::load(&dir.join("nope.yaml")).err().unwrap().to_string();
        assert!(err.starts_with(&format!("cannot read manifest {dir}/nope.yaml")), "{err}");
        let crds = Manifest::crds(&dir).unwrap();
        let names: Vec<String> = crds.iter().flat_map(|m| m.names("CustomResourceDefinition")).collect();
        assert_eq!(
            names,
            ["remediationrequests.remedy.dev", "signalprocessings.remedy.dev", "workflowexecutions.remedy.dev"]
        );
    }
}
