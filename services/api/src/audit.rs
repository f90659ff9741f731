//! The audit event: what producers POST to datastorage and what datastorage returns.

use serde::{Deserialize, Serialize};

/// Longest accepted value of the short string fields.
pub const MAX_FIELD_LEN: usize = 253;

/// Outcome of the audited action.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The action succeeded.
    Success,
    /// The action failed.
    Failure,
}

impl Outcome {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

impl std::str::FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "success" => Ok(Self::Success),
            "failure" => Ok(Self::Failure),
            other => Err(format!("unknown outcome {other:?}")),
        }
    }
}

/// One audit event. `event_id` is chosen by the producer and makes delivery idempotent:
/// datastorage stores an id once and answers success for repeats.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// Producer-chosen unique id (1..=253 characters).
    pub event_id: String,
    /// Dotted event type, e.g. `gateway.signal.received`.
    pub event_type: String,
    /// When the event happened, RFC 3339.
    pub event_timestamp: String,
    /// Ties the events of one remediation together (the RemediationRequest name).
    pub correlation_id: String,
    /// The service that produced the event, e.g. `gateway`.
    pub actor: String,
    /// Namespace of the resource concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The resource concerned as `Kind/name`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Outcome of the action.
    pub outcome: Outcome,
    /// Event-specific details.
    #[serde(default)]
    pub data: serde_json::Value,
}

/// Why an audit event was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidEvent {
    /// A required field is empty.
    #[error("field {0} must not be empty")]
    Empty(&'static str),
    /// A field is longer than [`MAX_FIELD_LEN`].
    #[error("field {0} is longer than {MAX_FIELD_LEN} characters")]
    TooLong(&'static str),
    /// The timestamp is not RFC 3339.
    #[error("event_timestamp is not an RFC 3339 timestamp: {0}")]
    Timestamp(String),
    /// `data` is neither an object nor null.
    #[error("data must be a JSON object")]
    Data,
}

impl AuditEvent {
    /// Checks the field constraints datastorage enforces.
    pub fn validate(&self) -> Result<(), InvalidEvent> {
        let required = [
            ("event_id", &self.event_id),
            ("event_type", &self.event_type),
            ("correlation_id", &self.correlation_id),
            ("actor", &self.actor),
        ];
        for (name, value) in required {
            if value.trim().is_empty() {
                return Err(InvalidEvent::Empty(name));
            }
            if value.len() > MAX_FIELD_LEN {
                return Err(InvalidEvent::TooLong(name));
            }
        }
        for (name, value) in [("namespace", &self.namespace), ("resource", &self.resource)] {
            if value.as_ref().is_some_and(|v| v.len() > MAX_FIELD_LEN) {
                return Err(InvalidEvent::TooLong(name));
            }
        }
        self.event_timestamp.parse::<jiff::Timestamp>().map_err(|e| InvalidEvent::Timestamp(e.to_string()))?;
        if !(self.data.is_object() || self.data.is_null()) {
            return Err(InvalidEvent::Data);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> AuditEvent {
        AuditEvent {
            event_id: "e1".into(),
            event_type: "gateway.signal.received".into(),
            event_timestamp: "2026-01-02T03:04:05Z".into(),
            correlation_id: "rr-0123456789abcdef".into(),
            actor: "gateway".into(),
            namespace: Some("default".into()),
            resource: None,
            outcome: Outcome::Success,
            data: serde_json::json!({"k": 1}),
        }
    }

    #[test]
    fn valid_event_passes() {
        assert_eq!(event().validate(), Ok(()));
    }

    #[test]
    fn empty_and_long_fields_are_rejected() {
        let mut e = event();
        e.actor = " ".into();
        assert_eq!(e.validate(), Err(InvalidEvent::Empty("actor")));
        let mut e = event();
        e.event_id = "x".repeat(MAX_FIELD_LEN + 1);
        assert_eq!(e.validate(), Err(InvalidEvent::TooLong("event_id")));
    }

    #[test]
    fn bad_timestamp_and_data_are_rejected() {
        let mut e = event();
        e.event_timestamp = "yesterday".into();
        assert!(matches!(e.validate(), Err(InvalidEvent::Timestamp(_))));
        let mut e = event();
        e.data = serde_json::json!([1]);
        assert_eq!(e.validate(), Err(InvalidEvent::Data));
    }

    #[test]
    fn unknown_fields_and_outcomes_fail_to_parse() {
        let mut v = serde_json::to_value(event()).unwrap();
        v["extra"] = 1.into();
        assert!(serde_json::from_value::<AuditEvent>(v).is_err());
        let mut v = serde_json::to_value(event()).unwrap();
        v["outcome"] = "maybe".into();
        assert!(serde_json::from_value::<AuditEvent>(v).is_err());
    }
}
