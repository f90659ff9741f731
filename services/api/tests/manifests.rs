//! Checks on the deployment manifests in `test/manifests`: only the placeholders the xtask
//! substitutes, typed Kubernetes objects, namespaces, probes and resource requests.

use std::path::{Path, PathBuf};

use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    batch::v1::Job,
    core::v1::{Container, Service, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use serde_json::Value;

const PLACEHOLDERS: [&str; 9] = [
    "NAMESPACE",
    "IMAGE_PULL_POLICY",
    "IMAGE_GATEWAY",
    "IMAGE_DATASTORAGE",
    "IMAGE_SIGNALPROCESSING",
    "IMAGE_REMEDIATIONORCHESTRATOR",
    "IMAGE_WORKFLOWEXECUTION",
    "IMAGE_POSTGRES",
    "IMAGE_REDIS",
];

fn manifests() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test/manifests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read test/manifests")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "expected the service manifests in {}", dir.display());
    files
}

/// Placeholders used in `text`, checked to be `${NAME}` with a known NAME.
fn placeholders(text: &str, file: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let end = rest[i..].find('}').unwrap_or_else(|| panic!("{}: unterminated ${{", file.display()));
        let name = &rest[i + 2..i + end];
        assert!(PLACEHOLDERS.contains(&name), "{}: unknown placeholder ${{{name}}}", file.display());
        out.push(name.to_owned());
        rest = &rest[i + end..];
    }
    out
}

fn substitute(text: &str) -> String {
    PLACEHOLDERS.iter().fold(text.to_owned(), |t, p| {
        let value = match *p {
            "NAMESPACE" => "remedy-test".to_owned(),
            "IMAGE_PULL_POLICY" => "IfNotPresent".to_owned(),
            other => format!("localhost/{}:test", other.to_ascii_lowercase()),
        };
        t.replace(&format!("${{{p}}}"), &value)
    })
}

fn check_containers(file: &Path, containers: &[Container], need_probes: bool) {
    for c in containers {
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"), "{}: pull policy placeholder", file.display());
        assert!(
            c.image.as_deref().is_some_and(|i| i.starts_with("localhost/")),
            "{}: image placeholder",
            file.display()
        );
        let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        assert!(
            requests.is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory")),
            "{}: requests",
            file.display()
        );
        if need_probes {
            let ready = c.readiness_probe.as_ref().unwrap_or_else(|| panic!("{}: readiness probe", file.display()));
            assert!(c.liveness_probe.is_some(), "{}: liveness probe", file.display());
            assert!(ready.initial_delay_seconds.unwrap_or(0) <= 2, "{}: keep readiness delay small", file.display());
        }
        for port in c.ports.iter().flatten() {
            // Server-side apply on Kubernetes 1.20 refuses list entries without their key fields.
            assert_eq!(
                port.protocol.as_deref(),
                Some("TCP"),
                "{}: containerPort {} needs protocol",
                file.display(),
                port.container_port
            );
        }
        for env in c.env.iter().flatten() {
            if env.name.contains("PASSWORD") {
                let secret = env.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref());
                assert!(
                    secret.is_some_and(|s| s.name == "postgresql-credentials"),
                    "{}: {} must come from Secret postgresql-credentials",
                    file.display(),
                    env.name
                );
            }
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(file: &Path, doc: Value) -> T {
    let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
    serde_json::from_value(doc).unwrap_or_else(|e| panic!("{}: {kind}: {e}", file.display()))
}

#[test]
fn manifests_are_valid_objects_with_only_known_placeholders() {
    for file in manifests() {
        let text = std::fs::read_to_string(&file).unwrap();
        let used = placeholders(&text, &file);
        assert!(used.iter().any(|p| p == "NAMESPACE"), "{}: no ${{NAMESPACE}}", file.display());
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&substitute(&text)).unwrap_or_else(|e| panic!("{}: YAML: {e}", file.display()));
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            let namespace = doc["metadata"]["namespace"].as_str().map(str::to_owned);
            let cluster_scoped = matches!(kind.as_str(), "ClusterRole" | "ClusterRoleBinding");
            assert_eq!(namespace.is_none(), cluster_scoped, "{}: {kind} namespace", file.display());
            if let Some(ns) = namespace {
                assert_eq!(ns, "remedy-test", "{}: {kind} must use ${{NAMESPACE}}", file.display());
            }
            match kind.as_str() {
                "Deployment" => {
                    let d: Deployment = parse(&file, doc);
                    let pod = d.spec.unwrap().template.spec.unwrap();
                    check_containers(&file, &pod.containers, true);
                }
                "StatefulSet" => {
                    let s: StatefulSet = parse(&file, doc);
                    let pod = s.spec.unwrap().template.spec.unwrap();
                    check_containers(&file, &pod.containers, true);
                }
                "Job" => {
                    let j: Job = parse(&file, doc);
                    let pod = j.spec.unwrap().template.spec.unwrap();
                    check_containers(&file, &pod.containers, false);
                }
                "Service" => {
                    let svc: Service = parse(&file, doc);
                    for port in svc.spec.and_then(|s| s.ports).unwrap_or_default() {
                        assert_eq!(
                            port.protocol.as_deref(),
                            Some("TCP"),
                            "{}: Service port {} needs protocol",
                            file.display(),
                            port.port
                        );
                    }
                }
                "ServiceAccount" => {
                    parse::<ServiceAccount>(&file, doc);
                }
                "ClusterRole" => {
                    parse::<ClusterRole>(&file, doc);
                }
                "ClusterRoleBinding" => {
                    let b: ClusterRoleBinding = parse(&file, doc);
                    for s in b.subjects.iter().flatten() {
                        assert_eq!(
                            s.namespace.as_deref(),
                            Some("remedy-test"),
                            "{}: subject namespace",
                            file.display()
                        );
                    }
                }
                other => panic!("{}: unexpected kind {other}", file.display()),
            }
        }
    }
}
