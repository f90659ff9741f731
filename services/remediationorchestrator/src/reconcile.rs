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
            "signalName": rr.spec.signal_name,
        }),
    })
}
