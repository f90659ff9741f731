//! Reconciliation of SignalProcessing resources: empty status -> Pending -> Completed (or
//! Failed when the target namespace does not exist), with an audit event at the end.

use std::{collections::BTreeMap, sync::Arc};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use remedy_api::{
    SignalProcessing, SignalProcessingPhase, SignalProcessingStatus,
    audit::{AuditEvent, Outcome},
    audit_client::AuditClient,
    now_rfc3339,
    runtime::ReconcileError,
};
use serde_json::json;

use crate::classify::{environment, priority};

/// What the controller needs.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Datastorage audit client.
    pub audit: AuditClient,
}

/// The next step for a SignalProcessing, decided from its status alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Not seen yet: record Pending.
    MarkPending,
    /// Pending: classify.
    Classify,
    /// Completed or Failed: nothing to do.
    Done,
}

/// Decides the next step.
pub fn next_step(sp: &SignalProcessing) -> Step {
    match sp.status.as_ref().and_then(|s| s.phase) {
        None => Step::MarkPending,
        Some(SignalProcessingPhase::Pending) => Step::Classify,
        Some(SignalProcessingPhase::Completed | SignalProcessingPhase::Failed) => Step::Done,
    }
}

/// The final status given the target namespace's labels (`None`: the namespace is missing).
pub fn classify(sp: &SignalProcessing, namespace_labels: Option<&BTreeMap<String, String>>) -> SignalProcessingStatus {
    let now = Some(now_rfc3339());
    match namespace_labels {
        None => SignalProcessingStatus {
            phase: Some(SignalProcessingPhase::Failed),
            message: Some(format!("namespace {} not found", sp.spec.target_namespace)),
            completion_time: now,
            ..Default::default()
        },
        Some(labels) => {
            let env = environment(labels);
            let prio = priority(&sp.spec.severity, env);
            SignalProcessingStatus {
                phase: Some(SignalProcessingPhase::Completed),
                environment: Some(env.as_str().to_owned()),
                priority: Some(prio.to_owned()),
                message: Some(format!("severity {:?} in {} is {prio}", sp.spec.severity, env.as_str())),
                completion_time: now,
            }
        }
    }
}

/// The audit event for a finished classification. Its id derives from the resource's UID,
/// so a retried delivery is stored once.
pub fn audit_event(sp: &SignalProcessing, status: &SignalProcessingStatus) -> AuditEvent {
    let completed = status.phase == Some(SignalProcessingPhase::Completed);
    AuditEvent {
        event_id: format!("signalprocessing-{}-classified", sp.uid().unwrap_or_default()),
        event_type: "signalprocessing.classification.completed".to_owned(),
        event_timestamp: status.completion_time.clone().unwrap_or_else(now_rfc3339),
        correlation_id: sp.spec.remediation_request_ref.clone(),
        actor: "signalprocessing".to_owned(),
        namespace: sp.namespace(),
        resource: Some(format!("SignalProcessing/{}", sp.name_any())),
        outcome: if completed { Outcome::Success } else { Outcome::Failure },
        data: json!({
            "environment": status.environment,
            "priority": status.priority,
            "severity": sp.spec.severity,
            "target_namespace": sp.spec.target_namespace,
            "message": status.message,
        }),
    }
}

/// One reconcile pass.
pub async fn reconcile(sp: Arc<SignalProcessing>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let ns = sp.namespace().context("SignalProcessing without namespace")?;
    let api: Api<SignalProcessing> = Api::namespaced(ctx.client.clone(), &ns);
    match next_step(&sp) {
        Step::Done => Ok(Action::await_change()),
        Step::MarkPending => {
            let status = SignalProcessingStatus { phase: Some(SignalProcessingPhase::Pending), ..Default::default() };
            patch_status(&api, &sp.name_any(), &status).await?;
            Ok(Action::await_change())
        }
        Step::Classify => {
            let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
            let target = namespaces
                .get_opt(&sp.spec.target_namespace)
                .await
                .with_context(|| format!("reading namespace {}", sp.spec.target_namespace))?;
            let status = classify(&sp, target.as_ref().map(|n| n.labels()));
            ctx.audit.send(&audit_event(&sp, &status)).await.context("sending audit event")?;
            patch_status(&api, &sp.name_any(), &status).await?;
            tracing::info!(namespace = %ns, name = %sp.name_any(), phase = ?status.phase, priority = ?status.priority, "classified");
            Ok(Action::await_change())
        }
    }
}

