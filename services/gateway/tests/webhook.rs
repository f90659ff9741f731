//! The webhook over real sockets, with real Redis (`REMEDY_TEST_REDIS_URL`, from
//! `test/local-services.sh`), an in-memory RemediationRequest store, a fake reviewer and a
//! fake datastorage. Tests that never reach Redis always run.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU16, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use gateway::{
    auth::{Access, AccessVerdict, Caller, Reviewer, TokenVerdict},
    config::DedupWindow,
    failure::{Dependency, OnDependency},
    http::{AppState, WebhookResponse, router},
    intake::Intake,
    metrics::Metrics,
    outbox::Forwarder,
    ratelimit::{RateLimit, RateLimiter},
    redis_store::RedisStore,
    scope::Scope,
    store::{Creation, RrStore},
};
use remedy_api::{RemediationRequest, audit::AuditEvent, audit_client::AuditClient};
use serde_json::{Value, json};
use tokio::sync::Notify;

const BODY_LIMIT: usize = 16 * 1024;
const TOKEN: &str = "alice-token";
const MANAGED: &str = "remedy.dev/managed=true";

/// Resources and their occurrence counts by (namespace, name).
type Items = HashMap<(String, String), (RemediationRequest, i64)>;

/// Namespaces: `shop` and `bank` managed, `lab` unmanaged, anything else missing. Creating
/// fails while `fail_create` is set, as an API server refusing would.
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
            return Err(anyhow::anyhow!("exceeded quota (test)")).on(Dependency::KubernetesApi);
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

    async fn namespace_labels(&self, name: &str) -> anyhow::Result<Option<BTreeMap<String, String>>> {
        let managed = BTreeMap::from([("remedy.dev/managed".to_owned(), "true".to_owned())]);
        Ok(match name {
            "shop" | "bank" => Some(managed),
            "lab" => Some(BTreeMap::new()),
            _ => None,
        })
    }
}

/// `alice-token` is alice, allowed in `shop` only; `bob-token` is bob, allowed in `shop` and
/// `bank`; every other token is rejected.
#[derive(Clone, Default)]
struct FakeReviewer;

fn caller(name: &str) -> Caller {
    Caller { username: name.to_owned(), uid: None, groups: vec![], extra: BTreeMap::new() }
}

impl Reviewer for FakeReviewer {
    async fn review_token(&self, token: &str) -> anyhow::Result<TokenVerdict> {
        Ok(match token {
            TOKEN => TokenVerdict::Authenticated(caller("alice")),
            "bob-token" => TokenVerdict::Authenticated(caller("bob")),
            _ => TokenVerdict::Rejected("invalid bearer token".into()),
        })
    }

    async fn review_access(&self, caller: &Caller, namespace: &str) -> anyhow::Result<AccessVerdict> {
        let allowed = namespace == "shop" || (caller.username == "bob" && namespace == "bank");
        Ok(AccessVerdict { allowed, reason: String::new() })
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

/// What a test may change about the gateway.
struct Options {
    window: DedupWindow,
    rate_limit: RateLimit,
    replay_window: Duration,
    outbox_max: i64,
    origins: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            window: DedupWindow::fixed(60),
            rate_limit: RateLimit { per_second: 0.0, burst: 0 },
            replay_window: Duration::from_secs(300),
            outbox_max: 1000,
            origins: vec![],
        }
    }
}

/// A gateway with its own Redis key prefix, so tests run in parallel.
async fn harness(url: &str) -> Harness {
    harness_with(url, Options::default()).await
}

async fn harness_with(url: &str, options: Options) -> Harness {
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let redis = RedisStore::new(url, &prefix).unwrap();
    let store = MemStore::default();
    let ds = FakeDs::default();
    ds.answer.store(201, Ordering::SeqCst);
    let ds_url = spawn(Router::new().route("/api/v1/audit/events", post(fake_ds_handler)).with_state(ds.clone())).await;
    let metrics = Metrics::default();
    let wake = Arc::new(Notify::new());
    let intake = Intake {
        store: store.clone(),
        redis: redis.clone(),
        metrics: metrics.clone(),
        wake: wake.clone(),
        outbox_max: options.outbox_max,
    };
    let state = AppState {
        intake,
        access: Access::new(FakeReviewer, Duration::from_secs(10)),
        scope: Scope::new(store.clone(), MANAGED.parse().unwrap(), Duration::from_secs(10)),
        limiter: Arc::new(RateLimiter::new(options.rate_limit)),
        dedup: options.window,
        replay_window: options.replay_window,
        shutting_down: Arc::new(AtomicBool::new(false)),
    };
    let base = spawn(router(state, BODY_LIMIT, options.origins)).await;
    Harness { base, store, redis, ds, ds_url, wake, metrics }
}

