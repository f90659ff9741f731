//! Replay protection: `X-Timestamp` must lie within the manifest's `REPLAY_WINDOW_SECONDS` of
//! now; inside the window a repeated request is deduplicated like any other delivery.

use crate::fixture::{Caller, Gw, alert, rr_name, send, unix_now, webhook};

async fn window(gw: &Gw) -> i64 {
    gw.setting("REPLAY_WINDOW_SECONDS").await.parse().unwrap()
}

/// Posts `body` as `caller` with `timestamp` as the only `X-Timestamp` (or none).
async fn post_at(
    gw: &Gw,
    caller: &Caller,
    timestamp: Option<String>,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut request = caller.request_without_timestamp(gw).json(body);
    if let Some(t) = timestamp {
        request = request.header("x-timestamp", t);
    }
    let (status, body, _) = send(request).await;
    (status, body)
}

#[tokio::test]
async fn a_timestamp_older_than_the_window_is_400_with_the_reason_and_creates_nothing() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let window = window(&gw).await;
    let name = gw.env.unique("Replayed");
    let sent = (unix_now() - window - 60).to_string();
    let (status, body) = post_at(&gw, &caller, Some(sent), &webhook(vec![alert(&name, &gw.ns, "firing")])).await;
    assert_eq!(status, 400, "{body}");
    let reason = body["error"].as_str().unwrap();
    assert!(reason.contains("old") && reason.contains(&format!("window is {window}s")), "{reason}");
    assert!(gw.rrs_for(&gw.ns, &name).await.is_empty());
}

#[tokio::test]
async fn a_timestamp_beyond_the_window_in_the_future_is_400() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let sent = (unix_now() + window(&gw).await + 60).to_string();
    let (status, body) =
        post_at(&gw, &caller, Some(sent), &webhook(vec![alert(&gw.env.unique("Early"), &gw.ns, "firing")])).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("in the future"), "{body}");
}

#[tokio::test]
async fn a_request_without_a_timestamp_is_400() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let (status, body) =
        post_at(&gw, &caller, None, &webhook(vec![alert(&gw.env.unique("Untimed"), &gw.ns, "firing")])).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("missing X-Timestamp"), "{body}");
}

#[tokio::test]
async fn an_rfc3339_timestamp_inside_the_window_is_accepted() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let sent = jiff::Timestamp::from_second(unix_now() - 30).unwrap().to_string();
    let (status, body) =
        post_at(&gw, &caller, Some(sent), &webhook(vec![alert(&gw.env.unique("Dated"), &gw.ns, "firing")])).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn the_same_request_again_inside_the_window_is_deduplicated() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let sent = unix_now().to_string();
    let body = webhook(vec![alert(&gw.env.unique("Again"), &gw.ns, "firing")]);
    let (first, created) = post_at(&gw, &caller, Some(sent.clone()), &body).await;
    let (second, repeated) = post_at(&gw, &caller, Some(sent), &body).await;
    assert_eq!((first, second), (201, 202), "{created} {repeated}");
    assert_eq!(repeated["results"][0]["remediation_request"], rr_name(&created));
}
