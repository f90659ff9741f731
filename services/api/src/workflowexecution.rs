use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One run of a remediation workflow, executed as a Kubernetes Job. Created by the
/// orchestrator as a child of a RemediationRequest, reconciled by the workflowexecution
/// controller.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "remedy.dev",
    version = "v1alpha1",
    kind = "WorkflowExecution",
    plural = "workflowexecutions",
    shortname = "we",
    namespaced,
    status = "WorkflowExecutionStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Job","type":"string","jsonPath":".status.jobName"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowExecutionSpec {
    /// Name of the parent RemediationRequest (also the audit correlation id).
    pub remediation_request_ref: String,
    /// Container image of the workflow.
    pub image: String,
    /// Command (entrypoint and arguments); the image's entrypoint when empty.
    #[serde(default)]
    pub command: Vec<String>,
    /// Extra environment for the workflow container.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Seconds the Job may run before Kubernetes fails it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
}

/// Lifecycle of a WorkflowExecution.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum WorkflowExecutionPhase {
    /// The Job is not created yet.
    #[default]
    Pending,
    /// The Job exists and has not finished.
    Running,
    /// The Job completed successfully.
    Succeeded,
    /// The Job failed.
    Failed,
}

impl WorkflowExecutionPhase {
    /// Whether the execution has finished.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// Observed state of a WorkflowExecution.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowExecutionStatus {
    /// Current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<WorkflowExecutionPhase>,
    /// Name of the Job running the workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// When the Job was created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When the Job finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
