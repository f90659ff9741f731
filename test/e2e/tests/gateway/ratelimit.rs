//! Backpressure: a token bucket per caller (`RATE_LIMIT_BURST`, `RATE_LIMIT_PER_SECOND`),
//! answering 429 with `Retry-After`. The specs bound what may pass by the time they took, so a
//! slow machine changes the numbers but never the verdict.

use std::time::{Duration, Instant};

use crate::fixture::{Caller, Gw, alert, one_steady_gateway, send, webhook};

struct Limit {
    burst: usize,
    per_second: f64,
}

async fn limit(gw: &Gw) -> Limit {
    Limit {
        burst: gw.setting("RATE_LIMIT_BURST").await.parse().unwrap(),
        per_second: gw.setting("RATE_LIMIT_PER_SECOND").await.parse().unwrap(),
    }
}

/// Sends resolved alerts (nothing is created), 16 at a time so that even a slow cluster sends
/// faster than the bucket refills, until the first 429; how many passed, how long that took,
/// and the 429's `Retry-After` and body.
async fn exhaust(gw: &Gw, caller: &Caller, limit: &Limit) -> (usize, Duration, u64, serde_json::Value) {
    let body = webhook(vec![alert(&gw.env.unique("Throttled"), &gw.ns, "resolved")]);
    let started = Instant::now();
    let mut passed = 0;
    while passed < limit.burst * 10 {
        let wave = (0..16).map(|_| send(caller.request(gw).json(&body)));
        let mut refused = None;
        for (status, answer, headers) in futures::future::join_all(wave).await {
            match status {
                200 => passed += 1,
                429 => refused = Some((headers["retry-after"].to_str().unwrap().parse().unwrap(), answer)),
                other => panic!("expected 200 or 429, got {other}: {answer}"),
            }
        }
        if let Some((retry_after, answer)) = refused {
            return (passed, started.elapsed(), retry_after, answer);
        }
    }
    panic!("no 429 after {passed} requests");
}

#[tokio::test]
async fn over_its_rate_limit_a_caller_gets_429_with_retry_after_and_others_are_not_throttled() {
    let _steady = one_steady_gateway().await;
    let gw = Gw::get().await;
    let (noisy, quiet) = (gw.new_caller("noisy").await, gw.new_caller("quiet").await);
    let limit = limit(&gw).await;
    let (passed, took, retry_after, answer) = exhaust(&gw, &noisy, &limit).await;
    // The burst passes; beyond it only what the bucket refilled while the requests were sent.
    let refilled = (took.as_secs_f64() * limit.per_second).ceil() as usize;
    assert!(
        (limit.burst..=limit.burst + refilled).contains(&passed),
        "{passed} requests passed in {took:?}; the limit allows {} to {}",
        limit.burst,
        limit.burst + refilled
    );
    assert!(answer["error"].as_str().unwrap().contains("rate limit"), "{answer}");
    assert_eq!(answer["retry_after_seconds"], retry_after);
    assert!(retry_after >= 1 && retry_after as f64 <= (1.0 / limit.per_second).ceil(), "Retry-After {retry_after}");
    // Each caller has its own bucket.
    let (status, body) = quiet.post(&gw, &webhook(vec![alert(&gw.env.unique("Quiet"), &gw.ns, "firing")])).await;
    assert_eq!(status, 201, "{body}");
    // Retry-After is the time until the next token, so after it the caller is served.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let (status, body) = noisy.post(&gw, &webhook(vec![alert(&gw.env.unique("Later"), &gw.ns, "resolved")])).await;
    assert_eq!(status, 200, "{body}");
}
