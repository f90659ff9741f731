//! The Kubernetes-facing store against a mocked API server (`tower_test::mock::pair`).

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

use gateway::store::{Creation, KubeStore, RrStore};
use remedy_api::{RemediationRequest, RemediationRequestSpec};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn client() -> (kube::Client, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(svc, "default"), handle)
}

fn rr_json(count: Option<i64>, rv: &str) -> Value {
    json!({"apiVersion": "remedy.dev/v1alpha1", "kind": "RemediationRequest",
           "metadata": {"name": "rr-1", "namespace": "shop", "resourceVersion": rv},
           "spec": {"signalFingerprint": "f", "signalName": "A", "severity": "", "targetNamespace": "shop"},
           "status": {"occurrenceCount": count}})
}

fn status(code: u16, reason: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason,
                      "reason": reason, "code": code});
    Response::builder().status(code).body(Body::from(body.to_string().into_bytes())).unwrap()
}

fn ok(v: Value) -> Response<Body> {
    Response::builder().status(StatusCode::OK).body(Body::from(v.to_string().into_bytes())).unwrap()
}

async fn next(handle: &mut Handle) -> (Method, String, Value, tower_test::mock::SendResponse<Response<Body>>) {
    let (req, send) = handle.next_request().await.expect("a request");
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (method, path, body, send)
}

const RR_PATH: &str = "/apis/remedy.dev/v1alpha1/namespaces/shop/remediationrequests/rr-1";

#[tokio::test]
async fn occurrence_update_retries_on_conflict_with_fresh_resource_version() {
    let (client, mut handle) = client();
    let server = tokio::spawn(async move {
        let (m, p, _, send) = next(&mut handle).await;
        assert_eq!((m, p.as_str()), (Method::GET, RR_PATH));
        send.send_response(ok(rr_json(Some(2), "5")));
        let (m, p, body, send) = next(&mut handle).await;
        assert_eq!((m, p), (Method::PATCH, format!("{RR_PATH}/status")));
        assert_eq!(body["metadata"]["resourceVersion"], "5");
        assert_eq!(body["status"]["occurrenceCount"], 3);
        send.send_response(status(409, "Conflict"));
        let (_, _, _, send) = next(&mut handle).await;
        send.send_response(ok(rr_json(Some(3), "6")));
        let (_, _, body, send) = next(&mut handle).await;
        assert_eq!(body["metadata"]["resourceVersion"], "6");
        assert_eq!(body["status"]["occurrenceCount"], 4);
        assert_eq!(body["status"]["lastSeen"], "2026-01-01T00:00:00Z");
        send.send_response(ok(rr_json(Some(4), "7")));
    });
    let count = KubeStore::new(client).record_occurrence("shop", "rr-1", "2026-01-01T00:00:00Z").await.unwrap();
    assert_eq!(count, Some(4));
    server.await.unwrap();
}

#[tokio::test]
async fn occurrence_of_missing_resource_is_none() {
    let (client, mut handle) = client();
    let server = tokio::spawn(async move {
        let (_, _, _, send) = next(&mut handle).await;
        send.send_response(status(404, "NotFound"));
    });
    let count = KubeStore::new(client).record_occurrence("shop", "rr-1", "t").await.unwrap();
    assert_eq!(count, None);
    server.await.unwrap();
}

#[tokio::test]
async fn create_reports_existing_resources_and_sets_first_occurrence() {
    let (client, mut handle) = client();
    let server = tokio::spawn(async move {
        let (m, p, body, send) = next(&mut handle).await;
        assert_eq!((m, p.as_str()), (Method::POST, "/apis/remedy.dev/v1alpha1/namespaces/shop/remediationrequests"));
        assert_eq!(body["metadata"]["name"], "rr-1");
        send.send_response(ok(rr_json(None, "1")));
        let (m, p, body, send) = next(&mut handle).await;
        assert_eq!((m, p), (Method::PATCH, format!("{RR_PATH}/status")));
        assert_eq!(body["status"]["occurrenceCount"], 1);
        send.send_response(ok(rr_json(Some(1), "2")));
        let (_, _, _, send) = next(&mut handle).await;
        send.send_response(status(409, "AlreadyExists"));
    });
    let mut rr = RemediationRequest::new(
        "rr-1",
        RemediationRequestSpec {
            signal_fingerprint: "f".into(),
            signal_name: "A".into(),
            target_namespace: "shop".into(),
            ..Default::default()
        },
    );
    rr.metadata.namespace = Some("shop".into());
    let store = KubeStore::new(client);
    assert_eq!(store.create(&rr, "t").await.unwrap(), Creation::Created);
    assert_eq!(store.create(&rr, "t").await.unwrap(), Creation::AlreadyExists);
    server.await.unwrap();
}

#[tokio::test]
async fn create_in_missing_namespace_is_reported() {
    let (client, mut handle) = client();
    let server = tokio::spawn(async move {
        let (_, _, _, send) = next(&mut handle).await;
        let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                          "message": "namespaces \"shop\" not found", "reason": "NotFound",
                          "details": {"name": "shop", "kind": "namespaces"}, "code": 404});
        send.send_response(Response::builder().status(404).body(Body::from(body.to_string().into_bytes())).unwrap());
        let (_, _, _, send) = next(&mut handle).await;
        let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                          "message": "the server could not find the requested resource", "reason": "NotFound",
                          "details": {}, "code": 404});
        send.send_response(Response::builder().status(404).body(Body::from(body.to_string().into_bytes())).unwrap());
    });
    let mut rr = RemediationRequest::new(
        "rr-1",
        RemediationRequestSpec {
            signal_fingerprint: "f".into(),
            signal_name: "A".into(),
            target_namespace: "shop".into(),
            ..Default::default()
        },
    );
    rr.metadata.namespace = Some("shop".into());
    let store = KubeStore::new(client);
    assert_eq!(store.create(&rr, "t").await.unwrap(), Creation::NamespaceNotFound);
    assert!(store.create(&rr, "t").await.is_err(), "a missing CRD is an error worth retrying");
    server.await.unwrap();
}
