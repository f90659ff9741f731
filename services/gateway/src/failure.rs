//! Every answer that is not a success, in one shape (`{"error": reason, ...}`), and the
//! classification of failures: a dependency's outage is 503 with a retry hint, never 500.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

/// What the gateway depends on while it handles a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    /// The Kubernetes API server: token and access reviews, namespaces, RemediationRequests.
    KubernetesApi,
    /// Redis: deduplication claims and the audit outbox.
    Redis,
    /// Datastorage, through the audit outbox: refused only when the outbox is full.
    Datastorage,
}

impl Dependency {
    /// The name in answers and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::KubernetesApi => "kubernetes-api",
            Self::Redis => "redis",
            Self::Datastorage => "datastorage",
        }
    }

    /// Seconds a client should wait before retrying (`Retry-After`): an API server or Redis
    /// blip is usually short; a full outbox drains only once datastorage is back.
    pub fn retry_after(self) -> u64 {
        match self {
            Self::KubernetesApi | Self::Redis => 5,
            Self::Datastorage => 30,
        }
    }
}

impl std::fmt::Display for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A failure of a dependency, marked where the call was made.
#[derive(Debug, thiserror::Error)]
#[error("{dependency}")]
pub struct DependencyError {
    /// Which dependency failed.
    pub dependency: Dependency,
    /// What it answered, or why it did not.
    pub source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

/// Marks the error of a call to a dependency.
pub trait OnDependency<T> {
    /// The result, its error marked as `dependency`'s.
    fn on(self, dependency: Dependency) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> OnDependency<T> for Result<T, E> {
    fn on(self, dependency: Dependency) -> anyhow::Result<T> {
        self.map_err(|e| anyhow::Error::new(DependencyError { dependency, source: e.into().into() }))
    }
}

/// The dependency whose failure caused `err`, if any.
pub fn dependency_of(err: &anyhow::Error) -> Option<Dependency> {
    err.chain().find_map(|e| e.downcast_ref::<DependencyError>().map(|d| d.dependency))
}

/// A refused request: status, reason and what else the answer says.
#[derive(Debug)]
pub struct Refusal {
    /// HTTP status.
    pub status: StatusCode,
    /// The `error` field.
    pub reason: String,
    /// Seconds for `Retry-After`, when retrying later may succeed.
    pub retry_after: Option<u64>,
    /// Further fields of the body.
    pub extra: Map<String, Value>,
}

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self { status, reason: reason.into(), retry_after: None, extra: Map::new() }
    }

    /// 400: the request itself is wrong; retrying it unchanged cannot succeed.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason)
    }

    /// 401: no caller identity (missing or rejected token).
    pub fn unauthenticated(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, reason)
    }

    /// 403: the caller, the origin or the namespace is not allowed.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, reason)
    }

    /// 429: the caller's rate limit; retry after `seconds`.
    pub fn rate_limited(seconds: u64) -> Self {
        let mut r = Self::new(StatusCode::TOO_MANY_REQUESTS, format!("rate limit exceeded: retry in {seconds} s"));
        r.retry_after = Some(seconds);
        r
    }

    /// 503 with a retry hint when a dependency failed; 500 only for a fault of the gateway
    /// itself.
    pub fn from_error(err: &anyhow::Error) -> Self {
        match dependency_of(err) {
            Some(dependency) => {
                let seconds = dependency.retry_after();
                let mut r = Self::new(StatusCode::SERVICE_UNAVAILABLE, format!("signal not accepted, retry: {err:#}"));
                r.retry_after = Some(seconds);
                r.extra.insert("dependency".into(), dependency.name().into());
                r
            }
            None => Self::new(StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {err:#}")),
        }
    }

    /// Adds `key: value` to the body.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::UNAUTHORIZED => "unauthenticated",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "internal",
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.reason });
        if let Some(seconds) = self.retry_after {
            body["retry_after_seconds"] = seconds.into();
        }
        for (k, v) in self.extra {
            body[k] = v;
        }
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    #[test]
    fn a_dependency_is_found_under_any_context() {
        let err = Err::<(), _>(std::io::Error::other("connection refused"))
            .on(Dependency::Redis)
            .context("claiming")
            .unwrap_err();
        assert_eq!(dependency_of(&err), Some(Dependency::Redis));
        assert_eq!(format!("{err:#}"), "claiming: redis: connection refused");
        assert_eq!(dependency_of(&anyhow::anyhow!("a bug")), None);
    }

    #[test]
    fn dependency_failures_are_503_with_a_retry_hint_and_the_rest_500() {
        let err = Err::<(), _>(anyhow::anyhow!("503 from the API server")).on(Dependency::KubernetesApi).unwrap_err();
        let r = Refusal::from_error(&err);
        assert_eq!((r.status, r.retry_after), (StatusCode::SERVICE_UNAVAILABLE, Some(5)));
        assert_eq!(r.extra["dependency"], "kubernetes-api");
        let full = Err::<(), _>(anyhow::anyhow!("outbox full")).on(Dependency::Datastorage).unwrap_err();
        assert_eq!(Refusal::from_error(&full).retry_after, Some(30));
        let bug = Refusal::from_error(&anyhow::anyhow!("unexpected"));
        assert_eq!((bug.status, bug.retry_after), (StatusCode::INTERNAL_SERVER_ERROR, None));
    }

    #[test]
    fn answers_carry_retry_after_and_www_authenticate() {
        let r = Refusal::rate_limited(3).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
        let r = Refusal::unauthenticated("missing bearer token").into_response();
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(Refusal::forbidden("x").kind(), "forbidden");
    }
}
