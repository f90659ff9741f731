//! One reconcile pass over a RemediationRequest: read the children, apply the [`plan`].

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    runtime::controller::Action,
};
use remedy_api::{
    RemediationRequest, RemediationRequestStatus, SignalProcessing, WorkflowExecution, WorkflowTemplate,
    audit::{AuditEvent, Outcome},
    audit_client::AuditClient,
    now_rfc3339,
    runtime::{ReconcileError, is_api_code},
};
use serde_json::json;

use crate::plan::{plan, sp_name, we_name};

/// What the controller needs.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Datastorage audit client.
    pub audit: AuditClient,
    /// Workflow for requests that name none.
    pub default_workflow: Option<WorkflowTemplate>,
}

/// Safety net: re-check unfinished requests this often even without events.
const RESYNC: Duration = Duration::from_secs(300);

/// One reconcile pass.
pub async fn reconcile(rr: Arc<RemediationRequest>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let ns = rr.namespace().context("RemediationRequest without namespace")?;
    let name = rr.name_any();
    let sps: Api<SignalProcessing> = Api::namespaced(ctx.client.clone(), &ns);
    let wes: Api<WorkflowExecution> = Api::namespaced(ctx.client.clone(), &ns);
    let sp = sps.get_opt(&sp_name(&name)).await.context("reading SignalProcessing")?;
    let we = wes.get_opt(&we_name(&name)).await.context("reading WorkflowExecution")?;
    let p = plan(&rr, sp.as_ref(), we.as_ref(), ctx.default_workflow.as_ref());

    if let Some(spec) = p.create_sp {
        let child = SignalProcessing { metadata: child_meta(&rr, sp_name(&name)), spec, status: None };
        create(&sps, &child).await?;
    }
    if let Some(spec) = p.create_we {
        let child = WorkflowExecution { metadata: child_meta(&rr, we_name(&name)), spec, status: None };
        create(&wes, &child).await?;
    }
    if let Some(status) = p.status {
        let was_terminal = rr.status.as_ref().and_then(|s| s.phase).is_some_and(|p| p.is_terminal());
        if !was_terminal && let Some(event) = terminal_event(&rr, &status) {
            ctx.audit.send(&event).await.context("sending audit event")?;
        }
        let api: Api<RemediationRequest> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({ "status": status })))
            .await
            .with_context(|| format!("patching status of {ns}/{name}"))?;
        tracing::info!(namespace = %ns, %name, phase = ?status.phase, "remediation progressed");
        if status.phase.is_some_and(|p| p.is_terminal()) {
            return Ok(Action::await_change());
        }
    }
    Ok(Action::requeue(RESYNC))
}

fn child_meta(rr: &RemediationRequest, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: rr.namespace(),
        owner_references: rr.controller_owner_ref(&()).map(|o| vec![o]),
        labels: Some([("remedy.dev/remediation-request".to_owned(), rr.name_any())].into()),
        ..Default::default()
    }
}

async fn create<K>(api: &Api<K>, obj: &K) -> anyhow::Result<()>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(e) if is_api_code(&e, 409) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {}", obj.meta().name.as_deref().unwrap_or_default())),
    }
}

/// The audit event for a request reaching a terminal phase (id from the UID, so retries
/// are stored once); `None` for non-terminal statuses.
pub fn terminal_event(rr: &RemediationRequest, status: &RemediationRequestStatus) -> Option<AuditEvent> {
    let phase = status.phase.filter(|p| p.is_terminal())?;
    let (kind, outcome) = match phase {
        remedy_api::RemediationPhase::Completed => ("completed", Outcome::Success),
        _ => ("failed", Outcome::Failure),
    };
    Some(AuditEvent {
        event_id: format!("orchestrator-{}-{kind}", rr.uid().unwrap_or_default()),
        event_type: format!("orchestrator.remediation.{kind}"),
        event_timestamp: status.completion_time.clone().unwrap_or_else(now_rfc3339),
        correlation_id: rr.name_any(),
        actor: "remediationorchestrator".to_owned(),
        namespace: rr.namespace(),
        resource: Some(format!("RemediationRequest/{}", rr.name_any())),
        outcome,
        data: json!({
            "environment": status.environment,
            "priority": status.priority,
            "message": status.message,
            "signal_name": rr.spec.signal_name,
        }),
    })
}

#[cfg(test)]
mod io_tests {
    use super::*;
    use http::Method;
    use remedy_api::{
        RemediationPhase, RemediationRequestSpec, SignalProcessingPhase, SignalProcessingStatus,
        WorkflowExecutionPhase, WorkflowExecutionStatus,
        testing::{FakeDatastorage, MockApi},
    };

