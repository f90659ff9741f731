//! Browser-facing hardening: CORS refused unless the origin is configured, security headers on
//! every response.

use remedy_e2e::http;
use reqwest::header::HeaderMap;

use crate::fixture::{ALLOWED_ORIGIN, Gw, alert, send, unix_now, unsigned, webhook};

const OTHER_ORIGIN: &str = "https://attacker.example";

async fn preflight(gw: &Gw, origin: &str) -> (u16, HeaderMap) {
    let response = http()
        .request(reqwest::Method::OPTIONS, gw.url("/api/v1/signals/prometheus"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type, x-timestamp")
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.headers().clone())
}

#[tokio::test]
async fn a_preflight_from_the_configured_origin_is_answered() {
    let gw = Gw::get().await;
    let (status, headers) = preflight(&gw, ALLOWED_ORIGIN).await;
    assert_eq!(status, 204);
    assert_eq!(headers["access-control-allow-origin"], ALLOWED_ORIGIN);
    assert_eq!(headers["access-control-allow-methods"], "POST");
    let allowed = headers["access-control-allow-headers"].to_str().unwrap();
    assert!(["authorization", "content-type", "x-timestamp"].iter().all(|h| allowed.contains(h)), "{allowed}");
}

#[tokio::test]
async fn a_preflight_from_another_origin_is_refused() {
    let gw = Gw::get().await;
    let (status, headers) = preflight(&gw, OTHER_ORIGIN).await;
    assert_eq!(status, 403);
    assert!(headers.get("access-control-allow-origin").is_none(), "{headers:?}");
}

#[tokio::test]
async fn a_cross_origin_signal_from_another_origin_is_refused_and_creates_nothing() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let name = gw.env.unique("CrossOrigin");
    let request =
        caller.request(&gw).header("origin", OTHER_ORIGIN).json(&webhook(vec![alert(&name, &gw.ns, "firing")]));
    let (status, body, headers) = send(request).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains(OTHER_ORIGIN), "{body}");
    assert!(headers.get("access-control-allow-origin").is_none());
    assert!(gw.rrs_for(&gw.ns, &name).await.is_empty());
}

#[tokio::test]
async fn a_signal_from_the_configured_origin_is_served_and_names_it() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let request = caller.request(&gw).header("origin", ALLOWED_ORIGIN).json(&webhook(vec![alert(
        &gw.env.unique("Console"),
        &gw.ns,
        "firing",
    )]));
    let (status, body, headers) = send(request).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(headers["access-control-allow-origin"], ALLOWED_ORIGIN);
    assert_eq!(headers["vary"], "origin");
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let gw = Gw::get().await;
    let caller = gw.caller().await;
    let ns = gw.ns.clone();
    let mut answers = Vec::new();
    for path in ["/healthz", "/readyz", "/metrics", "/no-such-path"] {
        let response = http().get(gw.url(path)).send().await.unwrap();
        answers.push((path.to_owned(), response.status().as_u16(), response.headers().clone()));
    }
    let signals = [
        ("201", caller.request(&gw).json(&webhook(vec![alert(&gw.env.unique("Headers"), &ns, "firing")]))),
        ("400", caller.request(&gw).body("{")),
        ("401", unsigned(&gw).header("x-timestamp", unix_now().to_string()).body("{}")),
    ];
    for (what, request) in signals {
        let (status, _, headers) = send(request).await;
        answers.push((format!("signal {what}"), status, headers));
    }
    let (status, headers) = preflight(&gw, OTHER_ORIGIN).await;
    answers.push(("refused preflight".into(), status, headers));
    let statuses: Vec<u16> = answers.iter().map(|(_, s, _)| *s).collect();
    assert_eq!(statuses, [200, 200, 200, 404, 201, 400, 401, 403]);
    for (what, _, headers) in &answers {
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
        ] {
            assert_eq!(headers.get(name).and_then(|v| v.to_str().ok()), Some(value), "{what}: {name}");
        }
    }
}
