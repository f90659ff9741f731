//! RemediationOrchestrator specs: a RemediationRequest driven through its SignalProcessing and
//! WorkflowExecution children to an outcome, with the real child controllers running.

use std::time::Duration;

use kube::Api;
use kube::api::{DeleteParams, PostParams};
use remedy_api::{
    RemediationPhase, RemediationRequest, RemediationRequestSpec, SignalProcessing, WorkflowExecution, WorkflowTemplate,
};
use remedy_e2e::{Env, audit_event, eventually, image_of, namespace, restart};

async fn request(env: &Env, target: &str, workflow: Option<WorkflowTemplate>) -> (Api<RemediationRequest>, String) {
    let api: Api<RemediationRequest> = Api::namespaced(env.client().await, &env.namespace);
    let name = env.unique("rr");
    let spec = RemediationRequestSpec {
        signal_fingerprint: "e".repeat(64),
        signal_name: "PodCrashLooping".into(),
        severity: "critical".into(),
        target_namespace: target.into(),
        workflow,
        ..Default::default()
    };
    api.create(&PostParams::default(), &RemediationRequest::new(&name, spec)).await.unwrap();
    (api, name)
}

async fn outcome(api: &Api<RemediationRequest>, name: &str) -> RemediationRequest {
    eventually(&format!("{name} to finish"), Duration::from_secs(120), || async {
        let rr = api.get(name).await.ok()?;
        rr.status.as_ref()?.phase?.is_terminal().then_some(rr)
    })
    .await
}

async fn production(env: &Env) -> String {
    let name = env.unique("shop");
    namespace(env, &env.client().await, &name, &[("environment", "production")]).await;
    name
}

#[tokio::test]
async fn a_request_runs_through_both_children_to_completion() {
    let env = Env::get();
    let target = production(&env).await;
    let (api, name) = request(&env, &target, None).await;
    let rr = outcome(&api, &name).await;
    let status = rr.status.unwrap();
    assert_eq!(status.phase, Some(RemediationPhase::Completed), "{:?}", status.message);
    assert_eq!((status.environment.as_deref(), status.priority.as_deref()), (Some("production"), Some("P0")));
    let client = env.client().await;
    let sp =
        Api::<SignalProcessing>::namespaced(client.clone(), &env.namespace).get(&format!("{name}-sp")).await.unwrap();
    let we = Api::<WorkflowExecution>::namespaced(client, &env.namespace).get(&format!("{name}-we")).await.unwrap();
    for owners in [sp.metadata.owner_references.unwrap(), we.metadata.owner_references.unwrap()] {
        assert_eq!(owners[0].name, name);
        assert_eq!(owners[0].controller, Some(true));
    }
    assert_eq!(status.signal_processing_ref.as_deref(), Some(format!("{name}-sp").as_str()));
    assert_eq!(status.workflow_execution_ref.as_deref(), Some(format!("{name}-we").as_str()));
}

#[tokio::test]
async fn a_failing_workflow_fails_the_request() {
    let env = Env::get();
    let image = image_of(&env, &env.client().await, "workflowexecution").await;
    let target = production(&env).await;
    let workflow = WorkflowTemplate { image, command: vec!["/bin/sh".into(), "-c".into(), "exit 2".into()] };
    let (api, name) = request(&env, &target, Some(workflow)).await;
    assert_eq!(outcome(&api, &name).await.status.unwrap().phase, Some(RemediationPhase::Failed));
    audit_event(&env, &name, "orchestrator.remediation.failed").await;
}

#[tokio::test]
async fn a_request_for_a_missing_namespace_fails_in_signal_processing() {
    let env = Env::get();
    let (api, name) = request(&env, &env.unique("gone"), None).await;
    let rr = outcome(&api, &name).await;
    assert_eq!(rr.status.as_ref().unwrap().phase, Some(RemediationPhase::Failed));
    let we = Api::<WorkflowExecution>::namespaced(env.client().await, &env.namespace)
        .get_opt(&format!("{name}-we"))
        .await
        .unwrap();
    assert!(we.is_none(), "a workflow ran for a failed classification");
}

#[tokio::test]
async fn completion_is_audited_under_the_request_name() {
    let env = Env::get();
    let target = production(&env).await;
    let (api, name) = request(&env, &target, None).await;
    outcome(&api, &name).await;
    let event = audit_event(&env, &name, "orchestrator.remediation.completed").await;
    assert_eq!(event["actor"], "remediationorchestrator");
    audit_event(&env, &name, "signalprocessing.classification.completed").await;
}

#[tokio::test]
async fn deleting_a_request_deletes_its_children() {
    let env = Env::get();
    let target = production(&env).await;
    let (api, name) = request(&env, &target, None).await;
    outcome(&api, &name).await;
    api.delete(&name, &DeleteParams::foreground()).await.unwrap();
    let sps = Api::<SignalProcessing>::namespaced(env.client().await, &env.namespace);
    eventually("the SignalProcessing child to be collected", Duration::from_secs(60), || async {
        sps.get_opt(&format!("{name}-sp")).await.ok()?.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_request_survives_an_orchestrator_restart() {
    let env = Env::get();
    let target = production(&env).await;
    let (api, name) = request(&env, &target, None).await;
    restart(&env, &env.client().await, "remediationorchestrator").await;
    assert_eq!(outcome(&api, &name).await.status.unwrap().phase, Some(RemediationPhase::Completed));
}
