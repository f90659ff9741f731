//! The orchestration decision: from a RemediationRequest and its children, what to create
//! and what status to show. Pure logic.
//!
//! ```text
//! (no children)                 -> create SignalProcessing            phase Processing
//! SignalProcessing Pending      ->                                    phase Processing
//! SignalProcessing Failed       ->                                    phase Failed
//! SignalProcessing Completed    -> create WorkflowExecution           phase Executing
//! WorkflowExecution running     ->                                    phase Executing
//! WorkflowExecution Succeeded   ->                                    phase Completed
//! WorkflowExecution Failed      ->                                    phase Failed
//! ```

use std::collections::BTreeMap;

use remedy_api::{
    RemediationPhase, RemediationRequest, RemediationRequestStatus, SignalProcessing, SignalProcessingPhase,
    SignalProcessingSpec, WorkflowExecution, WorkflowExecutionPhase, WorkflowExecutionSpec, WorkflowTemplate,
    now_rfc3339,
};

/// Name of the SignalProcessing child of a RemediationRequest.
pub fn sp_name(rr: &str) -> String {
    format!("{rr}-sp")
}

/// Name of the WorkflowExecution child of a RemediationRequest.
pub fn we_name(rr: &str) -> String {
    format!("{rr}-we")
}

/// What one reconcile pass should do.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Create this SignalProcessing spec.
    pub create_sp: Option<SignalProcessingSpec>,
    /// Create this WorkflowExecution spec.
    pub create_we: Option<WorkflowExecutionSpec>,
    /// The status to write, when it differs from the current one.
    pub status: Option<RemediationRequestStatus>,
}

