//! The Alertmanager webhook: validation, RemediationRequests, deduplication, audit, metrics.

use std::time::{Duration, Instant};

use kube::api::ListParams;
use remedy_e2e::{audit_event, eventually, http};
use serde_json::{Value, json};

use crate::fixture::{Gw, alert, metrics, one_steady_gateway, rr_name, sample, send, webhook};

#[tokio::test]
async fn a_firing_alert_creates_a_remediation_request() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let name = gw.env.unique("HighMemory");
    let (status, body) = caller.post(&gw, &webhook(vec![alert(&name, &gw.ns, "firing")])).await;
    assert_eq!(status, 201, "{body}");
    let result = &body["results"][0];
    assert_eq!(result["status"], "created");
    let rr = gw.rrs(&gw.ns).get(&rr_name(&body)).await.unwrap();
    assert_eq!(rr.spec.signal_name, name);
    assert_eq!(rr.spec.severity, "critical");
    assert_eq!(rr.spec.target_namespace, gw.ns);
    assert_eq!(rr.spec.signal_fingerprint, result["fingerprint"].as_str().unwrap());
    assert_eq!(rr.status.and_then(|s| s.occurrence_count), Some(1));
}

#[tokio::test]
async fn a_duplicate_inside_the_window_raises_the_occurrence_count() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let body = webhook(vec![alert(&gw.env.unique("DiskFull"), &gw.ns, "firing")]);
    let (first, created) = caller.post(&gw, &body).await;
    assert_eq!(first, 201);
    let (second, duplicate) = caller.post(&gw, &body).await;
    assert_eq!(second, 202, "{duplicate}");
    assert_eq!(duplicate["results"][0]["status"], "duplicate");
    assert_eq!(duplicate["results"][0]["remediation_request"], rr_name(&created));
    let rr = gw.rrs(&gw.ns).get(&rr_name(&created)).await.unwrap();
    assert_eq!(rr.status.and_then(|s| s.occurrence_count), Some(2));
}

#[tokio::test]
async fn after_the_window_a_new_request_is_created() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    // The alert asks for the shortest window the manifest allows, so the spec sleeps out its
    // own 1 s window, not the default 300 s.
    let window = Duration::from_secs(gw.setting("DEDUP_WINDOW_MIN_SECONDS").await.parse().unwrap());
    let mut a = alert(&gw.env.unique("Recurring"), &gw.ns, "firing");
    a["annotations"]["remedy_dedup_window_seconds"] = window.as_secs().to_string().into();
    let body = webhook(vec![a]);
    let (status, first) = caller.post(&gw, &body).await;
    let answered = Instant::now();
    assert_eq!((status, first["results"][0]["window_seconds"].as_u64()), (201, Some(window.as_secs())), "{first}");
    // The window opened before the answer, so it is over `window` after it (Redis expires
    // keys to the millisecond).
    tokio::time::sleep((answered + window + Duration::from_millis(50)).saturating_duration_since(Instant::now())).await;
    let (status, second) = caller.post(&gw, &body).await;
    assert_eq!(status, 201, "the window ({window:?}) is over, so the signal is new again: {second}");
    let (old, new) = (rr_name(&first), rr_name(&second));
    assert_ne!(old, new);
    let api = gw.rrs(&gw.ns);
    for name in [old, new] {
        let rr = api.get(&name).await.unwrap();
        assert_eq!(rr.status.and_then(|s| s.occurrence_count), Some(1), "{name}");
    }
}

#[tokio::test]
async fn a_window_outside_the_manifests_bounds_is_rejected() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let max: u64 = gw.setting("DEDUP_WINDOW_MAX_SECONDS").await.parse().unwrap();
    let name = gw.env.unique("Forever");
    let mut a = alert(&name, &gw.ns, "firing");
    a["annotations"]["remedy_dedup_window_seconds"] = (max + 1).to_string().into();
    let (status, body) = caller.post(&gw, &webhook(vec![a])).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains(&format!("to {max}")), "{body}");
    assert!(gw.rrs_for(&gw.ns, &name).await.is_empty());
}

#[tokio::test]
async fn every_alert_of_a_payload_gets_its_own_request() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let alerts: Vec<Value> = (0..3).map(|_| alert(&gw.env.unique("Burst"), &gw.ns, "firing")).collect();
    let (status, body) = caller.post(&gw, &webhook(alerts)).await;
    assert_eq!(status, 201);
    let names: Vec<&str> =
        body["results"].as_array().unwrap().iter().map(|r| r["remediation_request"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 3);
    let api = gw.rrs(&gw.ns);
    for name in names {
        assert!(api.get_opt(name).await.unwrap().is_some(), "{name} missing");
    }
}

