//! Gateway specs: Alertmanager webhooks and Kubernetes Warning Events in, RemediationRequests
//! and audit events out, through an authenticated, rate limited, replay protected and
//! browser-hardened ingress. One module per group; `fixture` is what they share.

mod auth;
mod events;
mod fixture;
mod hardening;
mod ratelimit;
mod replay;
mod resilience;
mod webhook;
