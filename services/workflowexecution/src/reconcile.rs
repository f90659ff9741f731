//! One reconcile pass over a WorkflowExecution: read its Job, apply the [`plan`], audit
//! the start and the end.

use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::batch::v1::Job;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::controller::Action,
};
use remedy_api::{
    WorkflowExecution, WorkflowExecutionPhase, WorkflowExecutionStatus,
    audit::{AuditEvent, Outcome},
    audit_client::AuditClient,
    now_rfc3339,
    runtime::{ReconcileError, is_api_code},
};
use serde_json::json;

use crate::plan::{job_for, plan};

/// What the controller needs.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Datastorage audit client.
    pub audit: AuditClient,
}

/// One reconcile pass.
pub async fn reconcile(we: Arc<WorkflowExecution>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let ns = we.namespace().context("WorkflowExecution without namespace")?;
    let name = we.name_any();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let job = jobs.get_opt(&name).await.context("reading Job")?;
    let p = plan(&we, job.as_ref());
    if p.create_job {
        match jobs.create(&PostParams::default(), &job_for(&we)).await {
            Ok(_) => tracing::info!(namespace = %ns, %name, image = %we.spec.image, "job created"),
            Err(e) if is_api_code(&e, 409) => {}
            Err(e) => return Err(anyhow::Error::new(e).context(format!("creating Job {ns}/{name}")).into()),
        }
    }
    if let Some(status) = p.status {
        let before = we.status.as_ref().and_then(|s| s.phase);
        if let Some(event) = transition_event(&we, before, &status) {
            ctx.audit.send(&event).await.context("sending audit event")?;
        }
        let api: Api<WorkflowExecution> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({ "status": status })))
            .await
            .with_context(|| format!("patching status of {ns}/{name}"))?;
        tracing::info!(namespace = %ns, %name, phase = ?status.phase, "workflow progressed");
    }
    Ok(Action::await_change())
}

