//! The second source and scope: Kubernetes Warning Events in managed namespaces become signals
//! with the same deduplication and audit; namespaces without the label are out of scope for
//! both sources.
//!
//! That an event was *not* turned into a signal is shown with a marker: the gateway reads one
//! ordered watch and handles events one at a time, so once a Warning created afterwards has its
//! RemediationRequest, the earlier event was already decided.

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use remedy_api::RemediationRequest;
use remedy_e2e::{audit_event, eventually};
use serde_json::json;

use crate::fixture::{Gw, alert, webhook};

/// Creates an Event of `type_` and `reason` about pod `pod` in `namespace`, last seen `age` ago.
async fn record(gw: &Gw, namespace: &str, type_: &str, reason: &str, pod: &str, age: Duration) -> Event {
    let seen = jiff::Timestamp::now() - jiff::SignedDuration::try_from(age).unwrap();
    let event = Event {
        metadata: ObjectMeta { name: Some(gw.env.unique("spec-event").to_lowercase()), ..Default::default() },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(format!("{reason} (from the gateway specs)")),
        type_: Some(type_.into()),
        count: Some(1),
        first_timestamp: Some(Time(seen)),
        last_timestamp: Some(Time(seen)),
        source: Some(EventSource { component: Some("remedy-e2e".into()), host: None }),
        ..Default::default()
    };
    kube::Api::<Event>::namespaced(gw.client.clone(), namespace)
        .create(&PostParams::default(), &event)
        .await
        .expect("create Event")
}

/// The one RemediationRequest of `reason` in `namespace`, once the gateway made it and counted
/// its first occurrence (a status update right after the create).
async fn request_for(gw: &Gw, namespace: &str, reason: &str) -> RemediationRequest {
    eventually(&format!("a RemediationRequest for the {reason} event"), Duration::from_secs(30), || async {
        let mut found = gw.rrs_for(namespace, reason).await;
        assert!(found.len() <= 1, "more than one request for {reason}: {found:?}");
        found.pop().filter(|rr| rr.status.as_ref().is_some_and(|s| s.occurrence_count.is_some()))
    })
    .await
}

/// Records a Warning in a managed namespace and waits for its request: every event created
/// before it has been decided.
async fn marker(gw: &Gw) {
    let reason = gw.env.unique("Marker");
    record(gw, &gw.ns, "Warning", &reason, "marker-0", Duration::ZERO).await;
    request_for(gw, &gw.ns, &reason).await;
}

#[tokio::test]
async fn a_warning_event_in_a_managed_namespace_becomes_a_request_with_its_audit_event() {
    let gw = Gw::get().await;
    let ns = gw.managed_namespace("events").await;
    let reason = gw.env.unique("CrashLoop");
    record(&gw, &ns, "Warning", &reason, "web-1", Duration::ZERO).await;
    let rr = request_for(&gw, &ns, &reason).await;
    assert_eq!(rr.spec.severity, "warning");
    let target = rr.spec.target_resource.clone().expect("the event's object");
    assert_eq!((target.kind.as_str(), target.name.as_str()), ("Pod", "web-1"));
    assert!(rr.spec.annotations["message"].contains(&reason));
    assert_eq!(rr.metadata.labels.unwrap_or_default()["remedy.dev/source"], "kubernetes-event");
    assert_eq!(rr.status.and_then(|s| s.occurrence_count), Some(1));
    let event = audit_event(&gw.env, rr.metadata.name.as_deref().unwrap(), "gateway.signal.received").await;
    assert_eq!(event["data"]["source"], "kubernetes-event");
}

#[tokio::test]
async fn a_repeated_event_is_deduplicated_onto_its_request() {
    let gw = Gw::get().await;
    let ns = gw.managed_namespace("repeats").await;
    let reason = gw.env.unique("BackOff");
    let event = record(&gw, &ns, "Warning", &reason, "web-2", Duration::ZERO).await;
    let name = request_for(&gw, &ns, &reason).await.metadata.name.unwrap();
    // The kubelet repeats an event by counting it up on the same object.
    let now = jiff::Timestamp::now().to_string();
    let patch = json!({"count": 2, "lastTimestamp": now});
    kube::Api::<Event>::namespaced(gw.client.clone(), &ns)
        .patch(event.metadata.name.as_deref().unwrap(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("count the event up");
    let rrs = gw.rrs(&ns);
    eventually("the occurrence count to reach 2", Duration::from_secs(30), || async {
        let rr = rrs.get(&name).await.ok()?;
        (rr.status?.occurrence_count? == 2).then_some(())
    })
    .await;
    let event = audit_event(&gw.env, &name, "gateway.signal.deduplicated").await;
    assert_eq!(
        (event["data"]["occurrence_count"].as_i64(), event["data"]["source"].as_str()),
        (Some(2), Some("kubernetes-event"))
    );
    assert_eq!(gw.rrs_for(&ns, &reason).await.len(), 1);
}

#[tokio::test]
async fn normal_and_old_events_are_not_signals() {
    let gw = Gw::get().await;
    let ns = gw.managed_namespace("quiet").await;
    let normal = gw.env.unique("Pulled");
    let old = gw.env.unique("LongAgo");
    let max_age: u64 = gw.setting("EVENT_MAX_AGE_SECONDS").await.parse().unwrap();
    record(&gw, &ns, "Normal", &normal, "web-3", Duration::ZERO).await;
    record(&gw, &ns, "Warning", &old, "web-3", Duration::from_secs(max_age + 60)).await;
    marker(&gw).await;
    assert!(gw.rrs_for(&ns, &normal).await.is_empty(), "a Normal event became a request");
    assert!(gw.rrs_for(&ns, &old).await.is_empty(), "an event older than EVENT_MAX_AGE_SECONDS became a request");
}

#[tokio::test]
async fn events_in_a_namespace_without_the_label_are_ignored() {
    let gw = Gw::get().await;
    let ns = gw.unmanaged_namespace("unlabelled").await;
    let reason = gw.env.unique("Unwatched");
    record(&gw, &ns, "Warning", &reason, "web-4", Duration::ZERO).await;
    marker(&gw).await;
    assert!(gw.rrs_for(&ns, &reason).await.is_empty(), "an event outside the scope became a request");
}

#[tokio::test]
async fn alerts_for_a_namespace_without_the_label_are_403_and_say_so() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let ns = gw.unmanaged_namespace("unlabelled").await;
    let name = gw.env.unique("Elsewhere");
    let (status, body) = caller.post(&gw, &webhook(vec![alert(&name, &ns, "firing")])).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("lacks the label remedy.dev/managed="), "{body}");
    assert_eq!(body["results"][0]["status"], "out_of_scope");
    assert!(gw.rrs_for(&ns, &name).await.is_empty());
}

#[tokio::test]
async fn a_payload_for_both_kinds_of_namespace_creates_only_in_the_managed_one() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let outside = gw.unmanaged_namespace("unlabelled").await;
    let name = gw.env.unique("Mixed");
    let (status, body) =
        caller.post(&gw, &webhook(vec![alert(&name, &outside, "firing"), alert(&name, &gw.ns, "firing")])).await;
    assert_eq!(status, 201, "{body}");
    let statuses: Vec<&str> =
        body["results"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["out_of_scope", "created"]);
    assert!(body["results"][0]["reason"].as_str().unwrap().contains(&outside), "{body}");
    assert!(gw.rrs_for(&outside, &name).await.is_empty());
    assert_eq!(gw.rrs_for(&gw.ns, &name).await.len(), 1);
}
