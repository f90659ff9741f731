//! Gateway specs: Alertmanager webhooks in, RemediationRequests and audit events out.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::ListParams;
use remedy_api::RemediationRequest;
use remedy_e2e::{Env, audit_event, audit_events, eventually, http, restart, scale};
use serde_json::{Value, json};
use tokio::sync::RwLock;

/// Specs that restart the gateway hold this for writing; the others for reading, so no
/// request meets a restarting gateway.
static GATEWAY: RwLock<()> = RwLock::const_new(());

/// Likewise for datastorage: the outage spec holds it for writing, specs reading audit events
/// for reading. Always taken after `GATEWAY`.
static DATASTORAGE: RwLock<()> = RwLock::const_new(());

fn alert(name: &str, ns: &str, status: &str) -> Value {
    json!({
        "status": status,
        "labels": {"alertname": name, "namespace": ns, "severity": "critical", "pod": "web-0"},
        "annotations": {"summary": "spec alert"},
        "startsAt": "2026-11-26T10:00:00Z",
    })
}

fn webhook(alerts: Vec<Value>) -> Value {
    json!({"version": "4", "status": "firing", "receiver": "remedy", "groupKey": "{}", "alerts": alerts})
}

async fn post(env: &Env, body: &Value) -> (u16, Value) {
    let response =
        http().post(format!("{}/api/v1/signals/prometheus", env.url("gateway"))).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn rrs(env: &Env) -> Api<RemediationRequest> {
    Api::namespaced(env.client().await, &env.namespace)
}

/// The deduplication window the deployed gateway runs with.
async fn dedup_window(env: &Env) -> Duration {
    let deployment = Api::<Deployment>::namespaced(env.client().await, &env.namespace).get("gateway").await.unwrap();
    let containers = deployment.spec.and_then(|s| s.template.spec).map(|s| s.containers).unwrap_or_default();
    let value = containers
        .iter()
        .flat_map(|c| c.env.iter().flatten())
        .find(|e| e.name == "DEDUP_WINDOW_SECONDS")
        .and_then(|e| e.value.as_deref()?.parse().ok())
        .expect("the gateway manifest sets DEDUP_WINDOW_SECONDS");
    Duration::from_secs(value)
}

#[tokio::test]
async fn a_firing_alert_creates_a_remediation_request() {
    let _gateway = GATEWAY.read().await;
    let env = Env::get();
    let name = env.unique("HighMemory");
    let (status, body) = post(&env, &webhook(vec![alert(&name, &env.namespace, "firing")])).await;
    assert_eq!(status, 201, "{body}");
    let result = &body["results"][0];
    assert_eq!(result["status"], "created");
    let rr_name = result["remediation_request"].as_str().unwrap();
    let rr = rrs(&env).await.get(rr_name).await.unwrap();
    assert_eq!(rr.spec.signal_name, name);
    assert_eq!(rr.spec.severity, "critical");
    assert_eq!(rr.spec.target_namespace, env.namespace);
    assert_eq!(rr.spec.signal_fingerprint, result["fingerprint"].as_str().unwrap());
    assert_eq!(rr.status.and_then(|s| s.occurrence_count), Some(1));
}

#[tokio::test]
async fn a_duplicate_inside_the_window_raises_the_occurrence_count() {
    let _gateway = GATEWAY.read().await;
    let env = Env::get();
    let body = webhook(vec![alert(&env.unique("DiskFull"), &env.namespace, "firing")]);
    let (first, created) = post(&env, &body).await;
    assert_eq!(first, 201);
    let (second, duplicate) = post(&env, &body).await;
    assert_eq!(second, 202, "{duplicate}");
    assert_eq!(duplicate["results"][0]["status"], "duplicate");
    let rr_name = created["results"][0]["remediation_request"].as_str().unwrap();
    assert_eq!(duplicate["results"][0]["remediation_request"], rr_name);
    let rr = rrs(&env).await.get(rr_name).await.unwrap();
    assert_eq!(rr.status.and_then(|s| s.occurrence_count), Some(2));
}

#[tokio::test]
async fn after_the_window_a_new_request_is_created() {
    let env = Env::get();
    let window = dedup_window(&env).await;
    let body = webhook(vec![alert(&env.unique("Recurring"), &env.namespace, "firing")]);
    let (status, first) = {
        let _gateway = GATEWAY.read().await;
        post(&env, &body).await
    };
    assert_eq!(status, 201, "{first}");
    // Not holding the gateway meanwhile: a restart does not change the window (it is in Redis).
    tokio::time::sleep(window + Duration::from_secs(1)).await;
    let _gateway = GATEWAY.read().await;
    let (status, second) = post(&env, &body).await;
    assert_eq!(status, 201, "the window ({window:?}) is over, so the signal is new again: {second}");
    let (old, new) =
        (first["results"][0]["remediation_request"].as_str(), second["results"][0]["remediation_request"].as_str());
    assert_ne!(old, new);
    let api = rrs(&env).await;
    for name in [old, new] {
        let rr = api.get(name.unwrap()).await.unwrap();
        assert_eq!(rr.status.and_then(|s| s.occurrence_count), Some(1), "{name:?}");
    }
}

#[tokio::test]
async fn every_alert_of_a_payload_gets_its_own_request() {
    let _gateway = GATEWAY.read().await;
    let env = Env::get();
    let alerts: Vec<Value> = (0..3).map(|_| alert(&env.unique("Burst"), &env.namespace, "firing")).collect();
    let (status, body) = post(&env, &webhook(alerts)).await;
    assert_eq!(status, 201);
    let names: Vec<&str> =
        body["results"].as_array().unwrap().iter().map(|r| r["remediation_request"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 3);
    let api = rrs(&env).await;
    for name in names {
        assert!(api.get_opt(name).await.unwrap().is_some(), "{name} missing");
    }
}

#[tokio::test]
async fn a_resolved_alert_creates_nothing() {
    let _gateway = GATEWAY.read().await;
    let env = Env::get();
    let (status, body) = post(&env, &webhook(vec![alert(&env.unique("Cleared"), &env.namespace, "resolved")])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["status"], "ignored");
    assert_eq!(body["results"][0].get("remediation_request"), None, "{body}");
    let fingerprint = &body["results"][0]["fingerprint"].as_str().unwrap()[..16];
    let selector = format!("remedy.dev/fingerprint={fingerprint}");
    let found = rrs(&env).await.list(&ListParams::default().labels(&selector)).await.unwrap();
    assert!(
        found.items.is_empty(),
        "{selector}: {:?}",
        found.items.iter().map(|r| &r.metadata.name).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn malformed_payloads_answer_400_with_a_reason() {
    let env = Env::get();
    let url = format!("{}/api/v1/signals/prometheus", env.url("gateway"));
    for body in ["{not json", r#"{"version": "4"}"#, r#"{"version": "3", "alerts": []}"#] {
        let response = http().post(&url).header("content-type", "application/json").body(body).send().await.unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let reason: Value = response.json().await.unwrap();
        assert!(reason["error"].as_str().is_some_and(|r| !r.is_empty()), "{body}: {reason}");
    }
}

#[tokio::test]
async fn each_accepted_signal_has_its_audit_event_in_datastorage() {
    let _gateway = GATEWAY.read().await;
    let _datastorage = DATASTORAGE.read().await;
    let env = Env::get();
    let (status, body) = post(&env, &webhook(vec![alert(&env.unique("Audited"), &env.namespace, "firing")])).await;
    assert_eq!(status, 201);
    let correlation = body["results"][0]["remediation_request"].as_str().unwrap().to_owned();
    let events_url = format!("{}/api/v1/audit/events", env.url("datastorage"));
    let events = eventually("the gateway.signal.received audit event", Duration::from_secs(30), || async {
        let found: Value = http()
            .get(&events_url)
            .query(&[("correlation_id", correlation.as_str())])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let events = found["events"].as_array()?.clone();
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event_type"], "gateway.signal.received");
    assert_eq!(events[0]["actor"], "gateway");
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let _gateway = GATEWAY.read().await;
    let env = Env::get();
    let base = env.url("gateway");
    for path in ["/healthz", "/readyz"] {
        assert_eq!(http().get(format!("{base}{path}")).send().await.unwrap().status(), 200, "{path}");
    }
    let metrics = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("# TYPE"), "not Prometheus text: {metrics}");
}

async fn post_raw(env: &Env, body: &str) -> (u16, Value) {
    let response = http()
        .post(format!("{}/api/v1/signals/prometheus", env.url("gateway")))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A 400 whose JSON reason mentions `word`.
async fn rejected(env: &Env, body: &Value, word: &str) {
    let (status, reason) = post_raw(env, &body.to_string()).await;
    assert_eq!(status, 400, "{body} -> {reason}");
    let text = reason["error"].as_str().unwrap_or_default();
    assert!(text.contains(word), "reason {text:?} does not mention {word:?}");
}

#[tokio::test]
async fn an_oversized_payload_answers_413_and_creates_nothing() {
    let _gateway = GATEWAY.read().await;
    let env = Env::get();
    let name = env.unique("Huge");
    let mut big = alert(&name, &env.namespace, "firing");
    big["annotations"]["description"] = "x".repeat(300 * 1024).into();
    let (status, _) = post(&env, &webhook(vec![big])).await;
    assert_eq!(status, 413);
    let rrs = rrs(&env).await.list(&Default::default()).await.unwrap();
    assert!(rrs.items.iter().all(|rr| rr.spec.signal_name != name), "an oversized payload created a request");
}

#[tokio::test]
async fn an_alert_without_alertname_is_rejected() {
    let _gateway = GATEWAY.read().await;
    let env = Env::get();
    let mut a = alert("x", &env.namespace, "firing");
    a["labels"].as_object_mut().unwrap().remove("alertname");
    rejected(&env, &webhook(vec![a]), "alertname").await;
}

#[tokio::test]
async fn an_unknown_alert_status_is_rejected_by_name() {
    let _gateway = GATEWAY.read().await;
    let env = Env::get();
    rejected(&env, &webhook(vec![alert(&env.unique("Odd"), &env.namespace, "pending")]), "pending").await;
}

#[tokio::test]
async fn an_alert_for_a_namespace_that_does_not_exist_is_rejected() {
    let _gateway = GATEWAY.read().await;
    let env = Env::get();
    let missing = env.unique("nowhere");
    rejected(&env, &webhook(vec![alert(&env.unique("Lost"), &missing, "firing")]), &missing).await;
}

#[tokio::test]
async fn only_version_4_payloads_are_accepted() {
    let _gateway = GATEWAY.read().await;
    let env = Env::get();
    let mut body = webhook(vec![alert(&env.unique("Old"), &env.namespace, "firing")]);
    body["version"] = "3".into();
    rejected(&env, &body, "3").await;
}

#[tokio::test]
async fn an_empty_alert_list_is_rejected() {
    let _gateway = GATEWAY.read().await;
    let env = Env::get();
    let (status, _) = post(&env, &webhook(vec![])).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_same_alert_twice_in_one_payload_is_created_then_deduplicated() {
    let _gateway = GATEWAY.read().await;
    let env = Env::get();
    let a = alert(&env.unique("Twice"), &env.namespace, "firing");
    let (status, body) = post(&env, &webhook(vec![a.clone(), a])).await;
    assert_eq!(status, 201, "{body}");
    let statuses: Vec<&str> =
        body["results"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["created", "duplicate"]);
}

#[tokio::test]
async fn the_fingerprint_ignores_label_order() {
    let _gateway = GATEWAY.read().await;
    let env = Env::get();
    let name = env.unique("Ordered");
    let forward = format!(
        r#"{{"version":"4","alerts":[{{"status":"firing","labels":{{"alertname":"{name}","namespace":"{ns}","severity":"warning"}}}}]}}"#,
        ns = env.namespace
    );
    let backward = format!(
        r#"{{"version":"4","alerts":[{{"status":"firing","labels":{{"severity":"warning","namespace":"{ns}","alertname":"{name}"}}}}]}}"#,
        ns = env.namespace
    );
    let (first, a) = post_raw(&env, &forward).await;
    let (second, b) = post_raw(&env, &backward).await;
    assert_eq!((first, second), (201, 202));
    assert_eq!(a["results"][0]["fingerprint"], b["results"][0]["fingerprint"]);
}

#[tokio::test]
async fn the_request_keeps_the_alerts_labels_annotations_and_target() {
    let _gateway = GATEWAY.read().await;
    let env = Env::get();
    let (status, body) = post(&env, &webhook(vec![alert(&env.unique("Detailed"), &env.namespace, "firing")])).await;
    assert_eq!(status, 201);
    let rr = rrs(&env).await.get(body["results"][0]["remediation_request"].as_str().unwrap()).await.unwrap();
    assert_eq!(rr.spec.labels.get("pod").map(String::as_str), Some("web-0"));
    assert_eq!(rr.spec.annotations.get("summary").map(String::as_str), Some("spec alert"));
    let target = rr.spec.target_resource.expect("a target from the pod label");
    assert_eq!((target.kind.as_str(), target.name.as_str()), ("Pod", "web-0"));
    assert_eq!(rr.spec.starts_at.as_deref(), Some("2026-11-26T10:00:00Z"));
}

#[tokio::test]
async fn workflow_annotations_become_the_requests_workflow() {
    let _gateway = GATEWAY.read().await;
    let env = Env::get();
    let mut a = alert(&env.unique("WithWorkflow"), &env.namespace, "firing");
    a["annotations"]["remedy_workflow_image"] = "example/fixer:1".into();
    a["annotations"]["remedy_workflow_command"] = r#"["fix", "--now"]"#.into();
    let (status, body) = post(&env, &webhook(vec![a])).await;
    assert_eq!(status, 201, "{body}");
    let rr = rrs(&env).await.get(body["results"][0]["remediation_request"].as_str().unwrap()).await.unwrap();
    let workflow = rr.spec.workflow.expect("a workflow");
    assert_eq!(workflow.image, "example/fixer:1");
    assert_eq!(workflow.command, ["fix", "--now"]);
}

#[tokio::test]
async fn a_malformed_workflow_command_is_rejected() {
    let _gateway = GATEWAY.read().await;
    let env = Env::get();
    let mut a = alert(&env.unique("BadWorkflow"), &env.namespace, "firing");
    a["annotations"]["remedy_workflow_image"] = "example/fixer:1".into();
    a["annotations"]["remedy_workflow_command"] = "fix --now".into();
    rejected(&env, &webhook(vec![a]), "remedy_workflow_command").await;
}

#[tokio::test]
async fn a_duplicate_has_its_deduplicated_audit_event() {
    let _gateway = GATEWAY.read().await;
    let _datastorage = DATASTORAGE.read().await;
    let env = Env::get();
    let body = webhook(vec![alert(&env.unique("Recurring"), &env.namespace, "firing")]);
    let (_, created) = post(&env, &body).await;
    assert_eq!(post(&env, &body).await.0, 202);
    let correlation = created["results"][0]["remediation_request"].as_str().unwrap();
    let event = audit_event(&env, correlation, "gateway.signal.deduplicated").await;
    assert_eq!(event["data"]["occurrence_count"], 2);
}

fn created_count(metrics: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with("gateway_signals_total") && l.contains(r#"outcome="created""#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_created_signals() {
    let _gateway = GATEWAY.read().await;
    let env = Env::get();
    let url = format!("{}/metrics", env.url("gateway"));
    let before = created_count(&http().get(&url).send().await.unwrap().text().await.unwrap());
    assert_eq!(post(&env, &webhook(vec![alert(&env.unique("Counted"), &env.namespace, "firing")])).await.0, 201);
    let after = created_count(&http().get(&url).send().await.unwrap().text().await.unwrap());
    // Other specs run alongside, so the counter rose by at least this one.
    assert!(after >= before + 1.0, "created went from {before} to {after}");
}

#[tokio::test]
async fn deduplication_survives_a_gateway_restart() {
    let _gateway = GATEWAY.write().await;
    let env = Env::get();
    let window = dedup_window(&env).await;
    let body = webhook(vec![alert(&env.unique("Persistent"), &env.namespace, "firing")]);
    let opened = std::time::Instant::now();
    assert_eq!(post(&env, &body).await.0, 201);
    restart(&env, &env.client().await, "gateway").await;
    // The Service sends requests only to a ready pod: wait until one answers again.
    let readyz = format!("{}/readyz", env.url("gateway"));
    eventually("the restarted gateway to be ready", Duration::from_secs(90), || async {
        let ok = http().get(&readyz).send().await.ok()?.status().is_success();
        ok.then_some(())
    })
    .await;
    assert!(
        opened.elapsed() < window,
        "the restart took longer than the {window:?} window: raise DEDUP_WINDOW_SECONDS"
    );
    let (status, again) = post(&env, &body).await;
    assert_eq!(status, 202, "the restarted gateway forgot the signal: {again}");
    assert_eq!(again["results"][0]["occurrence_count"], 2);
}

#[tokio::test]
async fn signals_are_accepted_during_a_datastorage_outage_and_audited_after_it() {
    let _gateway = GATEWAY.read().await;
    let _outage = DATASTORAGE.write().await;
    let env = Env::get();
    let client = env.client().await;
    scale(&env, &client, "datastorage", 0).await;
    let (status, body) = post(&env, &webhook(vec![alert(&env.unique("DuringOutage"), &env.namespace, "firing")])).await;
    scale(&env, &client, "datastorage", 1).await;
    assert_eq!(status, 201, "a signal was refused while datastorage was down: {body}");
    let correlation = body["results"][0]["remediation_request"].as_str().unwrap();
    let event = audit_event(&env, correlation, "gateway.signal.received").await;
    assert_eq!(event["actor"], "gateway");
    assert_eq!(audit_events(&env, correlation).await.len(), 1, "delivered more than once");
}