fn now() -> String {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().to_string()
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

    /// A forwarder running until the test ends.
    fn forward(&self) -> tokio::task::JoinHandle<Forwarder> {
        tokio::spawn(self.forwarder().run(std::future::pending()))
    }

    /// A webhook request as alice, sent now.
    fn request(&self) -> reqwest::RequestBuilder {
        self.request_with(Some(TOKEN), Some(now()))
    }

    /// A webhook request with this token and timestamp, or without them.
    fn request_with(&self, token: Option<&str>, timestamp: Option<String>) -> reqwest::RequestBuilder {
        let mut request = reqwest::Client::new()
            .post(format!("{}/api/v1/signals/prometheus", self.base))
            .header("content-type", "application/json");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(timestamp) = timestamp {
            request = request.header("x-timestamp", timestamp);
        }
        request
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = request.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, body: impl Into<reqwest::Body>) -> (u16, Value) {
        self.send(self.request().body(body)).await
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

fn alert_in(name: &str, namespace: &str) -> Value {
    let mut a = alert(name, "firing");
    a["labels"]["namespace"] = namespace.into();
    a
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

/// A harness for the tests that never reach Redis, so any URL will do.
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
async fn redis_down_is_503_with_a_retry_hint_and_not_ready() {
    let h = offline().await;
    let response = h.request().body(webhook(json!([alert("A", "firing")]))).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let body: Value = response.json().await.unwrap();
    assert_eq!((body["dependency"].as_str(), body["retry_after_seconds"].as_u64()), (Some("redis"), Some(5)), "{body}");
    let ready = reqwest::get(format!("{}/readyz", h.base)).await.unwrap();
    assert_eq!(ready.status(), 503);
    let health = reqwest::get(format!("{}/healthz", h.base)).await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
#[ignore = "needs Redis: run by cargo xtask test"]
async fn new_signal_creates_then_duplicates_are_counted_and_audited() {
    let h = harness(&redis_url()).await;
    h.forward();

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

    // Datastorage has an event before the forwarder removes it from the outbox.
    wait_for(async || h.outbox_len().await == 0).await;
    let events = h.ds.events.lock().unwrap().clone();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event_type, "gateway.signal.received");
    assert_eq!(events[1].event_type, "gateway.signal.deduplicated");
    assert!(events.iter().all(|e| e.correlation_id == name));

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
    let fwd = h.forward();
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
    let fwd = h.forward();
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
    let fwd = h.forward();
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
    assert_eq!(body["dependency"], "kubernetes-api", "{body}");
    assert!(body["error"].as_str().unwrap().contains("exceeded quota"), "{body}");
    assert_eq!(h.outbox_len().await, 0);

    h.store.fail_create.store(false, Ordering::SeqCst);
    let (status, body) = h.post(webhook(json!([alert("OOM", "firing")]))).await;
    assert_eq!(status, 201, "the claim was released, so the retry is new: {body}");
    assert_eq!(h.outbox_len().await, 1);
}

#[tokio::test]
#[ignore = "needs Redis: run by cargo xtask test"]
async fn after_the_window_a_new_resource_is_created() {
    let h = harness_with(&redis_url(), Options { window: DedupWindow::fixed(1), ..Options::default() }).await;
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

#[tokio::test]
async fn without_a_valid_token_the_answer_is_401_and_nothing_is_read() {
    let h = offline().await;
    let body = webhook(json!([alert("A", "firing")]));
    let (status, reason) = h.send(h.request_with(None, Some(now())).body(body.clone())).await;
    assert_eq!(status, 401);
    assert!(reason["error"].as_str().unwrap().contains("missing bearer token"), "{reason}");
    let (status, reason) = h.send(h.request_with(Some("stolen"), Some(now())).body(body.clone())).await;
    assert_eq!(status, 401);
    assert!(reason["error"].as_str().unwrap().contains("invalid bearer token"), "{reason}");
    let basic = h.request_with(None, Some(now())).basic_auth("alice", Some("pw")).body(body);
    let response = basic.send().await.unwrap();
    assert_eq!((response.status().as_u16(), response.headers()["www-authenticate"].to_str().unwrap()), (401, "Bearer"));
    // Redis is down, so a request that got past the guard would have answered 503.
}

#[tokio::test]
async fn health_and_metrics_need_no_token_and_carry_the_security_headers() {
    let h = offline().await;
    for path in ["/healthz", "/metrics"] {
        let response = reqwest::get(format!("{}{path}", h.base)).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        for (name, value) in gateway::hardening::SECURITY_HEADERS {
            assert_eq!(response.headers()[name], value, "{path} {name}");
        }
    }
    let (status, _) = h.send(h.request_with(Some("stolen"), Some(now())).body("{}")).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_timestamp_outside_the_window_is_400_before_anything_is_read() {
    let h = offline().await;
    let old = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 600).to_string();
    let body = webhook(json!([alert("A", "firing")]));
    let (status, reason) = h.send(h.request_with(Some(TOKEN), Some(old)).body(body.clone())).await;
    assert_eq!(status, 400);
    assert!(reason["error"].as_str().unwrap().contains("600s old"), "{reason}");
    let (status, reason) = h.send(h.request_with(Some(TOKEN), None).body(body)).await;
    assert_eq!(status, 400);
    assert!(reason["error"].as_str().unwrap().contains("missing X-Timestamp"), "{reason}");
}

#[tokio::test]
async fn over_the_rate_limit_the_answer_is_429_with_retry_after_per_caller() {
    let options = Options { rate_limit: RateLimit { per_second: 0.01, burst: 2 }, ..Options::default() };
    let h = harness_with("redis://127.0.0.1:1", options).await;
    let resolved = webhook(json!([alert("A", "resolved")]));
    // Past the guard Redis is down (503), so the first two show they were let through.
    for _ in 0..2 {
        assert_eq!(h.post(resolved.clone()).await.0, 503);
    }
    let response = h.request().body(resolved.clone()).send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "100");
    let (status, _) = h.send(h.request_with(Some("bob-token"), Some(now())).body(resolved)).await;
    assert_eq!(status, 503, "bob has his own bucket");
}

#[tokio::test]
async fn cross_origin_requests_pass_only_from_configured_origins() {
    let options = Options { origins: vec!["https://console.example".into()], ..Options::default() };
    let h = harness_with("redis://127.0.0.1:1", options).await;
    let url = format!("{}/api/v1/signals/prometheus", h.base);
    let preflight = |origin: &str| {
        reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
    };
    let allowed = preflight("https://console.example").send().await.unwrap();
    assert_eq!(allowed.status(), 204);
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://console.example");
    assert!(allowed.headers()["access-control-allow-headers"].to_str().unwrap().contains("authorization"));
    let refused = preflight("https://evil.example").send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.headers().get("access-control-allow-origin").is_none());
    let (status, reason) = h.send(h.request().header("origin", "https://evil.example").body("{}")).await;
    assert_eq!(status, 403);
    assert!(reason["error"].as_str().unwrap().contains("https://evil.example"), "{reason}");
    let response = h.request().header("origin", "https://console.example").body("{").send().await.unwrap();
    assert_eq!(response.status(), 400, "an allowed origin reaches the handler");
    assert_eq!(response.headers()["access-control-allow-origin"], "https://console.example");
}

#[tokio::test]
#[ignore = "needs Redis: run by cargo xtask test"]
async fn a_caller_not_allowed_in_a_namespace_is_403_and_nothing_is_created() {
    let h = harness(&redis_url()).await;
    let body = webhook(json!([alert_in("Mixed", "shop"), alert_in("Mixed", "bank")]));
    let (status, reason) = h.post(body.clone()).await;
    assert_eq!(status, 403, "{reason}");
    assert_eq!(reason["error"], "alice may not create remediationrequests.remedy.dev in namespace \"bank\"");
    assert_eq!(reason["namespace"], "bank");
    assert!(h.store.items.lock().unwrap().is_empty(), "the allowed alert of the payload was created");
    assert_eq!(h.outbox_len().await, 0);
    let (status, body) = h.send(h.request_with(Some("bob-token"), Some(now())).body(body)).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
#[ignore = "needs Redis: run by cargo xtask test"]
async fn alerts_for_unmanaged_namespaces_are_out_of_scope() {
    let h = harness(&redis_url()).await;
    let (status, body) = h.post(webhook(json!([alert_in("Elsewhere", "lab")]))).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("lacks the label remedy.dev/managed=true"), "{body}");
    assert_eq!(body["results"][0]["status"], "out_of_scope");
    let (status, body) = h.post(webhook(json!([alert_in("Elsewhere", "lab"), alert_in("Here", "shop")]))).await;
    assert_eq!(status, 201, "{body}");
    let statuses: Vec<&str> =
        body["results"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["out_of_scope", "created"]);
    assert_eq!(h.store.items.lock().unwrap().len(), 1);
}

#[tokio::test]
#[ignore = "needs Redis: run by cargo xtask test"]
async fn a_full_outbox_refuses_new_signals_as_datastorage_unavailable() {
    let h = harness_with(&redis_url(), Options { outbox_max: 2, ..Options::default() }).await;
    assert_eq!(h.post(webhook(json!([alert("One", "firing")]))).await.0, 201);
    assert_eq!(h.post(webhook(json!([alert("Two", "firing")]))).await.0, 201);
    let response = h.request().body(webhook(json!([alert("Three", "firing")]))).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "30");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["dependency"], "datastorage", "{body}");
    assert_eq!(h.store.items.lock().unwrap().len(), 2, "the refused signal was created");
    // Once datastorage takes the events, signals are accepted again.
    let fwd = h.forward();
    wait_for(async || h.outbox_len().await == 0).await;
    assert_eq!(h.post(webhook(json!([alert("Three", "firing")]))).await.0, 201);
    fwd.abort();
}

