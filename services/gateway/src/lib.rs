//! Remedy gateway: turns Alertmanager webhooks and Kubernetes Warning Events into
//! RemediationRequests, deduplicating in Redis and auditing through a Redis outbox forwarded to
//! datastorage. Callers are authenticated and authorized by the cluster (TokenReview,
//! SubjectAccessReview), rate limited, replay protected, and limited to managed namespaces.

pub mod alert;
pub mod auth;
pub mod cache;
pub mod config;
pub mod events;
pub mod failure;
pub mod hardening;
pub mod http;
pub mod intake;
pub mod metrics;
pub mod outbox;
pub mod ratelimit;
pub mod redis_store;
pub mod replay;
pub mod scope;
pub mod store;
