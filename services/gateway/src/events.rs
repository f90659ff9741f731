//! The second source: Kubernetes Warning Events in managed namespaces become signals, with the
//! same deduplication and audit as webhook alerts. Each occurrence (an Event's uid and count)
//! is marked in Redis before it is handled, so a restart's re-list or a second replica never
//! counts it twice; events older than `EVENT_MAX_AGE_SECONDS` are history, not signals.

use std::{
    collections::BTreeMap,
    future::Future,
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Event;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};

use crate::{
    alert::{AlertStatus, Signal, Source, fingerprint},
    intake::Intake,
    scope::{InScope, Scope},
    store::RrStore,
};

/// Attempts at handling one occurrence before it is given up (and unmarked).
const ATTEMPTS: u32 = 3;

/// What an Event is to the gateway.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// A signal, and the key of this occurrence.
    Signal(Box<Signal>, String),
    /// Not a Warning.
    NotWarning,
    /// Last seen longer ago than the maximum age.
    Stale,
    /// Missing what a signal needs.
    Incomplete(&'static str),
}

/// The decision for `event` at `now`: a Warning seen within `max_age` becomes a signal with
/// the default window.
pub fn decide(event: &Event, window_seconds: u64, now: jiff::Timestamp, max_age: Duration) -> Seen {
    if event.type_.as_deref() != Some("Warning") {
        return Seen::NotWarning;
    }
    let Some(namespace) = event.metadata.namespace.clone() else { return Seen::Incomplete("namespace") };
    let Some(reason) = event.reason.clone().filter(|r| !r.is_empty()) else { return Seen::Incomplete("reason") };
    let Some(uid) = event.metadata.uid.clone() else { return Seen::Incomplete("uid") };
    // When it last happened, as precisely as the event says; its creation only as a fallback.
    let last_seen = [
        event.series.as_ref().and_then(|s| s.last_observed_time.as_ref()).map(|t| t.0),
        event.last_timestamp.as_ref().map(|t| t.0),
        event.event_time.as_ref().map(|t| t.0),
        event.first_timestamp.as_ref().map(|t| t.0),
        event.metadata.creation_timestamp.as_ref().map(|t| t.0),
    ]
    .into_iter()
    .flatten()
    .next();
    let Some(last_seen) = last_seen else { return Seen::Incomplete("timestamp") };
    if now.duration_since(last_seen).as_secs() > max_age.as_secs() as i64 {
        return Seen::Stale;
    }
    let object = &event.involved_object;
    let kind = object.kind.clone().unwrap_or_default();
    let mut labels = BTreeMap::from([
        ("alertname".to_owned(), reason.clone()),
        ("namespace".to_owned(), namespace.clone()),
        ("severity".to_owned(), "warning".to_owned()),
        ("source".to_owned(), Source::KubernetesEvent.name().to_owned()),
        ("kind".to_owned(), kind.clone()),
    ]);
    if let Some(name) = object.name.clone() {
        let key = match kind.as_str() {
            "Pod" | "Deployment" | "StatefulSet" | "DaemonSet" => kind.to_lowercase(),
            _ => "object".to_owned(),
        };
        labels.insert(key, name);
    }
    let mut annotations = BTreeMap::from([("event".to_owned(), event.metadata.name.clone().unwrap_or_default())]);
    if let Some(message) = event.message.clone() {
        annotations.insert("message".to_owned(), message);
    }
    let count = event.series.as_ref().and_then(|s| s.count).or(event.count).unwrap_or(1);
    let started = event.first_timestamp.as_ref().map(|t| t.0).or(event.event_time.as_ref().map(|t| t.0));
    let signal = Signal {
        source: Source::KubernetesEvent,
        status: AlertStatus::Firing,
        fingerprint: fingerprint(&labels),
        name: reason,
        namespace,
        severity: "warning".to_owned(),
        labels,
        annotations,
        starts_at: started.map(|t| t.to_string()),
        workflow: None,
        window_seconds,
    };
    Seen::Signal(Box::new(signal), format!("event:{uid}:{count}"))
}

/// Watches Warning Events across the cluster and hands those of managed namespaces to intake.
pub struct EventSource<S> {
    /// Kubernetes client.
    pub client: Client,
    /// Signal handling.
    pub intake: Intake<S>,
    /// Which namespaces are managed.
    pub scope: Scope<S>,
    /// Older events are not signals.
    pub max_age: Duration,
    /// Deduplication window of event signals.
    pub window_seconds: u64,
}

impl<S: RrStore> EventSource<S> {
    /// Runs until `stop` resolves (between events).
    pub async fn run(self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let api = Api::<Event>::all(self.client.clone());
        let events =
            watcher(api, watcher::Config::default().fields("type=Warning")).default_backoff().applied_objects();
        tokio::pin!(events);
        loop {
            let next = tokio::select! {
                () = &mut stop => return,
                next = events.next() => next,
            };
            match next {
                Some(Ok(event)) => self.handle(&event).await,
                Some(Err(e)) => tracing::warn!(error = %e, "watching Kubernetes Events; retrying"),
                None => return,
            }
        }
    }