    const BASE: &str = "/apis/remedy.dev/v1alpha1/namespaces/shop";

    fn rr(phase: Option<RemediationPhase>) -> RemediationRequest {
        let mut rr = RemediationRequest::new(
            "rr-1",
            RemediationRequestSpec {
                signal_fingerprint: "f".into(),
                signal_name: "HighCPU".into(),
                severity: "critical".into(),
                target_namespace: "shop".into(),
                ..Default::default()
            },
        );
        rr.metadata.namespace = Some("shop".into());
        rr.metadata.uid = Some("uid-rr".into());
        rr.status = phase.map(|p| RemediationRequestStatus { phase: Some(p), ..Default::default() });
        rr
    }

    async fn context(ds: &FakeDatastorage) -> (Arc<Context>, MockApi) {
        let (client, api) = MockApi::pair();
        let default_workflow = Some(WorkflowTemplate { image: "wf".into(), command: vec![] });
        let ctx = Context { client, audit: AuditClient::new(&ds.url).unwrap(), default_workflow };
        (Arc::new(ctx), api)
    }

    #[tokio::test]
    async fn new_request_gets_an_owned_signal_processing() {
        let ds = FakeDatastorage::start().await;
        let (ctx, mut api) = context(&ds).await;
        let server = tokio::spawn(async move {
            api.expect(Method::GET, &format!("{BASE}/signalprocessings/rr-1-sp")).await.respond_status(404, "NotFound");
            api.expect(Method::GET, &format!("{BASE}/workflowexecutions/rr-1-we"))
                .await
                .respond_status(404, "NotFound");
            let create = api.expect(Method::POST, &format!("{BASE}/signalprocessings")).await;
            let owner = &create.body["metadata"]["ownerReferences"][0];
            assert_eq!((owner["kind"].as_str(), owner["uid"].as_str()), (Some("RemediationRequest"), Some("uid-rr")));
            assert_eq!(owner["controller"], true);
            assert_eq!(create.body["spec"]["severity"], "critical");
            let body = create.body.clone();
            create.respond(201, body);
            let patch = api.expect(Method::PATCH, &format!("{BASE}/remediationrequests/rr-1/status")).await;
            assert_eq!(patch.body["status"]["phase"], "Processing");
            assert_eq!(patch.body["status"]["signalProcessingRef"], "rr-1-sp");
            patch.respond(200, serde_json::to_value(rr(Some(RemediationPhase::Processing))).unwrap());
        });
        reconcile(Arc::new(rr(None)), ctx).await.unwrap();
        server.await.unwrap();
        assert!(ds.events().is_empty());
    }

    #[tokio::test]
    async fn finished_workflow_completes_the_request_with_an_audit_event() {
        let ds = FakeDatastorage::start().await;
        let (ctx, mut api) = context(&ds).await;
        let mut sp = SignalProcessing::new("rr-1-sp", Default::default());
        sp.status = Some(SignalProcessingStatus {
            phase: Some(SignalProcessingPhase::Completed),
            environment: Some("production".into()),
            priority: Some("P0".into()),
            ..Default::default()
        });
        let mut we = WorkflowExecution::new("rr-1-we", Default::default());
        we.status =
            Some(WorkflowExecutionStatus { phase: Some(WorkflowExecutionPhase::Succeeded), ..Default::default() });
        let server = tokio::spawn(async move {
            api.expect(Method::GET, &format!("{BASE}/signalprocessings/rr-1-sp"))
                .await
                .respond(200, serde_json::to_value(sp).unwrap());
            api.expect(Method::GET, &format!("{BASE}/workflowexecutions/rr-1-we"))
                .await
                .respond(200, serde_json::to_value(we).unwrap());
            let patch = api.expect(Method::PATCH, &format!("{BASE}/remediationrequests/rr-1/status")).await;
            assert_eq!(patch.body["status"]["phase"], "Completed");
            assert_eq!(patch.body["status"]["priority"], "P0");
            patch.respond(200, serde_json::to_value(rr(Some(RemediationPhase::Completed))).unwrap());
        });
        let action = reconcile(Arc::new(rr(Some(RemediationPhase::Executing))), ctx).await.unwrap();
        assert_eq!(action, Action::await_change());
        server.await.unwrap();
        let events = ds.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, "orchestrator.remediation.completed");
        assert_eq!(events[0].event_id, "orchestrator-uid-rr-completed");
    }
}
