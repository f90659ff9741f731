//! The HTTP API: `POST /api/v1/signals/prometheus` (authenticated, rate limited, replay
//! protected), and the open `/healthz`, `/readyz` and `/metrics`. Every response carries the
//! security headers; cross-origin requests pass only from configured origins.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    alert::{self, Signal},
    auth::{self, Access, Caller, Reviewer, TokenVerdict},
    config::DedupWindow,
    failure::Refusal,
    hardening,
    intake::{Intake, SignalResult, missing_namespace},
    ratelimit::RateLimiter,
    replay,
    scope::{InScope, Scope},
    store::RrStore,
};

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState<S, R> {
    /// Signal handling: deduplication, resources, audit.
    pub intake: Intake<S>,
    /// Token and access reviews.
    pub access: Access<R>,
    /// Which namespaces the gateway acts in.
    pub scope: Scope<S>,
    /// Per-caller rate limit.
    pub limiter: Arc<RateLimiter>,
    /// Deduplication window bounds.
    pub dedup: DedupWindow,
    /// Accepted distance of `X-Timestamp` from now; zero turns the check off.
    pub replay_window: Duration,
    /// Set on SIGTERM: `/readyz` answers 503 so endpoints stop sending traffic.
    pub shutting_down: Arc<AtomicBool>,
}

/// The answer to a webhook call.
#[derive(Debug, Serialize, Deserialize)]
pub struct WebhookResponse {
    /// One result per alert, in payload order.
    pub results: Vec<SignalResult>,
}

/// The whole router: signals behind the guard, the open endpoints, and around everything the
/// CORS check and the security headers.
pub fn router<S: RrStore, R: Reviewer>(
    state: AppState<S, R>,
    max_body_bytes: usize,
    cors_allowed_origins: Vec<String>,
) -> Router {
    let signals = Router::new()
        .route("/api/v1/signals/prometheus", post(receive::<S, R>))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard::<S, R>));
    Router::new()
        .merge(signals)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<S, R>))
        .route("/metrics", get(metrics::<S, R>))
        .with_state(state)
        .layer(middleware::from_fn_with_state(Arc::new(cors_allowed_origins), hardening::cors))
        .layer(middleware::map_response(hardening::security_headers))
}

fn refuse<S, R>(st: &AppState<S, R>, refusal: Refusal) -> Response {
    st.intake.metrics.refusal(refusal.kind());
    refusal.into_response()
}

fn unavailable<S, R>(st: &AppState<S, R>, err: &anyhow::Error) -> Response {
    st.intake.metrics.signal("error");
    tracing::error!(error = %format!("{err:#}"), "request not served");
    refuse(st, Refusal::from_error(err))
}