async fn patch_status(api: &Api<SignalProcessing>, name: &str, status: &SignalProcessingStatus) -> anyhow::Result<()> {
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({ "status": status })))
        .await
        .with_context(|| format!("patching status of {name}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use remedy_api::SignalProcessingSpec;

    fn sp(phase: Option<SignalProcessingPhase>) -> SignalProcessing {
        let mut sp = SignalProcessing::new(
            "rr-1-sp",
            SignalProcessingSpec {
                remediation_request_ref: "rr-1".into(),
                signal_fingerprint: "f".into(),
                severity: "critical".into(),
                target_namespace: "shop".into(),
            },
        );
        sp.metadata.namespace = Some("shop".into());
        sp.metadata.uid = Some("uid-1".into());
        sp.status = phase.map(|p| SignalProcessingStatus { phase: Some(p), ..Default::default() });
        sp
    }

    #[test]
    fn steps_follow_the_phase() {
        assert_eq!(next_step(&sp(None)), Step::MarkPending);
        assert_eq!(next_step(&sp(Some(SignalProcessingPhase::Pending))), Step::Classify);
        assert_eq!(next_step(&sp(Some(SignalProcessingPhase::Completed))), Step::Done);
        assert_eq!(next_step(&sp(Some(SignalProcessingPhase::Failed))), Step::Done);
    }

    #[test]
    fn classification_completes_with_priority() {
        let labels = BTreeMap::from([("environment".to_owned(), "production".to_owned())]);
        let s = classify(&sp(Some(SignalProcessingPhase::Pending)), Some(&labels));
        assert_eq!(s.phase, Some(SignalProcessingPhase::Completed));
        assert_eq!(s.environment.as_deref(), Some("production"));
        assert_eq!(s.priority.as_deref(), Some("P0"));
        assert!(s.completion_time.is_some());
        let e = audit_event(&sp(None), &s);
        assert_eq!(e.event_id, "signalprocessing-uid-1-classified");
        assert_eq!(e.correlation_id, "rr-1");
        assert_eq!(e.outcome, Outcome::Success);
        assert_eq!(e.data["priority"], "P0");
        assert_eq!(e.validate(), Ok(()));
    }

    #[test]
    fn missing_namespace_fails() {
        let s = classify(&sp(Some(SignalProcessingPhase::Pending)), None);
        assert_eq!(s.phase, Some(SignalProcessingPhase::Failed));
        assert!(s.message.unwrap().contains("shop"));
        assert_eq!(audit_event(&sp(None), &classify(&sp(None), None)).outcome, Outcome::Failure);
    }
}

#[cfg(test)]
mod io_tests {
    use super::*;
    use http::Method;
    use k8s_openapi::api::core::v1::Namespace;
    use remedy_api::{
        SignalProcessingSpec,
        testing::{FakeDatastorage, MockApi},
    };

    const SP_STATUS: &str = "/apis/remedy.dev/v1alpha1/namespaces/shop/signalprocessings/rr-1-sp/status";

    fn pending() -> Arc<SignalProcessing> {
        let mut sp = SignalProcessing::new(
            "rr-1-sp",
            SignalProcessingSpec {
                remediation_request_ref: "rr-1".into(),
                signal_fingerprint: "f".into(),
                severity: "warning".into(),
                target_namespace: "shop".into(),
            },
        );
        sp.metadata.namespace = Some("shop".into());
        sp.metadata.uid = Some("uid-1".into());
        sp.status = Some(SignalProcessingStatus { phase: Some(SignalProcessingPhase::Pending), ..Default::default() });
        Arc::new(sp)
    }

    fn namespace(labels: &[(&str, &str)]) -> serde_json::Value {
        let mut ns = Namespace::default();
        ns.metadata.name = Some("shop".into());
        ns.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        serde_json::to_value(ns).unwrap()
    }

    #[tokio::test]
    async fn pending_is_classified_audited_and_completed() {
        let ds = FakeDatastorage::start().await;
        let (client, mut api) = MockApi::pair();
        let ctx = Arc::new(Context { client, audit: AuditClient::new(&ds.url).unwrap() });
        let sp = pending();
        let server = tokio::spawn(async move {
            api.expect(Method::GET, "/api/v1/namespaces/shop").await.respond(200, namespace(&[("env", "staging")]));
            let patch = api.expect(Method::PATCH, SP_STATUS).await;
            assert_eq!(patch.body["status"]["phase"], "Completed");
            assert_eq!(patch.body["status"]["environment"], "staging");
            assert_eq!(patch.body["status"]["priority"], "P2");
            let body = patch.body.clone();
            patch.respond(200, serde_json::to_value(&*pending()).unwrap());
            body
        });
        let action = reconcile(sp, ctx).await.unwrap();
        assert_eq!(action, Action::await_change());
        server.await.unwrap();
        let events = ds.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, "signalprocessing.classification.completed");
        assert_eq!(events[0].data["priority"], "P2");
    }

    #[tokio::test]
    async fn unreachable_datastorage_leaves_status_pending_for_a_retry() {
        let ds = FakeDatastorage::start().await;
        ds.answer(503);
        let (client, mut api) = MockApi::pair();
        let ctx = Arc::new(Context { client, audit: AuditClient::new(&ds.url).unwrap() });
        let server = tokio::spawn(async move {
            api.expect(Method::GET, "/api/v1/namespaces/shop").await.respond(200, namespace(&[]));
            assert!(api.next().await.is_none(), "no status write after a failed audit");
        });
        let err = reconcile(pending(), ctx).await.unwrap_err();
        assert!(err.to_string().contains("audit"), "{err}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn new_resource_is_marked_pending() {
        let ds = FakeDatastorage::start().await;
        let (client, mut api) = MockApi::pair();
        let ctx = Arc::new(Context { client, audit: AuditClient::new(&ds.url).unwrap() });
        let mut sp = (*pending()).clone();
        sp.status = None;
        let server = tokio::spawn(async move {
            let patch = api.expect(Method::PATCH, SP_STATUS).await;
            assert_eq!(patch.body, serde_json::json!({"status": {"phase": "Pending"}}));
            patch.respond(200, serde_json::to_value(&*pending()).unwrap());
        });
        reconcile(Arc::new(sp), ctx).await.unwrap();
        server.await.unwrap();
        assert!(ds.events().is_empty());
    }
}
