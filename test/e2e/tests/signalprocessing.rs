//! SignalProcessing specs: classification from the target namespace's labels, priority from
//! severity and environment, the audit event, and a controller restart.

use std::time::Duration;

use kube::Api;
use kube::api::PostParams;
use remedy_api::{SignalProcessing, SignalProcessingPhase, SignalProcessingSpec};
use remedy_e2e::{Env, audit_event, eventually, namespace, restart};

async fn classify(env: &Env, target: &str, severity: &str) -> SignalProcessing {
    let client = env.client().await;
    let api: Api<SignalProcessing> = Api::namespaced(client, &env.namespace);
    let name = env.unique("sp");
    let spec = SignalProcessingSpec {
        remediation_request_ref: format!("{name}-rr"),
        signal_fingerprint: "f".repeat(64),
        severity: severity.to_owned(),
        target_namespace: target.to_owned(),
    };
    api.create(&PostParams::default(), &SignalProcessing::new(&name, spec)).await.unwrap();
    eventually(&format!("{name} to finish"), Duration::from_secs(60), || async {
        let sp = api.get(&name).await.ok()?;
        let phase = sp.status.as_ref()?.phase?;
        (phase != SignalProcessingPhase::Pending).then_some(sp)
    })
    .await
}

async fn labelled(env: &Env, labels: &[(&str, &str)]) -> String {
    let name = env.unique("target");
    namespace(env, &env.client().await, &name, labels).await;
    name
}

fn outcome(sp: &SignalProcessing) -> (SignalProcessingPhase, String, String) {
    let status = sp.status.clone().unwrap();
    (status.phase.unwrap(), status.environment.unwrap_or_default(), status.priority.unwrap_or_default())
}

#[tokio::test]
async fn a_critical_signal_in_production_is_p0() {
    let env = Env::get();
    let target = labelled(&env, &[("environment", "production")]).await;
    let sp = classify(&env, &target, "critical").await;
    assert_eq!(outcome(&sp), (SignalProcessingPhase::Completed, "production".into(), "P0".into()));
    assert!(sp.status.unwrap().completion_time.is_some());
}

#[tokio::test]
async fn a_warning_in_staging_is_p2() {
    let env = Env::get();
    let target = labelled(&env, &[("remedy.dev/environment", "stg")]).await;
    let sp = classify(&env, &target, "warning").await;
    assert_eq!(outcome(&sp), (SignalProcessingPhase::Completed, "staging".into(), "P2".into()));
}

#[tokio::test]
async fn a_namespace_without_labels_is_unknown() {
    let env = Env::get();
    let target = labelled(&env, &[]).await;
    let sp = classify(&env, &target, "critical").await;
    assert_eq!(outcome(&sp), (SignalProcessingPhase::Completed, "unknown".into(), "P1".into()));
}

#[tokio::test]
async fn a_missing_target_namespace_fails_the_classification() {
    let env = Env::get();
    let sp = classify(&env, &env.unique("nowhere"), "critical").await;
    let status = sp.status.unwrap();
    assert_eq!(status.phase, Some(SignalProcessingPhase::Failed));
    assert!(status.message.is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn each_classification_is_audited() {
    let env = Env::get();
    let target = labelled(&env, &[("env", "dev")]).await;
    let sp = classify(&env, &target, "info").await;
    let event = audit_event(&env, &sp.spec.remediation_request_ref, "signalprocessing.classification.completed").await;
    assert_eq!(event["actor"], "signalprocessing");
}

#[tokio::test]
async fn classification_survives_a_controller_restart() {
    let env = Env::get();
    let client = env.client().await;
    let target = labelled(&env, &[("environment", "production")]).await;
    restart(&env, &client, "signalprocessing").await;
    let sp = classify(&env, &target, "warning").await;
    assert_eq!(outcome(&sp), (SignalProcessingPhase::Completed, "production".into(), "P1".into()));
}
