//! The webhook over real sockets, with real Redis (`REMEDY_TEST_REDIS_URL`, from
//! `test/local-services.sh`), an in-memory RemediationRequest store and a fake datastorage.
//! Bad-input tests need no Redis and always run.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU16, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use gateway::{
    http::{AppState, WebhookResponse, router},
    metrics::Metrics,
    outbox::Forwarder,
    redis_store::RedisStore,
    store::{Creation, RrStore},
};
use remedy_api::{RemediationRequest, audit::AuditEvent, audit_client::AuditClient};
use serde_json::{Value, json};
use tokio::sync::Notify;

const BODY_LIMIT: usize = 16 * 1024;

/// Resources and their occurrence counts by (namespace, name).
type Items = HashMap<(String, String), (RemediationRequest, i64)>;

#[derive(Clone, Default)]
struct MemStore {
    items: Arc<Mutex<Items>>,
    fail_create: Arc<AtomicBool>,
}

impl MemStore {
    fn count(&self, ns: &str, name: &str) -> Option<i64> {
        self.items.lock().unwrap().get(&(ns.to_owned(), name.to_owned())).map(|(_, c)| *c)
    }
}

impl RrStore for MemStore {
    async fn create(&self, rr: &RemediationRequest, _seen: &str) -> anyhow::Result<Creation> {
        if self.fail_create.load(Ordering::SeqCst) {
            anyhow::bail!("API server down (test)");
        }
        if rr.metadata.namespace.as_deref() == Some("missing") {
            return Ok(Creation::NamespaceNotFound);
        }
        let key = (rr.metadata.namespace.clone().unwrap(), rr.metadata.name.clone().unwrap());
        let mut items = self.items.lock().unwrap();
        if items.contains_key(&key) {
            return Ok(Creation::AlreadyExists);
        }
        items.insert(key, (rr.clone(), 1));
        Ok(Creation::Created)
    }

    async fn record_occurrence(&self, ns: &str, name: &str, _seen: &str) -> anyhow::Result<Option<i64>> {
        let mut items = self.items.lock().unwrap();
        Ok(items.get_mut(&(ns.to_owned(), name.to_owned())).map(|(_, c)| {
            *c += 1;
            *c
        }))
    }

    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A datastorage stand-in that records events and answers with a settable status.
#[derive(Clone, Default)]
struct FakeDs {
    events: Arc<Mutex<Vec<AuditEvent>>>,
    answer: Arc<AtomicU16>,
}

async fn fake_ds_handler(State(ds): State<FakeDs>, Json(e): Json<AuditEvent>) -> StatusCode {
    let code = StatusCode::from_u16(ds.answer.load(Ordering::SeqCst)).unwrap();
    if code.is_success() {
        ds.events.lock().unwrap().push(e);
    }
    code
}

async fn spawn(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

struct Harness {
    base: String,
    store: MemStore,
    redis: RedisStore,
    ds: FakeDs,
    ds_url: String,
    wake: Arc<Notify>,
    metrics: Metrics,
}

fn redis_url() -> String {
    std::env::var("REMEDY_TEST_REDIS_URL").expect(
        "REMEDY_TEST_REDIS_URL is not set: run `test/local-services.sh up` and \
         `eval \"$(test/local-services.sh env)\"` (or `cargo xtask test`)",
    )
}

/// A gateway with its own Redis key prefix, so tests run in parallel.
async fn harness(url: &str) -> Harness {
    harness_with_window(url, 60).await
}

async fn harness_with_window(url: &str, dedup_window_seconds: u64) -> Harness {
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let redis = RedisStore::new(url, &prefix).unwrap();
    let store = MemStore::default();
    let ds = FakeDs::default();
    ds.answer.store(201, Ordering::SeqCst);
    let ds_url = spawn(Router::new().route("/api/v1/audit/events", post(fake_ds_handler)).with_state(ds.clone())).await;
    let metrics = Metrics::default();
    let wake = Arc::new(Notify::new());
    let state = AppState {
        store: store.clone(),
        redis: redis.clone(),
        metrics: metrics.clone(),
        wake: wake.clone(),
        dedup_window_seconds,
    };
    let base = spawn(router(state, BODY_LIMIT)).await;
    Harness { base, store, redis, ds, ds_url, wake, metrics }
}

impl Harness {
    fn forwarder(&self) -> Forwarder {
        Forwarder {
            redis: self.redis.clone(),
            client: AuditClient::new(&self.ds_url).unwrap(),
            wake: self.wake.clone(),
            metrics: self.metrics.clone(),
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            idle_poll: Duration::from_millis(50),
        }
    }

    async fn post(&self, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}/api/v1/signals/prometheus", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn outbox_len(&self) -> i64 {
        self.redis.len(&self.redis.outbox_key()).await.unwrap()
    }
}

fn webhook(alerts: Value) -> String {
    json!({"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing",
           "receiver": "remedy", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
           "externalURL": "http://alertmanager", "alerts": alerts})
    .to_string()
}

fn alert(name: &str, status: &str) -> Value {
    json!({"status": status, "labels": {"alertname": name, "namespace": "shop", "severity": "critical",
           "deployment": "web"}, "annotations": {}, "startsAt": "2026-01-01T00:00:00Z",
           "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": "x"})
}

async fn wait_for(mut cond: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not reached in 5 s");
}

/// A harness for the bad-input tests: Redis is never reached, so any URL will do.
async fn offline() -> Harness {
    harness("redis://127.0.0.1:1").await
}

#[tokio::test]
async fn malformed_json_is_400_with_json_reason() {
    let h = offline().await;
    let (status, body) = h.post("{\"version\":").await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().starts_with("malformed webhook payload"), "{body}");
}