/// Before the body is read: the caller (401), its rate limit (429) and the timestamp (400).
async fn guard<S: RrStore, R: Reviewer>(
    State(st): State<AppState<S, R>>,
    mut request: Request,
    next: Next,
) -> Response {
    let now = Instant::now();
    let token = match auth::bearer_token(request.headers()) {
        Ok(token) => token.to_owned(),
        Err(e) => return refuse(&st, Refusal::unauthenticated(e.to_string())),
    };
    let caller = match st.access.authenticate(&token, now).await {
        Ok(TokenVerdict::Authenticated(caller)) => caller,
        Ok(TokenVerdict::Rejected(reason)) => {
            return refuse(&st, Refusal::unauthenticated(format!("bearer token rejected by the API server: {reason}")));
        }
        Err(e) => return unavailable(&st, &e),
    };
    if let Err(seconds) = st.limiter.check(&caller.username, now) {
        tracing::info!(caller = %caller.username, retry_after = seconds, "rate limited");
        return refuse(&st, Refusal::rate_limited(seconds));
    }
    let sent = request.headers().get(replay::HEADER).map(|v| v.to_str().unwrap_or("<not text>"));
    if let Err(reason) = replay::check(sent, unix_now(), st.replay_window) {
        return refuse(&st, Refusal::bad_request(reason));
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

async fn receive<S: RrStore, R: Reviewer>(
    State(st): State<AppState<S, R>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    let signals = match alert::parse(&body, &st.dedup) {
        Ok(s) => s,
        Err(e) => {
            st.intake.metrics.signal("rejected");
            return refuse(&st, Refusal::bad_request(e.to_string()));
        }
    };
    // Scope and access for every namespace first: a refused payload creates nothing.
    let now = Instant::now();
    let mut standing: BTreeMap<String, InScope> = BTreeMap::new();
    for signal in &signals {
        let ns = &signal.namespace;
        if standing.contains_key(ns) {
            continue;
        }
        let verdict = match st.scope.check(ns, false, now).await {
            Ok(v) => v,
            Err(e) => return unavailable(&st, &e),
        };
        if verdict == InScope::Managed {
            match st.access.authorize(&caller, ns, now).await {
                Ok(access) if access.allowed => {}
                Ok(access) => {
                    let reason = auth::denial(&caller, ns, &access);
                    tracing::info!(%reason, "caller not allowed");
                    return refuse(&st, Refusal::forbidden(reason).with("namespace", ns.as_str()));
                }
                Err(e) => return unavailable(&st, &e),
            }
        }
        standing.insert(ns.clone(), verdict);
    }
    let in_scope = |s: &Signal| standing[&s.namespace] == InScope::Managed;
    if signals.iter().any(in_scope)
        && let Err(e) = st.intake.ensure_outbox_room().await
    {
        return unavailable(&st, &e);
    }
    let mut results = Vec::with_capacity(signals.len());
    for signal in &signals {
        let result = match standing[&signal.namespace] {
            InScope::Missing => SignalResult::of(signal, "rejected").because(missing_namespace(&signal.namespace)),
            InScope::Unmanaged => SignalResult::of(signal, "out_of_scope").because(st.scope.reason(&signal.namespace)),
            InScope::Managed => match st.intake.accept(signal).await {
                Ok(r) => r,
                Err(e) => return unavailable(&st, &e),
            },
        };
        st.intake.count(&result);
        results.push(result);
    }
    answer(&st, results)
}

/// 201 if any alert was created, else 202 if any was a duplicate, else 400 if any was
/// rejected, else 403 if every alert was out of scope, else 200.
fn answer<S, R>(st: &AppState<S, R>, results: Vec<SignalResult>) -> Response {
    let any = |status: &str| results.iter().any(|r| r.status == status);
    let first_reason =
        |status: &str| results.iter().find(|r| r.status == status).and_then(|r| r.reason.clone()).unwrap_or_default();
    let status = if any("created") {
        StatusCode::CREATED
    } else if any("duplicate") {
        StatusCode::ACCEPTED
    } else if any("rejected") {
        let reason = first_reason("rejected");
        return refuse(st, Refusal::bad_request(reason).with("results", json!(results)));
    } else if results.iter().all(|r| r.status == "out_of_scope") {
        let reason = first_reason("out_of_scope");
        return refuse(st, Refusal::forbidden(reason).with("results", json!(results)));
    } else {
        StatusCode::OK
    };
    (status, Json(WebhookResponse { results })).into_response()
}

async fn readyz<S: RrStore, R: Reviewer>(State(st): State<AppState<S, R>>) -> (StatusCode, String) {
    if st.shutting_down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down".to_owned());
    }
    let (redis, api) = tokio::join!(st.intake.redis.ping(), st.intake.store.ready());
    match (redis, api) {
        (Ok(()), Ok(())) => (StatusCode::OK, "ready".to_owned()),
        (r, a) => {
            let reasons: Vec<String> = [r.err(), a.err()].into_iter().flatten().collect();
            (StatusCode::SERVICE_UNAVAILABLE, reasons.join("; "))
        }
    }
}

async fn metrics<S: RrStore, R: Reviewer>(State(st): State<AppState<S, R>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], st.intake.metrics.render())
        .into_response()
}
