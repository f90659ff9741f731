//! DataStorage specs: the audit event API as deployed, over its exposed port.

use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use remedy_api::audit::{AuditEvent, Outcome};
use remedy_e2e::{Env, eventually, http};
use serde_json::{Value, json};

fn event(env: &Env, correlation: &str) -> AuditEvent {
    AuditEvent {
        event_id: env.unique("evt"),
        event_type: "e2e.spec.recorded".into(),
        event_timestamp: remedy_api::now_rfc3339(),
        correlation_id: correlation.into(),
        actor: "e2e".into(),
        namespace: Some(env.namespace.clone()),
        resource: Some("Pod/web-0".into()),
        outcome: Outcome::Success,
        data: json!({"note": "from the datastorage spec"}),
    }
}

/// Stores a new event under a fresh correlation id.
async fn store_new(env: &Env, base: &str) -> AuditEvent {
    let sent = event(env, &env.unique("corr"));
    let response = http().post(format!("{base}/api/v1/audit/events")).json(&sent).send().await.unwrap();
    assert_eq!(response.status(), 201);
    sent
}

async fn query(base: &str, correlation: &str) -> Vec<AuditEvent> {
    let body: Value = http()
        .get(format!("{base}/api/v1/audit/events"))
        .query(&[("correlation_id", correlation)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    serde_json::from_value(body["events"].clone()).unwrap()
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let base = Env::get().url("datastorage");
    for path in ["/healthz", "/readyz"] {
        let status = http().get(format!("{base}{path}")).send().await.unwrap().status();
        assert_eq!(status, 200, "{path}");
    }
}

#[tokio::test]
async fn a_stored_event_is_found_by_its_correlation_id() {
    let env = Env::get();
    let base = env.url("datastorage");
    let sent = store_new(&env, &base).await;
    let found = query(&base, &sent.correlation_id).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].event_id, sent.event_id);
    assert_eq!(found[0].data, sent.data);
}

#[tokio::test]
async fn a_repeated_event_id_is_stored_once() {
    let env = Env::get();
    let base = env.url("datastorage");
    let correlation = env.unique("corr");
    let sent = event(&env, &correlation);
    let url = format!("{base}/api/v1/audit/events");
    assert_eq!(http().post(&url).json(&sent).send().await.unwrap().status(), 201);
    let again = http().post(&url).json(&sent).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap()["created"], false);
    assert_eq!(query(&base, &correlation).await.len(), 1);
}

#[tokio::test]
async fn malformed_events_are_refused_and_not_stored() {
    let env = Env::get();
    let base = env.url("datastorage");
    let correlation = env.unique("corr");
    let url = format!("{base}/api/v1/audit/events");
    let broken =
        http().post(&url).header("content-type", "application/json").body("{\"event_id\": ").send().await.unwrap();
    assert_eq!(broken.status(), 400);
    assert!(broken.json::<Value>().await.unwrap()["error"].is_string());
    let mut missing = serde_json::to_value(event(&env, &correlation)).unwrap();
    missing.as_object_mut().unwrap().remove("actor");
    assert_eq!(http().post(&url).json(&missing).send().await.unwrap().status(), 400);
    assert!(query(&base, &correlation).await.is_empty());
}

#[tokio::test]
async fn events_filter_by_type() {
    let env = Env::get();
    let base = env.url("datastorage");
    let correlation = env.unique("corr");
    let url = format!("{base}/api/v1/audit/events");
    let mut other = event(&env, &correlation);
    other.event_type = "e2e.spec.other".into();
    for e in [event(&env, &correlation), other] {
        assert_eq!(http().post(&url).json(&e).send().await.unwrap().status(), 201);
    }
    let body: Value = http()
        .get(&url)
        .query(&[("correlation_id", correlation.as_str()), ("event_type", "e2e.spec.other")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let types: Vec<&str> =
        body["events"].as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert_eq!(types, ["e2e.spec.other"]);
}

#[tokio::test]
async fn the_migration_job_ran_once_and_succeeded() {
    let env = Env::get();
    let jobs: Api<Job> = Api::namespaced(env.client().await, &env.namespace);
    let job = eventually("the migrate job", Duration::from_secs(10), || async {
        jobs.get_opt("datastorage-migrate").await.ok().flatten()
    })
    .await;
    let status = job.status.unwrap_or_default();
    assert_eq!(status.succeeded, Some(1));
    assert_eq!(status.failed.unwrap_or(0), 0);
}

/// A second migration Job, as an upgrade or a re-run deploy starts against a database at head:
/// it succeeds, and the data stored before it is untouched.
#[tokio::test]
async fn migrating_an_already_migrated_database_keeps_its_data() {
    let env = Env::get();
    let base = env.url("datastorage");
    let sent = store_new(&env, &base).await;

    let jobs: Api<Job> = Api::namespaced(env.client().await, &env.namespace);
    let first = jobs.get("datastorage-migrate").await.unwrap();
    let mut template = first.spec.unwrap().template;
    // The labels the Job controller added for the first Job's selector.
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.retain(|k, _| k != "controller-uid" && k != "job-name" && !k.starts_with("batch.kubernetes.io/"));
    }
    let name = env.unique("migrate-again");
    let again = Job {
        metadata: ObjectMeta { name: Some(name.clone()), ..ObjectMeta::default() },
        spec: Some(JobSpec { backoff_limit: Some(0), template, ..JobSpec::default() }),
        status: None,
    };
    jobs.create(&PostParams::default(), &again).await.unwrap();
    let status = eventually("the second migration Job to finish", Duration::from_secs(90), || async {
        let status = jobs.get(&name).await.ok()?.status?;
        (status.succeeded.unwrap_or(0) + status.failed.unwrap_or(0) > 0).then_some(status)
    })
    .await;
    let background =
        DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..DeleteParams::default() };
    jobs.delete(&name, &background).await.unwrap();
    assert_eq!((status.succeeded, status.failed.unwrap_or(0)), (Some(1), 0), "the second migration failed");

    let found = query(&base, &sent.correlation_id).await;
    assert_eq!(found.iter().map(|e| &e.event_id).collect::<Vec<_>>(), [&sent.event_id], "events lost by migrating");
    let ready = http().get(format!("{base}/readyz")).send().await.unwrap().status();
    assert_eq!(ready, 200);
}
