use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Classification of one signal: environment and priority. Created by the orchestrator as a
/// child of a RemediationRequest, reconciled by the signalprocessing controller.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "remedy.dev",
    version = "v1alpha1",
    kind = "SignalProcessing",
    plural = "signalprocessings",
    shortname = "sp",
    namespaced,
    status = "SignalProcessingStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Environment","type":"string","jsonPath":".status.environment"}"#,
    printcolumn = r#"{"name":"Priority","type":"string","jsonPath":".status.priority"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SignalProcessingSpec {
    /// Name of the parent RemediationRequest (also the audit correlation id).
    pub remediation_request_ref: String,
    /// Fingerprint of the signal.
    pub signal_fingerprint: String,
    /// The signal's severity label.
    // Required rather than defaulted: Kubernetes 1.20 rejects a CRD whose schema has `default: ""`.
    pub severity: String,
    /// Namespace whose labels decide the environment.
    pub target_namespace: String,
}

/// Lifecycle of a SignalProcessing.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SignalProcessingPhase {
    /// Seen by the controller, classification pending.
    #[default]
    Pending,
    /// Environment and priority are set.
    Completed,
    /// Classification failed permanently (e.g. the namespace does not exist).
    Failed,
}

/// Observed state of a SignalProcessing.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignalProcessingStatus {
    /// Current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SignalProcessingPhase>,
    /// `production`, `staging`, `development`, `test` or `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// `P0` (most urgent) to `P3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When classification finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
}