#[tokio::test]
async fn missing_fields_are_400() {
    let h = offline().await;
    let (status, body) = h.post(r#"{"version":"4"}"#).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("alerts"), "{body}");
    let mut a = alert("A", "firing");
    a["labels"].as_object_mut().unwrap().remove("namespace");
    let (status, body) = h.post(webhook(json!([a]))).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("namespace"), "{body}");
}

#[tokio::test]
async fn unknown_alert_status_and_version_are_400() {
    let h = offline().await;
    let (status, body) = h.post(webhook(json!([alert("A", "suppressed")]))).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("unknown status \"suppressed\""), "{body}");
    let (status, _) = h.post(r#"{"version":"5","alerts":[]}"#).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn oversized_body_is_413() {
    let h = offline().await;
    let mut a = alert("A", "firing");
    a["annotations"]["description"] = "x".repeat(BODY_LIMIT * 2).into();
    let (status, _) = h.post(webhook(json!([a]))).await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn redis_down_is_503_and_not_ready() {
    let h = offline().await;
    let (status, body) = h.post(webhook(json!([alert("A", "firing")]))).await;
    assert_eq!(status, 503, "{body}");
    let ready = reqwest::get(format!("{}/readyz", h.base)).await.unwrap();
    assert_eq!(ready.status(), 503);
    let health = reqwest::get(format!("{}/healthz", h.base)).await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
#[ignore = "needs Redis: run by cargo xtask test"]
async fn new_signal_creates_then_duplicates_are_counted_and_audited() {
    let h = harness(&redis_url()).await;
    tokio::spawn(h.forwarder().run());

    let (status, body) = h.post(webhook(json!([alert("HighCPU", "firing")]))).await;
    assert_eq!(status, 201, "{body}");
    let first: WebhookResponse = serde_json::from_value(body).unwrap();
    let r = &first.results[0];
    assert_eq!((r.status.as_str(), r.namespace.as_str()), ("created", "shop"));
    let name = r.remediation_request.clone().unwrap();
    let opened = name.strip_prefix(&format!("rr-{}-", &r.fingerprint[..16])).expect(&name);
    assert!(opened.parse::<u64>().is_ok_and(|t| t > 1_700_000_000), "{name}");
    assert_eq!(h.store.count("shop", &name), Some(1));

    let (status, body) = h.post(webhook(json!([alert("HighCPU", "firing")]))).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["results"][0]["status"], "duplicate");
    assert_eq!(body["results"][0]["occurrence_count"], 2);
    assert_eq!(body["results"][0]["remediation_request"], name.as_str());
    assert_eq!(h.store.count("shop", &name), Some(2));

    wait_for(async || h.ds.events.lock().unwrap().len() == 2).await;
    let events = h.ds.events.lock().unwrap().clone();
    assert_eq!(events[0].event_type, "gateway.signal.received");
    assert_eq!(events[1].event_type, "gateway.signal.deduplicated");
    assert!(events.iter().all(|e| e.correlation_id == name));
    assert_eq!(h.outbox_len().await, 0);

    let metrics = reqwest::get(format!("{}/metrics", h.base)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("gateway_signals_total{outcome=\"created\"} 1"), "{metrics}");
    assert!(metrics.contains("gateway_signals_total{outcome=\"duplicate\"} 1"), "{metrics}");
    let ready = reqwest::get(format!("{}/readyz", h.base)).await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
#[ignore = "needs Redis: run by cargo xtask test"]
async fn resolved_alerts_are_ignored() {
    let h = harness(&redis_url()).await;
    let (status, body) = h.post(webhook(json!([alert("Gone", "resolved")]))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["status"], "ignored");
    assert!(h.store.items.lock().unwrap().is_empty());
    assert_eq!(h.outbox_len().await, 0);
}

#[tokio::test]
#[ignore = "needs Redis: run by cargo xtask test"]
async fn audit_events_survive_datastorage_outage_and_gateway_restart() {
    let h = harness(&redis_url()).await;
    // No forwarder yet: the gateway "restarts" before delivering; the event waits in Redis.
    let (status, _) = h.post(webhook(json!([alert("DiskFull", "firing")]))).await;
    assert_eq!(status, 201);
    assert_eq!(h.outbox_len().await, 1);

    // Datastorage is failing: the forwarder retries and keeps the entry.
    h.ds.answer.store(503, Ordering::SeqCst);
    let fwd = tokio::spawn(h.forwarder().run());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.outbox_len().await, 1);
    assert!(h.ds.events.lock().unwrap().is_empty());

    // Datastorage recovers: the event is delivered exactly once and leaves the outbox.
    h.ds.answer.store(201, Ordering::SeqCst);
    wait_for(async || h.outbox_len().await == 0).await;
    assert_eq!(h.ds.events.lock().unwrap().len(), 1);
    fwd.abort();
}

#[tokio::test]
#[ignore = "needs Redis: run by cargo xtask test"]
async fn rejected_audit_events_go_to_dead_letter_not_lost() {
    let h = harness(&redis_url()).await;
    h.redis.outbox_push("{\"not\":\"an event\"}").await.unwrap();
    h.ds.answer.store(400, Ordering::SeqCst);
    let fwd = tokio::spawn(h.forwarder().run());
    wait_for(async || h.outbox_len().await == 0).await;
    assert_eq!(h.redis.len(&h.redis.dead_letter_key()).await.unwrap(), 1);
    fwd.abort();
}

#[tokio::test]
#[ignore = "needs Redis: run by cargo xtask test"]
async fn a_404_from_whatever_answers_for_datastorage_is_retried_not_dead_lettered() {
    let h = harness(&redis_url()).await;
    h.ds.answer.store(404, Ordering::SeqCst);
    let (status, _) = h.post(webhook(json!([alert("Misrouted", "firing")]))).await;
    assert_eq!(status, 201);
    let fwd = tokio::spawn(h.forwarder().run());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!((h.outbox_len().await, h.redis.len(&h.redis.dead_letter_key()).await.unwrap()), (1, 0));
    h.ds.answer.store(201, Ordering::SeqCst);
    wait_for(async || h.outbox_len().await == 0).await;
    assert_eq!(h.ds.events.lock().unwrap().len(), 1);
    fwd.abort();
}

#[tokio::test]
#[ignore = "needs Redis: run by cargo xtask test"]
async fn failed_creation_is_503_and_the_retry_creates() {
    let h = harness(&redis_url()).await;
    h.store.fail_create.store(true, Ordering::SeqCst);
    let (status, body) = h.post(webhook(json!([alert("OOM", "firing")]))).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(h.outbox_len().await, 0);

    h.store.fail_create.store(false, Ordering::SeqCst);
    let (status, body) = h.post(webhook(json!([alert("OOM", "firing")]))).await;
    assert_eq!(status, 201, "the claim was released, so the retry is new: {body}");
    assert_eq!(h.outbox_len().await, 1);
}

#[tokio::test]
#[ignore = "needs Redis: run by cargo xtask test"]
async fn after_the_window_a_new_resource_is_created() {
    let h = harness_with_window(&redis_url(), 1).await;
    let (status, first) = h.post(webhook(json!([alert("Flap", "firing")]))).await;
    assert_eq!(status, 201, "{first}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, second) = h.post(webhook(json!([alert("Flap", "firing")]))).await;
    assert_eq!(status, 201, "{second}");
    let (a, b) = (&first["results"][0]["remediation_request"], &second["results"][0]["remediation_request"]);
    assert_ne!(a, b);
    assert_eq!(h.store.count("shop", a.as_str().unwrap()), Some(1));
    assert_eq!(h.store.count("shop", b.as_str().unwrap()), Some(1));
    // Inside the new window, duplicates count on the new resource.
    let (status, third) = h.post(webhook(json!([alert("Flap", "firing")]))).await;
    assert_eq!((status, &third["results"][0]["remediation_request"]), (202, b), "{third}");
    assert_eq!(h.store.count("shop", b.as_str().unwrap()), Some(2));
}

#[tokio::test]
#[ignore = "needs Redis: run by cargo xtask test"]
async fn a_resource_deleted_inside_the_window_is_created_again_under_its_name() {
    let h = harness(&redis_url()).await;
    let (status, first) = h.post(webhook(json!([alert("Gone", "firing")]))).await;
    assert_eq!(status, 201, "{first}");
    let name = first["results"][0]["remediation_request"].as_str().unwrap().to_owned();
    h.store.items.lock().unwrap().clear();
    let (status, again) = h.post(webhook(json!([alert("Gone", "firing")]))).await;
    assert_eq!((status, again["results"][0]["remediation_request"].as_str()), (201, Some(name.as_str())));
    assert_eq!(h.store.count("shop", &name), Some(1));
}

#[tokio::test]
#[ignore = "needs Redis: run by cargo xtask test"]
async fn concurrent_deliveries_create_one_resource() {
    let h = Arc::new(harness(&redis_url()).await);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move { h.post(webhook(json!([alert("Storm", "firing")]))).await.0 }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    codes.sort();
    assert_eq!(codes, [201, 202, 202, 202, 202, 202, 202, 202]);
    let items = h.store.items.lock().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items.values().next().unwrap().1, 8);
}

#[tokio::test]
#[ignore = "needs Redis: run by cargo xtask test"]
async fn alert_for_missing_namespace_is_rejected_with_reason() {
    let h = harness(&redis_url()).await;
    let mut a = alert("Lost", "firing");
    a["labels"]["namespace"] = "missing".into();
    let (status, body) = h.post(webhook(json!([a.clone()]))).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("\"missing\" does not exist"), "{body}");
    assert_eq!(body["results"][0]["status"], "rejected");
    assert_eq!(h.outbox_len().await, 0);
    // The claim was dropped: the same alert is handled afresh, not as a duplicate.
    let (status, body) = h.post(webhook(json!([a]))).await;
    assert_eq!((status, body["results"][0]["status"].as_str()), (400, Some("rejected")));
}