    async fn handle(&self, event: &Event) {
        let metrics = &self.intake.metrics;
        let (signal, occurrence) = match decide(event, self.window_seconds, jiff::Timestamp::now(), self.max_age) {
            Seen::Signal(signal, occurrence) => (signal, occurrence),
            Seen::Stale => return metrics.kubernetes_event("stale"),
            Seen::NotWarning | Seen::Incomplete(_) => return,
        };
        match self.scope.check(&signal.namespace, true, Instant::now()).await {
            Ok(InScope::Managed) => {}
            Ok(_) => return metrics.kubernetes_event("out_of_scope"),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), namespace = %signal.namespace, "event scope unknown; skipped");
                return metrics.kubernetes_event("error");
            }
        }
        match self.intake.redis.mark_once(&occurrence, self.max_age.as_secs()).await {
            Ok(true) => {}
            Ok(false) => return metrics.kubernetes_event("seen"),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "marking an event occurrence; skipped");
                return metrics.kubernetes_event("error");
            }
        }
        let mut pause = Duration::from_millis(500);
        for attempt in 1..=ATTEMPTS {
            let handled = match self.intake.ensure_outbox_room().await {
                Ok(()) => self.intake.accept(&signal).await,
                Err(e) => Err(e),
            };
            match handled {
                Ok(result) => {
                    metrics.kubernetes_event("signal");
                    self.intake.count(&result);
                    tracing::info!(
                        namespace = %signal.namespace,
                        reason = %signal.name,
                        status = %result.status,
                        remediation_request = result.remediation_request.as_deref().unwrap_or_default(),
                        "Kubernetes Event handled"
                    );
                    return;
                }
                Err(e) if attempt < ATTEMPTS => {
                    tracing::warn!(error = %format!("{e:#}"), attempt, "handling a Kubernetes Event; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), namespace = %signal.namespace, "Kubernetes Event not handled");
                    metrics.kubernetes_event("error");
                    metrics.signal("error");
                }
            }
        }
        // Let a later copy of this occurrence (a re-list) try again.
        if let Err(e) = self.intake.redis.unmark(&occurrence).await {
            tracing::warn!(error = %format!("{e:#}"), "unmarking an event occurrence");
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::core::v1::{EventSeries, ObjectReference},
        apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time},
    };

    use super::*;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn warning(count: i32, last: &str) -> Event {
        Event {
            metadata: ObjectMeta {
                name: Some("web-0.17f".into()),
                namespace: Some("shop".into()),
                uid: Some("u-1".into()),
                ..Default::default()
            },
            type_: Some("Warning".into()),
            reason: Some("BackOff".into()),
            message: Some("Back-off restarting failed container".into()),
            involved_object: ObjectReference {
                kind: Some("Pod".into()),
                name: Some("web-0".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            count: Some(count),
            first_timestamp: Some(Time(at("2026-01-01T00:00:00Z"))),
            last_timestamp: Some(Time(at(last))),
            ..Default::default()
        }
    }

    const AGE: Duration = Duration::from_secs(300);

    #[test]
    fn a_recent_warning_is_a_signal_keyed_by_its_occurrence() {
        let now = at("2026-01-01T00:04:00Z");
        let Seen::Signal(signal, key) = decide(&warning(3, "2026-01-01T00:03:59Z"), 60, now, AGE) else {
            panic!("not a signal")
        };
        assert_eq!(key, "event:u-1:3");
        assert_eq!((signal.name.as_str(), signal.namespace.as_str()), ("BackOff", "shop"));
        assert_eq!((signal.source, signal.window_seconds), (Source::KubernetesEvent, 60));
        assert_eq!(signal.labels["pod"], "web-0");
        assert_eq!(signal.annotations["message"], "Back-off restarting failed container");
        let rr = signal.remediation_request("rr-x");
        assert_eq!(rr.spec.target_resource.map(|t| (t.kind, t.name)), Some(("Pod".into(), "web-0".into())));
        assert_eq!(rr.spec.starts_at.as_deref(), Some("2026-01-01T00:00:00Z"));
    }

    #[test]
    fn later_counts_of_one_event_share_the_fingerprint_not_the_key() {
        let now = at("2026-01-01T00:04:00Z");
        let (Seen::Signal(a, ka), Seen::Signal(b, kb)) = (
            decide(&warning(1, "2026-01-01T00:01:00Z"), 60, now, AGE),
            decide(&warning(2, "2026-01-01T00:02:00Z"), 60, now, AGE),
        ) else {
            panic!("not signals")
        };
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(ka, kb);
    }

    #[test]
    fn normal_stale_and_incomplete_events_are_not_signals() {
        let now = at("2026-01-01T00:10:00Z");
        assert_eq!(decide(&warning(1, "2026-01-01T00:04:59Z"), 60, now, AGE), Seen::Stale);
        // Recorded just now about something long past: still history.
        let mut late = warning(1, "2026-01-01T00:04:59Z");
        late.metadata.creation_timestamp = Some(Time(now));
        assert_eq!(decide(&late, 60, now, AGE), Seen::Stale);
        let mut normal = warning(1, "2026-01-01T00:09:00Z");
        normal.type_ = Some("Normal".into());
        assert_eq!(decide(&normal, 60, now, AGE), Seen::NotWarning);
        let mut no_reason = warning(1, "2026-01-01T00:09:00Z");
        no_reason.reason = None;
        assert_eq!(decide(&no_reason, 60, now, AGE), Seen::Incomplete("reason"));
    }

    #[test]
    fn a_series_counts_and_dates_the_occurrence() {
        let mut e = warning(1, "2026-01-01T00:00:00Z");
        e.series =
            Some(EventSeries { count: Some(9), last_observed_time: Some(MicroTime(at("2026-01-01T00:09:30Z"))) });
        let Seen::Signal(_, key) = decide(&e, 60, at("2026-01-01T00:10:00Z"), AGE) else { panic!("not a signal") };
        assert_eq!(key, "event:u-1:9");
    }
}
