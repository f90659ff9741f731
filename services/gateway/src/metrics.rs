//! Prometheus metrics served on `/metrics`.

use std::sync::Arc;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Label set of `gateway_signals` and `gateway_kubernetes_events`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// Signals: `created`, `duplicate`, `ignored`, `out_of_scope`, `rejected` or `error`.
    /// Events: `signal`, `out_of_scope`, `stale`, `seen` or `error`.
    pub outcome: &'static str,
}

/// Label set of `gateway_refusals`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `bad_request`, `unauthenticated`, `forbidden`, `rate_limited`, `unavailable` or `internal`.
    pub reason: &'static str,
}

/// The gateway's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Alerts handled, by outcome.
    pub signals: Family<OutcomeLabel, Counter>,
    /// Requests refused, by reason.
    pub refusals: Family<ReasonLabel, Counter>,
    /// Kubernetes Warning Events seen, by outcome.
    pub kubernetes_events: Family<OutcomeLabel, Counter>,
    /// Audit events delivered to datastorage.
    pub audit_delivered: Counter,
    /// Failed delivery attempts (retried later).
    pub audit_delivery_failures: Counter,
    /// Events datastorage rejected, moved to the dead-letter list.
    pub audit_dead_lettered: Counter,
    /// Outbox length seen by the forwarder.
    pub audit_outbox_length: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("gateway");
        let signals = Family::<OutcomeLabel, Counter>::default();
        let refusals = Family::<ReasonLabel, Counter>::default();
        let kubernetes_events = Family::<OutcomeLabel, Counter>::default();
        let audit_delivered = Counter::default();
        let audit_delivery_failures = Counter::default();
        let audit_dead_lettered = Counter::default();
        let audit_outbox_length = Gauge::default();
        registry.register("signals", "Alerts handled, by outcome", signals.clone());
        registry.register("refusals", "Requests refused, by reason", refusals.clone());
        registry.register("kubernetes_events", "Kubernetes Warning Events seen, by outcome", kubernetes_events.clone());
        registry.register("audit_delivered", "Audit events delivered to datastorage", audit_delivered.clone());
        registry.register(
            "audit_delivery_failures",
            "Failed audit delivery attempts (retried)",
            audit_delivery_failures.clone(),
        );
        registry.register(
            "audit_dead_lettered",
            "Audit events datastorage rejected as invalid",
            audit_dead_lettered.clone(),
        );
        registry.register("audit_outbox_length", "Entries waiting in the audit outbox", audit_outbox_length.clone());
        Self {
            registry: Arc::new(registry),
            signals,
            refusals,
            kubernetes_events,
            audit_delivered,
            audit_delivery_failures,
            audit_dead_lettered,
            audit_outbox_length,
        }
    }
}

impl Metrics {
    /// Counts one alert with `outcome`.
    pub fn signal(&self, outcome: &'static str) {
        self.signals.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Counts one refused request with `reason`.
    pub fn refusal(&self, reason: &'static str) {
        self.refusals.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts one Kubernetes Event with `outcome`.
    pub fn kubernetes_event(&self, outcome: &'static str) {
        self.kubernetes_events.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