#[tokio::test]
#[ignore = "needs Redis: run by cargo xtask test"]
async fn a_stopped_forwarder_drains_the_outbox_unless_datastorage_fails() {
    let h = harness(&redis_url()).await;
    for i in 0..5 {
        assert_eq!(h.post(webhook(json!([alert(&format!("Drain{i}"), "firing")]))).await.0, 201);
    }
    assert_eq!(h.outbox_len().await, 5);
    let forwarder = h.forwarder().run(std::future::ready(())).await;
    let left = forwarder.drain(tokio::time::Instant::now() + Duration::from_secs(5)).await;
    assert_eq!((left, h.outbox_len().await, h.ds.events.lock().unwrap().len()), (0, 0, 5));
    // With datastorage failing the drain stops at once and leaves the events in Redis.
    assert_eq!(h.post(webhook(json!([alert("Late", "firing")]))).await.0, 201);
    h.ds.answer.store(503, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let left = forwarder.drain(tokio::time::Instant::now() + Duration::from_secs(10)).await;
    assert_eq!(left, 1);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
#[ignore = "needs Redis: run by cargo xtask test"]
async fn an_alert_may_set_its_own_window_within_the_bounds() {
    let h = harness(&redis_url()).await;
    let mut a = alert("Short", "firing");
    a["annotations"]["remedy_dedup_window_seconds"] = "1".into();
    let (status, first) = h.post(webhook(json!([a.clone()]))).await;
    assert_eq!((status, first["results"][0]["window_seconds"].as_u64()), (201, Some(1)), "{first}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, second) = h.post(webhook(json!([a.clone()]))).await;
    assert_eq!(status, 201, "the 1 s window is over: {second}");
    a["annotations"]["remedy_dedup_window_seconds"] = "100000".into();
    let (status, body) = h.post(webhook(json!([a]))).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("from 1 to 3600"), "{body}");
}

#[tokio::test]
async fn each_audit_delivery_opens_its_own_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A datastorage that answers every request with a 201 it offers to keep alive, and counts
    // the connections it accepts.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let answer = "HTTP/1.1 201 Created\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\n{}";
                    if socket.write_all(answer.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let client = AuditClient::new(&url).unwrap();
    for _ in 0..3 {
        client.send_raw(b"{}".to_vec()).await.unwrap();
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3, "a kept-alive connection would outlive the address it went to");
}
