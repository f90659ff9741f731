//! Browser-facing hardening: cross-origin requests refused unless their origin is configured
//! (preflights answered accordingly), and security headers on every response.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::failure::Refusal;

/// Headers set on every response: no sniffing, framing, referrers, caching or cross-origin
/// embedding; the gateway serves JSON and text only, so nothing may run or load.
pub const SECURITY_HEADERS: [(&str, &str); 6] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
    ("cross-origin-resource-policy", "same-origin"),
];

/// Methods and headers a permitted origin may use.
const ALLOW_METHODS: &str = "POST";
const ALLOW_HEADERS: &str = "authorization, content-type, x-timestamp";
const MAX_AGE_SECONDS: &str = "600";

/// What to do with a request, given its `Origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    /// No `Origin`: not a cross-origin browser request.
    None,
    /// A preflight from a permitted origin: answer it.
    Preflight(String),
    /// A request from a permitted origin: serve it, naming the origin.
    Allowed(String),
    /// An origin that is not permitted: refuse.
    Refused(String),
}

/// The decision for a request with `method` and `headers` when `allowed` origins are permitted.
pub fn decide(method: &Method, headers: &HeaderMap, allowed: &[String]) -> Cors {
    let Some(origin) = headers.get(header::ORIGIN) else { return Cors::None };
    let origin = origin.to_str().unwrap_or("<not text>").to_owned();
    if !allowed.contains(&origin) {
        return Cors::Refused(origin);
    }
    if method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        Cors::Preflight(origin)
    } else {
        Cors::Allowed(origin)
    }
}

/// Middleware applying [`decide`] to every request.
pub async fn cors(State(allowed): State<Arc<Vec<String>>>, request: Request, next: Next) -> Response {
    match decide(request.method(), request.headers(), &allowed) {
        Cors::None => next.run(request).await,
        Cors::Refused(origin) => Refusal::forbidden(format!(
            "cross-origin request from {origin:?} refused: the origin is not in CORS_ALLOWED_ORIGINS"
        ))
        .into_response(),
        Cors::Preflight(origin) => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            let headers = response.headers_mut();
            allow_origin(headers, &origin);
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOW_METHODS));
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOW_HEADERS));
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE_SECONDS));
            response
        }
        Cors::Allowed(origin) => {
            let mut response = next.run(request).await;
            allow_origin(response.headers_mut(), &origin);
            response
        }
    }
}

fn allow_origin(headers: &mut HeaderMap, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    headers.insert(header::VARY, HeaderValue::from_static("origin"));
}

/// Adds [`SECURITY_HEADERS`] to a response.
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (header::HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn requests_without_origin_are_not_cors() {
        assert_eq!(decide(&Method::POST, &HeaderMap::new(), &[]), Cors::None);
    }

    #[test]
    fn only_configured_origins_pass_and_preflights_are_recognised() {
        let allowed = vec!["https://console.example".to_owned()];
        let ok = headers(&[("origin", "https://console.example")]);
        assert_eq!(decide(&Method::POST, &ok, &allowed), Cors::Allowed("https://console.example".into()));
        let preflight = headers(&[("origin", "https://console.example"), ("access-control-request-method", "POST")]);
        assert_eq!(decide(&Method::OPTIONS, &preflight, &allowed), Cors::Preflight("https://console.example".into()));
        // A plain OPTIONS without the preflight header is an ordinary request.
        assert_eq!(decide(&Method::OPTIONS, &ok, &allowed), Cors::Allowed("https://console.example".into()));
        let evil = headers(&[("origin", "https://console.example.evil")]);
        assert_eq!(decide(&Method::POST, &evil, &allowed), Cors::Refused("https://console.example.evil".into()));
        assert_eq!(decide(&Method::GET, &headers(&[("origin", "null")]), &allowed), Cors::Refused("null".into()));
        assert_eq!(decide(&Method::POST, &ok, &[]), Cors::Refused("https://console.example".into()));
    }
}