/// The audit event for a phase change worth recording (start, success, failure); ids derive
/// from the UID so retried deliveries are stored once.
pub fn transition_event(
    we: &WorkflowExecution,
    before: Option<WorkflowExecutionPhase>,
    status: &WorkflowExecutionStatus,
) -> Option<AuditEvent> {
    let after = status.phase?;
    if before == Some(after) {
        return None;
    }
    let (kind, outcome, at) = match after {
        WorkflowExecutionPhase::Running => ("started", Outcome::Success, status.start_time.clone()),
        WorkflowExecutionPhase::Succeeded => ("succeeded", Outcome::Success, status.completion_time.clone()),
        WorkflowExecutionPhase::Failed => ("failed", Outcome::Failure, status.completion_time.clone()),
        WorkflowExecutionPhase::Pending => return None,
    };
    Some(AuditEvent {
        event_id: format!("workflowexecution-{}-{kind}", we.uid().unwrap_or_default()),
        event_type: format!("workflowexecution.workflow.{kind}"),
        event_timestamp: at.unwrap_or_else(now_rfc3339),
        correlation_id: we.spec.remediation_request_ref.clone(),
        actor: "workflowexecution".to_owned(),
        namespace: we.namespace(),
        resource: Some(format!("WorkflowExecution/{}", we.name_any())),
        outcome,
        data: json!({"image": we.spec.image, "job": status.job_name, "message": status.message}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use remedy_api::WorkflowExecutionSpec;

    #[test]
    fn transitions_are_audited_once_per_phase() {
        let mut we = WorkflowExecution::new(
            "rr-1-we",
            WorkflowExecutionSpec { remediation_request_ref: "rr-1".into(), image: "i".into(), ..Default::default() },
        );
        we.metadata.uid = Some("u".into());
        we.metadata.namespace = Some("shop".into());
        let running = WorkflowExecutionStatus {
            phase: Some(WorkflowExecutionPhase::Running),
            start_time: Some("2026-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        let e = transition_event(&we, None, &running).unwrap();
        assert_eq!(
            (e.event_id.as_str(), e.event_type.as_str()),
            ("workflowexecution-u-started", "workflowexecution.workflow.started")
        );
        assert_eq!(e.correlation_id, "rr-1");
        assert_eq!(e.validate(), Ok(()));
        assert!(transition_event(&we, Some(WorkflowExecutionPhase::Running), &running).is_none());
        let failed = WorkflowExecutionStatus { phase: Some(WorkflowExecutionPhase::Failed), ..Default::default() };
        let e = transition_event(&we, Some(WorkflowExecutionPhase::Running), &failed).unwrap();
        assert_eq!(e.outcome, Outcome::Failure);
        assert_eq!(e.validate(), Ok(()));
    }
}

#[cfg(test)]
mod io_tests {
    use super::*;
    use http::Method;
    use remedy_api::{
        WorkflowExecutionSpec,
        testing::{FakeDatastorage, MockApi},
    };

    fn we() -> WorkflowExecution {
        let mut we = WorkflowExecution::new(
            "rr-1-we",
            WorkflowExecutionSpec {
                remediation_request_ref: "rr-1".into(),
                image: "wf:1".into(),
                command: vec!["true".into()],
                ..Default::default()
            },
        );
        we.metadata.namespace = Some("shop".into());
        we.metadata.uid = Some("uid-we".into());
        we
    }

    #[tokio::test]
    async fn new_execution_creates_its_job_and_runs() {
        let ds = FakeDatastorage::start().await;
        let (client, mut api) = MockApi::pair();
        let ctx = Arc::new(Context { client, audit: AuditClient::new(&ds.url).unwrap() });
        let server = tokio::spawn(async move {
            api.expect(Method::GET, "/apis/batch/v1/namespaces/shop/jobs/rr-1-we")
                .await
                .respond_status(404, "NotFound");
            let create = api.expect(Method::POST, "/apis/batch/v1/namespaces/shop/jobs").await;
            assert_eq!(create.body["spec"]["template"]["spec"]["containers"][0]["image"], "wf:1");
            assert_eq!(create.body["metadata"]["ownerReferences"][0]["uid"], "uid-we");
            let body = create.body.clone();
            create.respond(201, body);
            let patch = api
                .expect(Method::PATCH, "/apis/remedy.dev/v1alpha1/namespaces/shop/workflowexecutions/rr-1-we/status")
                .await;
            assert_eq!(patch.body["status"]["phase"], "Running");
            assert_eq!(patch.body["status"]["jobName"], "rr-1-we");
            patch.respond(200, serde_json::to_value(we()).unwrap());
        });
        reconcile(Arc::new(we()), ctx).await.unwrap();
        server.await.unwrap();
        let events = ds.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, "workflowexecution.workflow.started");
    }

    #[tokio::test]
    async fn failed_job_fails_the_execution() {
        let ds = FakeDatastorage::start().await;
        let (client, mut api) = MockApi::pair();
        let ctx = Arc::new(Context { client, audit: AuditClient::new(&ds.url).unwrap() });
        let mut running = we();
        running.status = Some(WorkflowExecutionStatus {
            phase: Some(WorkflowExecutionPhase::Running),
            job_name: Some("rr-1-we".into()),
            start_time: Some("2026-01-01T00:00:00Z".into()),
            message: Some("job created".into()),
            ..Default::default()
        });
        let job = serde_json::json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "rr-1-we", "namespace": "shop"},
            "status": {"failed": 1, "conditions": [{"type": "Failed", "status": "True",
                "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}});
        let server = tokio::spawn(async move {
            api.expect(Method::GET, "/apis/batch/v1/namespaces/shop/jobs/rr-1-we").await.respond(200, job);
            let patch = api
                .expect(Method::PATCH, "/apis/remedy.dev/v1alpha1/namespaces/shop/workflowexecutions/rr-1-we/status")
                .await;
            assert_eq!(patch.body["status"]["phase"], "Failed");
            assert!(patch.body["status"]["message"].as_str().unwrap().starts_with("BackoffLimitExceeded"));
            patch.respond(200, serde_json::to_value(we()).unwrap());
        });
        reconcile(Arc::new(running), ctx).await.unwrap();
        server.await.unwrap();
        let events = ds.events();
        assert_eq!(events[0].event_type, "workflowexecution.workflow.failed");
        assert_eq!(events[0].outcome, Outcome::Failure);
    }
}
