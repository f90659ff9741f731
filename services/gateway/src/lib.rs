//! Remedy gateway: turns Alertmanager webhooks into RemediationRequests, deduplicating in
//! Redis and auditing through a Redis outbox forwarded to datastorage.

pub mod alert;
pub mod auth;
pub mod cache;
pub mod failure;
pub mod hardening;
pub mod http;
pub mod metrics;
pub mod outbox;
pub mod ratelimit;
pub mod redis_store;
pub mod replay;
pub mod store;
