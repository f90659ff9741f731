//! Remedy's shared API: the custom resources (group `remedy.dev`, version `v1alpha1`),
//! the audit event exchanged with datastorage, and (feature `service`) the runtime
//! plumbing every service binary uses.

pub mod audit;
pub mod crd;
pub mod crdgen;
mod remediation;
mod signalprocessing;
mod workflowexecution;

#[cfg(feature = "service")]
pub mod audit_client;
#[cfg(feature = "service")]
pub mod runtime;
#[cfg(feature = "testing")]
pub mod testing;

pub use remediation::{
    RemediationPhase, RemediationRequest, RemediationRequestSpec, RemediationRequestStatus, TargetResource,
    WorkflowTemplate,
};
pub use signalprocessing::{SignalProcessing, SignalProcessingPhase, SignalProcessingSpec, SignalProcessingStatus};
pub use workflowexecution::{
    WorkflowExecution, WorkflowExecutionPhase, WorkflowExecutionSpec, WorkflowExecutionStatus,
};

/// API group of every Remedy custom resource.
pub const GROUP: &str = "remedy.dev";
/// API version of every Remedy custom resource.
pub const VERSION: &str = "v1alpha1";

/// Current time as an RFC 3339 UTC timestamp, the format used in statuses and audit events.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}