/// Decides the next step. `default_workflow` is used when the request names none.
pub fn plan(
    rr: &RemediationRequest,
    sp: Option<&SignalProcessing>,
    we: Option<&WorkflowExecution>,
    default_workflow: Option<&WorkflowTemplate>,
) -> Plan {
    let name = rr.metadata.name.clone().unwrap_or_default();
    let current = rr.status.clone().unwrap_or_default();
    if current.phase.is_some_and(RemediationPhase::is_terminal) {
        return Plan::default();
    }
    let mut want = current.clone();
    let mut out = Plan::default();
    want.signal_processing_ref = Some(sp_name(&name));

    match sp.and_then(|sp| sp.status.as_ref().map(|s| (sp, s))) {
        None => {
            if sp.is_none() {
                out.create_sp = Some(SignalProcessingSpec {
                    remediation_request_ref: name.clone(),
                    signal_fingerprint: rr.spec.signal_fingerprint.clone(),
                    severity: rr.spec.severity.clone(),
                    target_namespace: rr.spec.target_namespace.clone(),
                });
            }
            want.phase = Some(RemediationPhase::Processing);
            want.message = Some("classifying the signal".to_owned());
        }
        Some((_, sp_status)) => match sp_status.phase {
            None | Some(SignalProcessingPhase::Pending) => {
                want.phase = Some(RemediationPhase::Processing);
                want.message = Some("classifying the signal".to_owned());
            }
            Some(SignalProcessingPhase::Failed) => {
                finish(
                    &mut want,
                    RemediationPhase::Failed,
                    format!("signal processing failed: {}", sp_status.message.as_deref().unwrap_or("no detail")),
                );
            }
            Some(SignalProcessingPhase::Completed) => {
                want.environment = sp_status.environment.clone();
                want.priority = sp_status.priority.clone();
                executing(
                    rr,
                    &name,
                    sp_status.environment.as_deref(),
                    sp_status.priority.as_deref(),
                    we,
                    default_workflow,
                    &mut want,
                    &mut out,
                );
            }
        },
    }
    if want != current {
        out.status = Some(want);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn executing(
    rr: &RemediationRequest,
    name: &str,
    environment: Option<&str>,
    priority: Option<&str>,
    we: Option<&WorkflowExecution>,
    default_workflow: Option<&WorkflowTemplate>,
    want: &mut RemediationRequestStatus,
    out: &mut Plan,
) {
    match we {
        None => {
            let Some(workflow) = rr.spec.workflow.as_ref().or(default_workflow) else {
                finish(
                    want,
                    RemediationPhase::Failed,
                    "no workflow: the request names none and no default is configured".to_owned(),
                );
                return;
            };
            out.create_we = Some(WorkflowExecutionSpec {
                remediation_request_ref: name.to_owned(),
                image: workflow.image.clone(),
                command: workflow.command.clone(),
                env: workflow_env(rr, name, environment, priority),
                active_deadline_seconds: Some(600),
            });
            want.workflow_execution_ref = Some(we_name(name));
            want.phase = Some(RemediationPhase::Executing);
            want.message = Some("running the workflow".to_owned());
        }
        Some(we) => {
            want.workflow_execution_ref = Some(we_name(name));
            let we_status = we.status.clone().unwrap_or_default();
            match we_status.phase {
                Some(WorkflowExecutionPhase::Succeeded) => {
                    finish(want, RemediationPhase::Completed, "workflow succeeded".to_owned());
                }
                Some(WorkflowExecutionPhase::Failed) => {
                    finish(
                        want,
                        RemediationPhase::Failed,
                        format!("workflow failed: {}", we_status.message.as_deref().unwrap_or("no detail")),
                    );
                }
                _ => {
                    want.phase = Some(RemediationPhase::Executing);
                    want.message = Some("running the workflow".to_owned());
                }
            }
        }
    }
}

fn finish(want: &mut RemediationRequestStatus, phase: RemediationPhase, message: String) {
    want.phase = Some(phase);
    want.message = Some(message);
    want.completion_time = Some(now_rfc3339());
}

/// Environment handed to the workflow container.
pub fn workflow_env(
    rr: &RemediationRequest,
    name: &str,
    environment: Option<&str>,
    priority: Option<&str>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::from([
        ("REMEDY_REMEDIATION_REQUEST".to_owned(), name.to_owned()),
        ("REMEDY_SIGNAL_NAME".to_owned(), rr.spec.signal_name.clone()),
        ("REMEDY_SIGNAL_SEVERITY".to_owned(), rr.spec.severity.clone()),
        ("REMEDY_TARGET_NAMESPACE".to_owned(), rr.spec.target_namespace.clone()),
        ("REMEDY_ENVIRONMENT".to_owned(), environment.unwrap_or("unknown").to_owned()),
        ("REMEDY_PRIORITY".to_owned(), priority.unwrap_or_default().to_owned()),
    ]);
    if let Some(t) = &rr.spec.target_resource {
        env.insert("REMEDY_TARGET_KIND".to_owned(), t.kind.clone());
        env.insert("REMEDY_TARGET_NAME".to_owned(), t.name.clone());
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use remedy_api::{RemediationRequestSpec, SignalProcessingStatus, WorkflowExecutionStatus};

    fn rr(phase: Option<RemediationPhase>, workflow: Option<WorkflowTemplate>) -> RemediationRequest {
        let mut rr = RemediationRequest::new(
            "rr-1",
            RemediationRequestSpec {
                signal_fingerprint: "f".into(),
                signal_name: "HighCPU".into(),
                severity: "critical".into(),
                target_namespace: "shop".into(),
                workflow,
                ..Default::default()
            },
        );
        rr.metadata.namespace = Some("shop".into());
        rr.status = Some(RemediationRequestStatus { phase, occurrence_count: Some(3), ..Default::default() });
        rr
    }

    fn sp(phase: Option<SignalProcessingPhase>) -> SignalProcessing {
        let mut sp = SignalProcessing::new("rr-1-sp", Default::default());
        sp.status = Some(SignalProcessingStatus {
            phase,
            environment: Some("production".into()),
            priority: Some("P0".into()),
            message: Some("m".into()),
            ..Default::default()
        });
        sp
    }

    fn we(phase: Option<WorkflowExecutionPhase>) -> WorkflowExecution {
        let mut we = WorkflowExecution::new("rr-1-we", Default::default());
        we.status = Some(WorkflowExecutionStatus { phase, message: Some("job failed".into()), ..Default::default() });
        we
    }

    fn default_wf() -> WorkflowTemplate {
        WorkflowTemplate { image: "img".into(), command: vec!["true".into()] }
    }

    #[test]
    fn new_request_creates_signal_processing() {
        let p = plan(&rr(None, None), None, None, None);
        let spec = p.create_sp.unwrap();
        assert_eq!((spec.remediation_request_ref.as_str(), spec.severity.as_str()), ("rr-1", "critical"));
        assert!(p.create_we.is_none());
        let s = p.status.unwrap();
        assert_eq!(s.phase, Some(RemediationPhase::Processing));
        assert_eq!(s.signal_processing_ref.as_deref(), Some("rr-1-sp"));
        assert_eq!(s.occurrence_count, Some(3), "the gateway's fields are kept");
    }

    #[test]
    fn pending_child_only_waits_and_settles() {
        let mut r = rr(None, None);
        let first = plan(&r, Some(&sp(Some(SignalProcessingPhase::Pending))), None, None);
        assert!(first.create_sp.is_none());
        r.status = first.status;
        let again = plan(&r, Some(&sp(Some(SignalProcessingPhase::Pending))), None, None);
        assert_eq!(again, Plan::default(), "no change, no write");
    }

    #[test]
    fn completed_classification_starts_the_workflow() {
        let wf = WorkflowTemplate { image: "fix".into(), command: vec!["run".into()] };
        let p = plan(
            &rr(Some(RemediationPhase::Processing), Some(wf)),
            Some(&sp(Some(SignalProcessingPhase::Completed))),
            None,
            Some(&default_wf()),
        );
        let spec = p.create_we.unwrap();
        assert_eq!(spec.image, "fix", "the request's own workflow wins");
        assert_eq!(spec.env["REMEDY_PRIORITY"], "P0");
        let s = p.status.unwrap();
        assert_eq!(s.phase, Some(RemediationPhase::Executing));
        assert_eq!((s.environment.as_deref(), s.priority.as_deref()), (Some("production"), Some("P0")));
        assert_eq!(s.workflow_execution_ref.as_deref(), Some("rr-1-we"));
    }

    #[test]
    fn default_workflow_and_missing_workflow() {
        let done = sp(Some(SignalProcessingPhase::Completed));
        let p = plan(&rr(None, None), Some(&done), None, Some(&default_wf()));
        assert_eq!(p.create_we.unwrap().image, "img");
        let p = plan(&rr(None, None), Some(&done), None, None);
        assert!(p.create_we.is_none());
        assert_eq!(p.status.unwrap().phase, Some(RemediationPhase::Failed));
    }

    #[test]
    fn workflow_outcome_is_mirrored() {
        let done = sp(Some(SignalProcessingPhase::Completed));
        let p = plan(&rr(None, None), Some(&done), Some(&we(Some(WorkflowExecutionPhase::Running))), None);
        assert_eq!(p.status.unwrap().phase, Some(RemediationPhase::Executing));
        let p = plan(&rr(None, None), Some(&done), Some(&we(Some(WorkflowExecutionPhase::Succeeded))), None);
        let s = p.status.unwrap();
        assert_eq!(s.phase, Some(RemediationPhase::Completed));
        assert!(s.completion_time.is_some());
        let p = plan(&rr(None, None), Some(&done), Some(&we(Some(WorkflowExecutionPhase::Failed))), None);
        assert!(p.status.unwrap().message.unwrap().contains("job failed"));
    }

    #[test]
    fn failed_classification_fails_the_request() {
        let p = plan(&rr(None, None), Some(&sp(Some(SignalProcessingPhase::Failed))), None, None);
        assert_eq!(p.status.unwrap().phase, Some(RemediationPhase::Failed));
    }

    #[test]
    fn terminal_requests_are_left_alone() {
        for phase in [RemediationPhase::Completed, RemediationPhase::Failed] {
            assert_eq!(plan(&rr(Some(phase), None), None, None, None), Plan::default());
        }
    }
}
