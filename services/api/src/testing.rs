//! Test doubles for the services' tests: a datastorage stand-in on a real socket and a
//! mocked Kubernetes API server.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU16, Ordering},
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::Value;

use crate::audit::AuditEvent;

/// A datastorage stand-in: records the events it accepts and answers with a settable status.
#[derive(Clone)]
pub struct FakeDatastorage {
    /// Base URL, e.g. `http://127.0.0.1:12345`.
    pub url: String,
    events: Arc<Mutex<Vec<AuditEvent>>>,
    answer: Arc<AtomicU16>,
}

impl FakeDatastorage {
    /// Starts one on 127.0.0.1, answering 201.
    pub async fn start() -> Self {
        let events = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(AtomicU16::new(201));
        let state = (events.clone(), answer.clone());
        let app = Router::new().route("/api/v1/audit/events", post(record)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        Self { url, events, answer }
    }

    /// Sets the status code of the next answers.
    pub fn answer(&self, status: u16) {
        self.answer.store(status, Ordering::SeqCst);
    }

    /// The events accepted so far.
    pub fn events(&self) -> Vec<AuditEvent> {
        self.events.lock().expect("lock").clone()
    }
}

type DsState = (Arc<Mutex<Vec<AuditEvent>>>, Arc<AtomicU16>);

async fn record(State((events, answer)): State<DsState>, Json(e): Json<AuditEvent>) -> StatusCode {
    let code = StatusCode::from_u16(answer.load(Ordering::SeqCst)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if code.is_success() {
        events.lock().expect("lock").push(e);
    }
    code
}

/// The server side of a mocked API server.
pub struct MockApi(tower_test::mock::Handle<Request<Body>, Response<Body>>);

/// One request received by a [`MockApi`].
pub struct MockRequest {
    /// HTTP method.
    pub method: Method,
    /// URI path.
    pub path: String,
    /// JSON body, `Null` when empty.
    pub body: Value,
    send: tower_test::mock::SendResponse<Response<Body>>,
}

impl MockRequest {
    /// Answers with `status` and a JSON body.
    pub fn respond(self, status: u16, body: Value) {
        let resp = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string().into_bytes()))
            .expect("response");
        self.send.send_response(resp);
    }

    /// Answers with a Kubernetes `Status` failure.
    pub fn respond_status(self, code: u16, reason: &str) {
        let body = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                      "message": reason, "reason": reason, "code": code});
        self.respond(code, body);
    }
}

impl MockApi {
    /// A client talking to a new mock, and the mock.
    pub fn pair() -> (kube::Client, Self) {
        let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (kube::Client::new(svc, "default"), Self(handle))
    }

    /// The next request, or `None` when every client is gone.
    pub async fn next(&mut self) -> Option<MockRequest> {
        let (req, send) = self.0.next_request().await?;
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let bytes = req.into_body().collect_bytes().await.expect("request body");
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("JSON body") };
        Some(MockRequest { method, path, body, send })
    }

    /// The next request, asserting its method and path.
    pub async fn expect(&mut self, method: Method, path: &str) -> MockRequest {
        let req = self.next().await.unwrap_or_else(|| panic!("expected {method} {path}, got no request"));
        assert_eq!((&req.method, req.path.as_str()), (&method, path), "unexpected request");
        req
    }
}
