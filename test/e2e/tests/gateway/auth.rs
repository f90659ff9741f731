//! Authentication by TokenReview and authorization by SubjectAccessReview, with real
//! ServiceAccount tokens from the cluster's TokenRequest API.

use crate::fixture::{Gw, alert, rr_name, send, unix_now, unsigned, webhook};

#[tokio::test]
async fn a_request_without_a_token_is_401_and_creates_nothing() {
    let gw = Gw::get().await;
    let name = gw.env.unique("Anonymous");
    let request = unsigned(&gw).header("x-timestamp", unix_now().to_string());
    let (status, body, headers) = send(request.json(&webhook(vec![alert(&name, &gw.ns, "firing")]))).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("missing bearer token"), "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert!(gw.rrs_for(&gw.ns, &name).await.is_empty());
}

#[tokio::test]
async fn a_forged_token_is_401_with_the_api_servers_reason() {
    let gw = Gw::get().await;
    let name = gw.env.unique("Forged");
    let request = unsigned(&gw)
        .bearer_auth("eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl")
        .header("x-timestamp", unix_now().to_string());
    let (status, body, _) = send(request.json(&webhook(vec![alert(&name, &gw.ns, "firing")]))).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("rejected by the API server"), "{body}");
    assert!(gw.rrs_for(&gw.ns, &name).await.is_empty());
}

#[tokio::test]
async fn a_token_issued_for_another_audience_is_401() {
    let gw = Gw::get().await;
    let caller = gw.caller_for_audience("audience", "https://somewhere-else.example").await;
    let name = gw.env.unique("Audience");
    let (status, body) = caller.post(&gw, &webhook(vec![alert(&name, &gw.ns, "firing")])).await;
    assert_eq!(status, 401, "{body}");
    assert!(gw.rrs_for(&gw.ns, &name).await.is_empty());
}

#[tokio::test]
async fn a_service_account_rbac_allows_is_served() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let (status, body) = caller.post(&gw, &webhook(vec![alert(&gw.env.unique("Allowed"), &gw.ns, "firing")])).await;
    assert_eq!(status, 201, "{body}");
    assert!(gw.rrs(&gw.ns).get_opt(&rr_name(&body)).await.unwrap().is_some());
}

#[tokio::test]
async fn a_service_account_rbac_does_not_allow_is_403_with_the_reason_and_creates_nothing() {
    let gw = Gw::get().await;
    let stranger = gw.stranger("stranger").await;
    let name = gw.env.unique("Intruder");
    let (status, body) = stranger.post(&gw, &webhook(vec![alert(&name, &gw.ns, "firing")])).await;
    assert_eq!(status, 403, "{body}");
    let reason = body["error"].as_str().unwrap();
    assert!(reason.contains(&stranger.username()), "{reason}");
    assert!(reason.contains(&format!("create remediationrequests.remedy.dev in namespace {:?}", gw.ns)), "{reason}");
    assert_eq!(body["namespace"], gw.ns.as_str());
    assert!(gw.rrs_for(&gw.ns, &name).await.is_empty());
}

#[tokio::test]
async fn one_forbidden_namespace_refuses_the_whole_payload() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let closed = gw.managed_namespace_without_grant("closed").await;
    let name = gw.env.unique("Partial");
    let body = webhook(vec![alert(&name, &gw.ns, "firing"), alert(&name, &closed, "firing")]);
    let (status, answer) = caller.post(&gw, &body).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["namespace"], closed.as_str());
    assert!(gw.rrs_for(&gw.ns, &name).await.is_empty(), "the allowed alert of a refused payload was created");
}

#[tokio::test]
async fn a_new_grant_takes_effect_at_once() {
    let gw = Gw::get().await;
    let caller = gw.stranger("grantee").await;
    let body = webhook(vec![alert(&gw.env.unique("Granted"), &gw.ns, "firing")]);
    assert_eq!(caller.post(&gw, &body).await.0, 403);
    // Denials are not cached: once RBAC allows the caller, its next request is served.
    gw.allow(&caller, &gw.ns).await;
    let (status, answer) = caller.post(&gw, &body).await;
    assert_eq!(status, 201, "{answer}");
}
