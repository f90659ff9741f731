//! Gateway specs: Alertmanager webhooks in, RemediationRequests and audit events out.

use std::time::Duration;

use kube::Api;
use remedy_api::RemediationRequest;
use remedy_e2e::{Env, eventually, http};
use serde_json::{Value, json};

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

#[tokio::test]
async fn a_firing_alert_creates_a_remediation_request() {
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
async fn every_alert_of_a_payload_gets_its_own_request() {
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
    let env = Env::get();
    let (status, body) = post(&env, &webhook(vec![alert(&env.unique("Cleared"), &env.namespace, "resolved")])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["status"], "ignored");
    let name = body["results"][0]["remediation_request"].as_str().unwrap();
    assert!(rrs(&env).await.get_opt(name).await.unwrap().is_none());
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
    let env = Env::get();
    let base = env.url("gateway");
    for path in ["/healthz", "/readyz"] {
        assert_eq!(http().get(format!("{base}{path}")).send().await.unwrap().status(), 200, "{path}");
    }
    let metrics = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("# TYPE"), "not Prometheus text: {metrics}");
}