#[tokio::test]
async fn a_resolved_alert_creates_nothing() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let (status, body) = caller.post(&gw, &webhook(vec![alert(&gw.env.unique("Cleared"), &gw.ns, "resolved")])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["status"], "ignored");
    assert_eq!(body["results"][0].get("remediation_request"), None, "{body}");
    let fingerprint = &body["results"][0]["fingerprint"].as_str().unwrap()[..16];
    let selector = format!("remedy.dev/fingerprint={fingerprint}");
    let found = gw.rrs(&gw.ns).list(&ListParams::default().labels(&selector)).await.unwrap();
    assert!(
        found.items.is_empty(),
        "{selector}: {:?}",
        found.items.iter().map(|r| &r.metadata.name).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn malformed_payloads_answer_400_with_a_reason() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    for body in ["{not json", r#"{"version": "4"}"#, r#"{"version": "3", "alerts": []}"#] {
        let (status, reason, _) = send(caller.request(&gw).header("content-type", "application/json").body(body)).await;
        assert_eq!(status, 400, "{body}");
        assert!(reason["error"].as_str().is_some_and(|r| !r.is_empty()), "{body}: {reason}");
    }
}

#[tokio::test]
async fn each_accepted_signal_has_its_audit_event_in_datastorage() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let (status, body) = caller.post(&gw, &webhook(vec![alert(&gw.env.unique("Audited"), &gw.ns, "firing")])).await;
    assert_eq!(status, 201);
    let correlation = rr_name(&body);
    let events_url = format!("{}/api/v1/audit/events", gw.env.url("datastorage"));
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
    assert_eq!(events[0]["data"]["source"], "alertmanager");
}

#[tokio::test]
async fn health_readiness_and_metrics_answer_without_a_token() {
    let gw = Gw::get().await;
    for path in ["/healthz", "/readyz"] {
        assert_eq!(http().get(gw.url(path)).send().await.unwrap().status(), 200, "{path}");
    }
    let metrics = http().get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("# TYPE"), "not Prometheus text: {metrics}");
}

/// A 400 whose JSON reason mentions `word`.
async fn rejected(gw: &Gw, body: &Value, word: &str) {
    let caller = gw.caller().await;
    let (status, reason) = caller.post(gw, body).await;
    assert_eq!(status, 400, "{body} -> {reason}");
    let text = reason["error"].as_str().unwrap_or_default();
    assert!(text.contains(word), "reason {text:?} does not mention {word:?}");
}

#[tokio::test]
async fn an_oversized_payload_answers_413_and_creates_nothing() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let name = gw.env.unique("Huge");
    let mut big = alert(&name, &gw.ns, "firing");
    big["annotations"]["description"] = "x".repeat(300 * 1024).into();
    let (status, _) = caller.post(&gw, &webhook(vec![big])).await;
    assert_eq!(status, 413);
    assert!(gw.rrs_for(&gw.ns, &name).await.is_empty(), "an oversized payload created a request");
}

#[tokio::test]
async fn an_alert_without_alertname_is_rejected() {
    let gw = Gw::get().await;
    let mut a = alert("x", &gw.ns, "firing");
    a["labels"].as_object_mut().unwrap().remove("alertname");
    rejected(&gw, &webhook(vec![a]), "alertname").await;
}

#[tokio::test]
async fn an_unknown_alert_status_is_rejected_by_name() {
    let gw = Gw::get().await;
    rejected(&gw, &webhook(vec![alert(&gw.env.unique("Odd"), &gw.ns, "pending")]), "pending").await;
}

#[tokio::test]
async fn an_alert_for_a_namespace_that_does_not_exist_is_rejected() {
    let gw = Gw::get().await;
    let missing = gw.env.unique("nowhere");
    rejected(&gw, &webhook(vec![alert(&gw.env.unique("Lost"), &missing, "firing")]), &missing).await;
}

#[tokio::test]
async fn only_version_4_payloads_are_accepted() {
    let gw = Gw::get().await;
    let mut body = webhook(vec![alert(&gw.env.unique("Old"), &gw.ns, "firing")]);
    body["version"] = "3".into();
    rejected(&gw, &body, "3").await;
}

#[tokio::test]
async fn an_empty_alert_list_is_rejected() {
    let gw = Gw::get().await;
    rejected(&gw, &webhook(vec![]), "between 1 and").await;
}

#[tokio::test]
async fn the_same_alert_twice_in_one_payload_is_created_then_deduplicated() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let a = alert(&gw.env.unique("Twice"), &gw.ns, "firing");
    let (status, body) = caller.post(&gw, &webhook(vec![a.clone(), a])).await;
    assert_eq!(status, 201, "{body}");
    let statuses: Vec<&str> =
        body["results"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["created", "duplicate"]);
}

