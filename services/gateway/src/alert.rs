//! Alertmanager webhook (version 4) payloads: parsing, validation, fingerprints and the
//! RemediationRequest each firing alert becomes. Pure logic, no I/O.

use std::collections::BTreeMap;

use remedy_api::{RemediationRequest, RemediationRequestSpec, TargetResource, WorkflowTemplate};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::DedupWindow;

/// Most alerts accepted in one webhook call.
pub const MAX_ALERTS: usize = 500;
/// Annotation naming the workflow image.
pub const WORKFLOW_IMAGE_ANNOTATION: &str = "remedy_workflow_image";
/// Annotation holding the workflow command as a JSON array of strings.
pub const WORKFLOW_COMMAND_ANNOTATION: &str = "remedy_workflow_command";
/// Annotation asking for a deduplication window (whole seconds, within the configured bounds).
pub const DEDUP_WINDOW_ANNOTATION: &str = "remedy_dedup_window_seconds";

/// The webhook body Alertmanager posts (only the fields Remedy reads).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// Payload format version; must be `"4"`.
    pub version: String,
    /// The alerts of the notification group.
    pub alerts: Vec<Alert>,
}

/// One alert of a webhook payload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// `firing` or `resolved`.
    pub status: String,
    /// Identifying labels.
    pub labels: BTreeMap<String, String>,
    /// Descriptive annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// When the alert started firing.
    #[serde(default)]
    pub starts_at: Option<String>,
}

/// Whether an alert is firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStatus {
    /// The alert is active: it may need a remediation.
    Firing,
    /// The alert cleared: nothing to do.
    Resolved,
}

/// Where a signal came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An Alertmanager webhook.
    Alertmanager,
    /// A Kubernetes Warning Event.
    KubernetesEvent,
}

impl Source {
    /// The name in audit events and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Alertmanager => "alertmanager",
            Self::KubernetesEvent => "kubernetes-event",
        }
    }
}

/// A validated alert, ready to become a RemediationRequest.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// Where it came from.
    pub source: Source,
    /// Firing or resolved.
    pub status: AlertStatus,
    /// SHA-256 hex of the sorted labels.
    pub fingerprint: String,
    /// The `alertname` label.
    pub name: String,
    /// The `namespace` label.
    pub namespace: String,
    /// The `severity` label, empty when absent.
    pub severity: String,
    /// All labels.
    pub labels: BTreeMap<String, String>,
    /// All annotations.
    pub annotations: BTreeMap<String, String>,
    /// When the alert started firing.
    pub starts_at: Option<String>,
    /// Workflow requested through annotations.
    pub workflow: Option<WorkflowTemplate>,
    /// The deduplication window of this signal, in seconds.
    pub window_seconds: u64,
}

/// Why a payload was rejected (answered with 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Invalid {
    /// Not JSON, or not the expected shape.
    #[error("malformed webhook payload: {0}")]
    Malformed(String),
    /// A version other than 4.
    #[error("unsupported webhook version {0:?}; only \"4\" is accepted")]
    Version(String),
    /// No alerts, or too many.
    #[error("alerts must hold between 1 and {MAX_ALERTS} alerts, got {0}")]
    AlertCount(usize),
    /// An alert status other than firing/resolved.
    #[error("alerts[{0}]: unknown status {1:?}; expected \"firing\" or \"resolved\"")]
    Status(usize, String),
    /// A required label is missing or invalid.
    #[error("alerts[{0}]: {1}")]
    Label(usize, String),
    /// A workflow annotation is unusable.
    #[error("alerts[{0}]: {1}")]
    Annotation(usize, String),
}

/// Parses and validates a webhook body; an alert's window must lie within `window`'s bounds.
pub fn parse(body: &[u8], window: &DedupWindow) -> Result<Vec<Signal>, Invalid> {
    let hook: Webhook = serde_json::from_slice(body).map_err(|e| Invalid::Malformed(e.to_string()))?;
    if hook.version != "4" {
        return Err(Invalid::Version(hook.version));
    }
    if hook.alerts.is_empty() || hook.alerts.len() > MAX_ALERTS {
        return Err(Invalid::AlertCount(hook.alerts.len()));
    }
    hook.alerts.into_iter().enumerate().map(|(i, a)| validate(i, a, window)).collect()
}

