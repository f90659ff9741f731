//! The HTTP API over real sockets. Tests marked `#[ignore]` need PostgreSQL
//! (`REMEDY_TEST_DATABASE_URL`, from `test/local-services.sh`); the others run anywhere.

use std::{net::SocketAddr, str::FromStr, time::Duration};

use datastorage::{db, http};
use remedy_api::audit::{AuditEvent, Outcome};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool, postgres::PgConnectOptions};

const LIMIT: usize = 4096;

async fn serve(pool: PgPool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, http::router(pool, LIMIT)).await.unwrap();
    });
    format!("http://{addr}")
}

/// A pool pointing at a port where nothing listens.
fn dead_pool() -> PgPool {
    let opts = PgConnectOptions::new().host("127.0.0.1").port(1).username("x").password("x");
    db::lazy_pool(opts)
}

fn database_url() -> String {
    std::env::var("REMEDY_TEST_DATABASE_URL").expect(
        "REMEDY_TEST_DATABASE_URL is not set: run `test/local-services.sh up` and \
         `eval \"$(test/local-services.sh env)\"` (or `cargo xtask test`)",
    )
}

/// A fresh database for one test, so tests run in parallel without colliding.
struct TestDb {
    admin: PgConnectOptions,
    name: String,
}

impl TestDb {
    async fn create() -> Self {
        let admin = PgConnectOptions::from_str(&database_url()).expect("parse REMEDY_TEST_DATABASE_URL");
        let name = format!("ds_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect_with(&admin).await.expect("connect to test PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
        Self { admin, name }
    }

    fn opts(&self) -> PgConnectOptions {
        self.admin.clone().database(&self.name)
    }

    /// Drops the database (a failed test leaves it for `test/local-services.sh down`).
    async fn drop(self) {
        let mut conn = PgConnection::connect_with(&self.admin).await.unwrap();
        sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.name)).execute(&mut conn).await.unwrap();
    }
}

fn event(id: &str, correlation: &str, event_type: &str) -> AuditEvent {
    AuditEvent {
        event_id: id.into(),
        event_type: event_type.into(),
        event_timestamp: "2026-01-02T03:04:05.5Z".into(),
        correlation_id: correlation.into(),
        actor: "test".into(),
        namespace: Some("default".into()),
        resource: Some("RemediationRequest/rr-1".into()),
        outcome: Outcome::Success,
        data: json!({"alert": "HighCPU"}),
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

async fn post_raw(base: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let resp = client()
        .post(format!("{base}/api/v1/audit/events"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test]
async fn health_is_ok_and_readiness_fails_without_database() {
    let base = serve(dead_pool()).await;
    let health = client().get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = client().get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
}

#[tokio::test]
async fn malformed_json_is_rejected_with_a_reason() {
    let base = serve(dead_pool()).await;
    let (status, body) = post_raw(&base, "{not json").await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("invalid audit event JSON"), "{body}");
}

#[tokio::test]
async fn missing_and_invalid_fields_are_rejected() {
    let base = serve(dead_pool()).await;
    let mut v = serde_json::to_value(event("e", "c", "t")).unwrap();
    v.as_object_mut().unwrap().remove("correlation_id");
    let (status, body) = post_raw(&base, v.to_string()).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("correlation_id"), "{body}");

    let mut e = event("e", "c", "t");
    e.event_timestamp = "not a time".into();
    let (status, body) = post_raw(&base, serde_json::to_string(&e).unwrap()).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("RFC 3339"), "{body}");
}

#[tokio::test]
async fn oversized_body_is_rejected_with_413() {
    let base = serve(dead_pool()).await;
    let mut e = event("e", "c", "t");
    e.data = json!({"blob": "x".repeat(LIMIT * 2)});
    let (status, _) = post_raw(&base, serde_json::to_string(&e).unwrap()).await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn valid_event_with_database_down_is_503_not_accepted() {
    let base = serve(dead_pool()).await;
    let (status, body) = post_raw(&base, serde_json::to_string(&event("e", "c", "t")).unwrap()).await;
    assert_eq!(status, 503, "{body}");
}

#[tokio::test]
async fn bad_limit_is_rejected() {
    let base = serve(dead_pool()).await;
    let resp = client().get(format!("{base}/api/v1/audit/events?limit=0")).send().await.unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run by cargo xtask test"]
async fn readiness_follows_migrations_and_migrate_is_idempotent() {
    let db = TestDb::create().await;
    let opts = db.opts();
    let pool = db::lazy_pool(opts.clone());
    let base = serve(pool.clone()).await;
    let ready = client().get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "ready before migrations");

    let migrate_pool = db::connect_with_retry(opts, Duration::from_secs(10)).await.unwrap();
    db::migrate(&migrate_pool).await.unwrap();
    db::migrate(&migrate_pool).await.unwrap();
    let ready = client().get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    db.drop().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run by cargo xtask test"]
async fn events_are_stored_once_and_queried_by_filters() {
    let db = TestDb::create().await;
    let opts = db.opts();
    let pool = db::connect_with_retry(opts, Duration::from_secs(10)).await.unwrap();
    db::migrate(&pool).await.unwrap();
    let base = serve(pool).await;

    let first = event("e1", "rr-a", "gateway.signal.received");
    let (status, body) = post_raw(&base, serde_json::to_string(&first).unwrap()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["created"], true);
    let (status, body) = post_raw(&base, serde_json::to_string(&first).unwrap()).await;
    assert_eq!(status, 200, "a repeated event id is acknowledged: {body}");
    assert_eq!(body["created"], false);

    for (id, corr, ty) in [("e2", "rr-a", "gateway.signal.deduplicated"), ("e3", "rr-b", "gateway.signal.received")] {
        let (status, _) = post_raw(&base, serde_json::to_string(&event(id, corr, ty)).unwrap()).await;
        assert_eq!(status, 201);
    }

    let get = |query: &'static str| {
        let base = base.clone();
        async move {
            let resp = client().get(format!("{base}/api/v1/audit/events?{query}")).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let body: http::Events = resp.json().await.unwrap();
            body.events.into_iter().map(|e| e.event_id).collect::<Vec<_>>()
        }
    };
    assert_eq!(get("correlation_id=rr-a").await, ["e1", "e2"]);
    assert_eq!(get("event_type=gateway.signal.received").await, ["e1", "e3"]);
    assert_eq!(get("correlation_id=rr-a&event_type=gateway.signal.received").await, ["e1"]);
    assert_eq!(get("limit=2").await.len(), 2);
    assert!(get("correlation_id=none").await.is_empty());

    let resp = client().get(format!("{base}/api/v1/audit/events?correlation_id=rr-b")).send().await.unwrap();
    let body: http::Events = resp.json().await.unwrap();
    let stored = &body.events[0];
    assert_eq!(stored.event_timestamp, "2026-01-02T03:04:05.500000Z");
    assert_eq!(stored.data, json!({"alert": "HighCPU"}));
    assert_eq!(stored.resource.as_deref(), Some("RemediationRequest/rr-1"));
    assert_eq!(stored.outcome, Outcome::Success);
    db.drop().await;
}
