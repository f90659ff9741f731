use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A signal (a firing alert) that should be remediated. Created by the gateway, driven by
/// the remediation orchestrator.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "remedy.dev",
    version = "v1alpha1",
    kind = "RemediationRequest",
    plural = "remediationrequests",
    shortname = "rr",
    namespaced,
    status = "RemediationRequestStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Priority","type":"string","jsonPath":".status.priority"}"#,
    printcolumn = r#"{"name":"Occurrences","type":"integer","jsonPath":".status.occurrenceCount"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RemediationRequestSpec {
    /// SHA-256 fingerprint (hex) of the alert's identity (its sorted labels).
    pub signal_fingerprint: String,
    /// The alert's `alertname` label.
    pub signal_name: String,
    /// The alert's `severity` label (`critical`, `warning`, `info`, ...), empty when absent.
    // Required rather than defaulted: Kubernetes 1.20 rejects a CRD whose schema has `default: ""`.
    pub severity: String,
    /// Namespace the alert concerns (the RemediationRequest lives there too).
    pub target_namespace: String,
    /// The workload the alert points at, when its labels name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_resource: Option<TargetResource>,
    /// The alert's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The alert's annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// When the alert started firing (RFC 3339), as Alertmanager reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    /// The workflow to run; the orchestrator's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<WorkflowTemplate>,
}

/// A Kubernetes object named by an alert's labels.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct TargetResource {
    /// Kind, e.g. `Pod` or `Deployment`.
    pub kind: String,
    /// Name of the object.
    pub name: String,
}

/// A container to run as a remediation workflow.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct WorkflowTemplate {
    /// Container image.
    pub image: String,
    /// Command (entrypoint and arguments); the image's entrypoint when empty.
    #[serde(default)]
    pub command: Vec<String>,
}

/// Lifecycle of a RemediationRequest.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RemediationPhase {
    /// Created, not yet picked up by the orchestrator.
    #[default]
    Pending,
    /// Signal processing (classification) is running.
    Processing,
    /// The workflow is running.
    Executing,
    /// The workflow succeeded.
    Completed,
    /// Signal processing or the workflow failed.
    Failed,
}

impl RemediationPhase {
    /// Whether the remediation has finished.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

/// Observed state of a RemediationRequest.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemediationRequestStatus {
    /// Current phase (set by the orchestrator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RemediationPhase>,
    /// How often the gateway received this signal (1 on creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurrence_count: Option<i64>,
    /// When the gateway last received the signal (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// Environment classified by signal processing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Priority derived by signal processing (`P0`..`P3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// Name of the SignalProcessing child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_processing_ref: Option<String>,
    /// Name of the WorkflowExecution child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_execution_ref: Option<String>,
    /// Human-readable detail on the current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the remediation finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
}