fn validate(i: usize, alert: Alert, window: &DedupWindow) -> Result<Signal, Invalid> {
    let status = match alert.status.as_str() {
        "firing" => AlertStatus::Firing,
        "resolved" => AlertStatus::Resolved,
        other => return Err(Invalid::Status(i, other.to_owned())),
    };
    let name = alert
        .labels
        .get("alertname")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Invalid::Label(i, "label alertname is missing".into()))?
        .clone();
    let namespace =
        alert.labels.get("namespace").ok_or_else(|| Invalid::Label(i, "label namespace is missing".into()))?.clone();
    if !is_dns_label(&namespace) {
        return Err(Invalid::Label(i, format!("label namespace {namespace:?} is not a valid namespace name")));
    }
    let workflow = workflow_from(&alert.annotations).map_err(|e| Invalid::Annotation(i, e))?;
    let window_seconds = window_from(&alert.annotations, window).map_err(|e| Invalid::Annotation(i, e))?;
    Ok(Signal {
        source: Source::Alertmanager,
        status,
        fingerprint: fingerprint(&alert.labels),
        name,
        namespace,
        severity: alert.labels.get("severity").cloned().unwrap_or_default(),
        labels: alert.labels,
        annotations: alert.annotations,
        starts_at: alert.starts_at,
        workflow,
        window_seconds,
    })
}

/// The window an alert asks for with [`DEDUP_WINDOW_ANNOTATION`], or the default.
fn window_from(annotations: &BTreeMap<String, String>, window: &DedupWindow) -> Result<u64, String> {
    let Some(value) = annotations.get(DEDUP_WINDOW_ANNOTATION) else { return Ok(window.default) };
    match value.trim().parse::<u64>() {
        Ok(s) if (window.min..=window.max).contains(&s) => Ok(s),
        _ => Err(format!(
            "annotation {DEDUP_WINDOW_ANNOTATION}={value:?} must be whole seconds from {} to {}",
            window.min, window.max
        )),
    }
}

/// SHA-256 (hex) over the labels in sorted order, each key and value prefixed with its
/// length (so no choice of values can collide): the alert's identity.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    for (k, v) in labels {
        for part in [k, v] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
    }
    hex::encode(hasher.finalize())
}