#[tokio::test]
async fn the_fingerprint_ignores_label_order() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let name = gw.env.unique("Ordered");
    let forward = format!(
        r#"{{"version":"4","alerts":[{{"status":"firing","labels":{{"alertname":"{name}","namespace":"{ns}","severity":"warning"}}}}]}}"#,
        ns = gw.ns
    );
    let backward = format!(
        r#"{{"version":"4","alerts":[{{"status":"firing","labels":{{"severity":"warning","namespace":"{ns}","alertname":"{name}"}}}}]}}"#,
        ns = gw.ns
    );
    let (first, a, _) = send(caller.request(&gw).header("content-type", "application/json").body(forward)).await;
    let (second, b, _) = send(caller.request(&gw).header("content-type", "application/json").body(backward)).await;
    assert_eq!((first, second), (201, 202));
    assert_eq!(a["results"][0]["fingerprint"], b["results"][0]["fingerprint"]);
}

#[tokio::test]
async fn the_request_keeps_the_alerts_labels_annotations_and_target() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let (status, body) = caller.post(&gw, &webhook(vec![alert(&gw.env.unique("Detailed"), &gw.ns, "firing")])).await;
    assert_eq!(status, 201);
    let rr = gw.rrs(&gw.ns).get(&rr_name(&body)).await.unwrap();
    assert_eq!(rr.spec.labels.get("pod").map(String::as_str), Some("web-0"));
    assert_eq!(rr.spec.annotations.get("summary").map(String::as_str), Some("spec alert"));
    let target = rr.spec.target_resource.expect("a target from the pod label");
    assert_eq!((target.kind.as_str(), target.name.as_str()), ("Pod", "web-0"));
    assert_eq!(rr.spec.starts_at.as_deref(), Some("2026-11-26T10:00:00Z"));
    let labels = rr.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("remedy.dev/source").map(String::as_str), Some("alertmanager"));
}

#[tokio::test]
async fn workflow_annotations_become_the_requests_workflow() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let mut a = alert(&gw.env.unique("WithWorkflow"), &gw.ns, "firing");
    a["annotations"]["remedy_workflow_image"] = "example/fixer:1".into();
    a["annotations"]["remedy_workflow_command"] = r#"["fix", "--now"]"#.into();
    let (status, body) = caller.post(&gw, &webhook(vec![a])).await;
    assert_eq!(status, 201, "{body}");
    let rr = gw.rrs(&gw.ns).get(&rr_name(&body)).await.unwrap();
    let workflow = rr.spec.workflow.expect("a workflow");
    assert_eq!(workflow.image, "example/fixer:1");
    assert_eq!(workflow.command, ["fix", "--now"]);
}

#[tokio::test]
async fn a_malformed_workflow_command_is_rejected() {
    let gw = Gw::get().await;
    let mut a = alert(&gw.env.unique("BadWorkflow"), &gw.ns, "firing");
    a["annotations"]["remedy_workflow_image"] = "example/fixer:1".into();
    a["annotations"]["remedy_workflow_command"] = "fix --now".into();
    rejected(&gw, &webhook(vec![a]), "remedy_workflow_command").await;
}

#[tokio::test]
async fn a_duplicate_has_its_deduplicated_audit_event() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let body = webhook(vec![alert(&gw.env.unique("Recurring"), &gw.ns, "firing")]);
    let (_, created) = caller.post(&gw, &body).await;
    assert_eq!(caller.post(&gw, &body).await.0, 202);
    let event = audit_event(&gw.env, &rr_name(&created), "gateway.signal.deduplicated").await;
    assert_eq!(event["data"]["occurrence_count"], 2);
}

#[tokio::test]
async fn metrics_count_created_signals_and_refusals() {
    let _steady = one_steady_gateway().await;
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let created = |m: &str| sample(m, "gateway_signals_total", r#"outcome="created""#);
    let refused = |m: &str| sample(m, "gateway_refusals_total", r#"reason="unauthenticated""#);
    let before = metrics(&gw).await;
    assert_eq!(caller.post(&gw, &webhook(vec![alert(&gw.env.unique("Counted"), &gw.ns, "firing")])).await.0, 201);
    let (status, _, _) = send(crate::fixture::unsigned(&gw).json(&json!({}))).await;
    assert_eq!(status, 401);
    let after = metrics(&gw).await;
    // Other specs run alongside, so the counters rose by at least these.
    assert!(created(&after) >= created(&before) + 1.0, "created went from {} to {}", created(&before), created(&after));
    assert!(
        refused(&after) >= refused(&before) + 1.0,
        "refusals went from {} to {}",
        refused(&before),
        refused(&after)
    );
}