/// The RemediationRequest of a fingerprint's deduplication window opened at `opened` (unix
/// seconds): `rr-`, the fingerprint's first 16 hex digits and the window's start. Each window gets
/// its own resource; every delivery inside one converges on the name its claim holds.
pub fn rr_name(fingerprint: &str, opened: u64) -> String {
    format!("rr-{}-{opened}", &fingerprint[..16.min(fingerprint.len())])
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn workflow_from(annotations: &BTreeMap<String, String>) -> Result<Option<WorkflowTemplate>, String> {
    let Some(image) = annotations.get(WORKFLOW_IMAGE_ANNOTATION) else {
        if annotations.contains_key(WORKFLOW_COMMAND_ANNOTATION) {
            return Err(format!("annotation {WORKFLOW_COMMAND_ANNOTATION} needs {WORKFLOW_IMAGE_ANNOTATION}"));
        }
        return Ok(None);
    };
    if image.trim().is_empty() {
        return Err(format!("annotation {WORKFLOW_IMAGE_ANNOTATION} is empty"));
    }
    let command = match annotations.get(WORKFLOW_COMMAND_ANNOTATION) {
        None => Vec::new(),
        Some(json) => serde_json::from_str::<Vec<String>>(json)
            .map_err(|e| format!("annotation {WORKFLOW_COMMAND_ANNOTATION} must be a JSON array of strings: {e}"))?,
    };
    Ok(Some(WorkflowTemplate { image: image.clone(), command }))
}

/// The workload an alert's labels point at, most specific owner first.
pub fn target_resource(labels: &BTreeMap<String, String>) -> Option<TargetResource> {
    [("deployment", "Deployment"), ("statefulset", "StatefulSet"), ("daemonset", "DaemonSet"), ("pod", "Pod")]
        .into_iter()
        .find_map(|(label, kind)| {
            labels
                .get(label)
                .filter(|v| !v.is_empty())
                .map(|name| TargetResource { kind: kind.to_owned(), name: name.clone() })
        })
}

impl Signal {
    /// The RemediationRequest named `name` a new firing signal becomes.
    pub fn remediation_request(&self, name: &str) -> RemediationRequest {
        let mut rr = RemediationRequest::new(
            name,
            RemediationRequestSpec {
                signal_fingerprint: self.fingerprint.clone(),
                signal_name: self.name.clone(),
                severity: self.severity.clone(),
                target_namespace: self.namespace.clone(),
                target_resource: target_resource(&self.labels),
                labels: self.labels.clone(),
                annotations: self.annotations.clone(),
                starts_at: self.starts_at.clone(),
                workflow: self.workflow.clone(),
            },
        );
        rr.metadata.namespace = Some(self.namespace.clone());
        rr.metadata.labels = Some(BTreeMap::from([
            ("app.kubernetes.io/managed-by".to_owned(), "remedy-gateway".to_owned()),
            ("remedy.dev/fingerprint".to_owned(), self.fingerprint[..16].to_owned()),
            ("remedy.dev/source".to_owned(), self.source.name().to_owned()),
        ]));
        rr
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_default(body: &[u8]) -> Result<Vec<Signal>, Invalid> {
        parse(body, &DedupWindow { default: 300, min: 1, max: 600 })
    }

    #[test]
    fn an_alert_may_ask_for_a_window_within_the_bounds() {
        let with = |v: &str| {
            let mut a = alert("firing");
            a["annotations"][DEDUP_WINDOW_ANNOTATION] = v.into();
            parse_default(&payload(json!([a])))
        };
        assert_eq!(parse_default(&payload(json!([alert("firing")]))).unwrap()[0].window_seconds, 300);
        assert_eq!(with("2").unwrap()[0].window_seconds, 2);
        assert_eq!(with("600").unwrap()[0].window_seconds, 600);
        for bad in ["0", "601", "1.5", "soon"] {
            assert!(
                matches!(with(bad), Err(Invalid::Annotation(0, m)) if m.contains("from 1 to 600")),
                "{bad} was accepted"
            );
        }
    }

    fn payload(alerts: serde_json::Value) -> Vec<u8> {
        json!({"version": "4", "status": "firing", "receiver": "remedy", "groupLabels": {},
               "commonLabels": {}, "commonAnnotations": {}, "externalURL": "", "alerts": alerts})
        .to_string()
        .into_bytes()
    }

    fn alert(status: &str) -> serde_json::Value {
        json!({"status": status, "labels": {"alertname": "HighCPU", "namespace": "prod-a",
               "severity": "critical", "pod": "web-1"}, "annotations": {"summary": "cpu"},
               "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
               "generatorURL": "", "fingerprint": "abc"})
    }

    #[test]
    fn parses_a_firing_alert() {
        let signals = parse_default(&payload(json!([alert("firing")]))).unwrap();
        assert_eq!(signals.len(), 1);
        let s = &signals[0];
        assert_eq!(s.status, AlertStatus::Firing);
        assert_eq!((s.name.as_str(), s.namespace.as_str(), s.severity.as_str()), ("HighCPU", "prod-a", "critical"));
        assert_eq!(s.fingerprint.len(), 64);
        let name = rr_name(&s.fingerprint, 1_764_000_000);
        let rr = s.remediation_request(&name);
        assert_eq!(rr.metadata.name.as_deref(), Some(name.as_str()));
        assert_eq!(name, format!("rr-{}-1764000000", &s.fingerprint[..16]));
        assert_eq!(rr.metadata.namespace.as_deref(), Some("prod-a"));
        assert_eq!(rr.spec.target_resource, Some(TargetResource { kind: "Pod".into(), name: "web-1".into() }));
        assert_eq!(rr.spec.workflow, None);
    }

    #[test]
    fn fingerprint_is_stable_and_label_sensitive() {
        let a = BTreeMap::from([("a".to_owned(), "1".to_owned()), ("b".to_owned(), "2".to_owned())]);
        let mut b = BTreeMap::new();
        b.insert("b".to_owned(), "2".to_owned());
        b.insert("a".to_owned(), "1".to_owned());
        assert_eq!(fingerprint(&a), fingerprint(&b));
        b.insert("a".to_owned(), "12".to_owned());
        assert_ne!(fingerprint(&a), fingerprint(&b));
        // "a=1\nb=2" must not collide with a single label whose value contains the separator.
        let c = BTreeMap::from([("a".to_owned(), "1\nb=2".to_owned())]);
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }

    #[test]
    fn rejects_malformed_json_and_missing_fields() {
        assert!(matches!(parse_default(b"{"), Err(Invalid::Malformed(_))));
        assert!(matches!(parse_default(br#"{"version":"4"}"#), Err(Invalid::Malformed(m)) if m.contains("alerts")));
        assert!(
            matches!(parse_default(br#"{"version":"4","alerts":[{"status":"firing"}]}"#), Err(Invalid::Malformed(m)) if m.contains("labels"))
        );
        assert!(matches!(parse_default(b"[]"), Err(Invalid::Malformed(_))));
    }

    #[test]
    fn rejects_wrong_version_and_alert_counts() {
        let mut v: serde_json::Value = serde_json::from_slice(&payload(json!([alert("firing")]))).unwrap();
        v["version"] = "3".into();
        assert_eq!(parse_default(v.to_string().as_bytes()), Err(Invalid::Version("3".into())));
        assert_eq!(parse_default(&payload(json!([]))), Err(Invalid::AlertCount(0)));
        let many: Vec<_> = (0..=MAX_ALERTS).map(|_| alert("firing")).collect();
        assert_eq!(parse_default(&payload(json!(many))), Err(Invalid::AlertCount(MAX_ALERTS + 1)));
    }

    #[test]
    fn rejects_unknown_status() {
        let err = parse_default(&payload(json!([alert("firing"), alert("pending")]))).unwrap_err();
        assert_eq!(err, Invalid::Status(1, "pending".into()));
    }

    #[test]
    fn rejects_missing_or_bad_labels() {
        let mut a = alert("firing");
        a["labels"].as_object_mut().unwrap().remove("alertname");
        assert!(matches!(parse_default(&payload(json!([a]))), Err(Invalid::Label(0, m)) if m.contains("alertname")));
        let mut a = alert("firing");
        a["labels"].as_object_mut().unwrap().remove("namespace");
        assert!(matches!(parse_default(&payload(json!([a]))), Err(Invalid::Label(0, m)) if m.contains("namespace")));
        let mut a = alert("firing");
        a["labels"]["namespace"] = "Not_A_Namespace".into();
        assert!(matches!(parse_default(&payload(json!([a]))), Err(Invalid::Label(0, _))));
    }

    #[test]
    fn workflow_annotations() {
        let mut a = alert("firing");
        a["annotations"][WORKFLOW_IMAGE_ANNOTATION] = "busybox".into();
        a["annotations"][WORKFLOW_COMMAND_ANNOTATION] = r#"["sh","-c","true"]"#.into();
        let s = &parse_default(&payload(json!([a]))).unwrap()[0];
        assert_eq!(
            s.workflow,
            Some(WorkflowTemplate { image: "busybox".into(), command: vec!["sh".into(), "-c".into(), "true".into()] })
        );
        let mut a = alert("firing");
        a["annotations"][WORKFLOW_IMAGE_ANNOTATION] = "busybox".into();
        a["annotations"][WORKFLOW_COMMAND_ANNOTATION] = "sh -c true".into();
        assert!(matches!(parse_default(&payload(json!([a]))), Err(Invalid::Annotation(0, _))));
        let mut a = alert("firing");
        a["annotations"][WORKFLOW_COMMAND_ANNOTATION] = "[]".into();
        assert!(matches!(parse_default(&payload(json!([a]))), Err(Invalid::Annotation(0, _))));
    }

    #[test]
    fn target_resource_prefers_owners() {
        let labels =
            BTreeMap::from([("pod".to_owned(), "web-1".to_owned()), ("deployment".to_owned(), "web".to_owned())]);
        assert_eq!(target_resource(&labels), Some(TargetResource { kind: "Deployment".into(), name: "web".into() }));
        assert_eq!(target_resource(&BTreeMap::new()), None);
    }
}
