//! The gateway's configuration, read from the environment in one place (docs/services.md lists
//! every variable).

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, bail};

use crate::{ratelimit::RateLimit, scope::ManagedLabel};

/// Bounds of the deduplication window: the default, and the range an alert may ask for with
/// the `remedy_dedup_window_seconds` annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupWindow {
    /// Seconds, when the alert asks for nothing.
    pub default: u64,
    /// Shortest window an alert may ask for (at least 1, so names never repeat).
    pub min: u64,
    /// Longest window an alert may ask for.
    pub max: u64,
}

impl DedupWindow {
    /// A window of `seconds` with the default bounds around it (1 s to the larger of an hour
    /// and `seconds`).
    pub fn fixed(seconds: u64) -> Self {
        Self { default: seconds, min: 1, max: seconds.max(3600) }
    }
}

/// Everything the binary reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `LISTEN_ADDR`.
    pub listen: SocketAddr,
    /// `REDIS_URL`.
    pub redis_url: String,
    /// `REDIS_KEY_PREFIX`.
    pub redis_prefix: String,
    /// `DATASTORAGE_URL`.
    pub datastorage_url: String,
    /// `DEDUP_WINDOW_SECONDS`, `DEDUP_WINDOW_MIN_SECONDS`, `DEDUP_WINDOW_MAX_SECONDS`.
    pub dedup: DedupWindow,
    /// `MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
    /// `AUTH_CACHE_SECONDS`: how long a token review or an allowed access review is reused.
    pub auth_cache: Duration,
    /// `REPLAY_WINDOW_SECONDS`: how far `X-Timestamp` may be from now; zero accepts requests
    /// without it.
    pub replay_window: Duration,
    /// `CORS_ALLOWED_ORIGINS`, comma separated; empty refuses every cross-origin request.
    pub cors_allowed_origins: Vec<String>,
    /// `RATE_LIMIT_PER_SECOND` and `RATE_LIMIT_BURST`, per caller.
    pub rate_limit: RateLimit,
    /// `MANAGED_NAMESPACE_LABEL` (`key=value`): the label of namespaces the gateway acts in.
    pub managed_label: ManagedLabel,
    /// `SCOPE_CACHE_SECONDS`: how long a namespace's standing is reused.
    pub scope_cache: Duration,
    /// `KUBERNETES_EVENTS`: whether Warning Events become signals.
    pub kubernetes_events: bool,
    /// `EVENT_MAX_AGE_SECONDS`: older events are not signals (e.g. those listed at start).
    pub event_max_age: Duration,
    /// `AUDIT_OUTBOX_MAX`: with this many audit events undelivered, new signals answer 503.
    pub audit_outbox_max: i64,
    /// `AUDIT_RETRY_MAX_SECONDS`: the longest pause between audit delivery attempts.
    pub audit_retry_max: Duration,
    /// `SHUTDOWN_DELAY_SECONDS`: after SIGTERM, how long the gateway keeps serving while it
    /// answers unready, so endpoints stop sending it traffic before it stops accepting.
    pub shutdown_delay: Duration,
    /// `SHUTDOWN_TIMEOUT_SECONDS`: the longest wait for in-flight requests and for the outbox.
    pub shutdown_timeout: Duration,
}

impl Config {
    /// The configuration from the process environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The configuration from `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let text = |name: &str, default: &str| get(name).unwrap_or_else(|| default.to_owned());
        let number = |name: &str, default: &str| -> anyhow::Result<u64> {
            let v = text(name, default);
            v.trim().parse().with_context(|| format!("{name}={v:?} is not a whole number"))
        };
        let seconds = |name: &str, default: &str| number(name, default).map(Duration::from_secs);

        let default_window = number("DEDUP_WINDOW_SECONDS", "300")?;
        let dedup = DedupWindow {
            default: default_window,
            min: number("DEDUP_WINDOW_MIN_SECONDS", "1")?,
            max: number("DEDUP_WINDOW_MAX_SECONDS", &default_window.max(3600).to_string())?,
        };
        if !(1 <= dedup.min && dedup.min <= dedup.default && dedup.default <= dedup.max) {
            bail!(
                "deduplication windows must satisfy 1 <= DEDUP_WINDOW_MIN_SECONDS ({}) <= DEDUP_WINDOW_SECONDS ({}) <= DEDUP_WINDOW_MAX_SECONDS ({})",
                dedup.min,
                dedup.default,
                dedup.max
            );
        }
        let per_second: f64 = {
            let v = text("RATE_LIMIT_PER_SECOND", "10");
            v.trim()
                .parse()
                .ok()
                .filter(|r: &f64| r.is_finite() && *r >= 0.0)
                .with_context(|| format!("RATE_LIMIT_PER_SECOND={v:?} is not a non-negative number"))?
        };
        let burst = number("RATE_LIMIT_BURST", "100")?;
        if per_second > 0.0 && burst == 0 {
            bail!("RATE_LIMIT_BURST must be at least 1 while RATE_LIMIT_PER_SECOND is set");
        }
        let listen = text("LISTEN_ADDR", "0.0.0.0:8080");
        let managed = text("MANAGED_NAMESPACE_LABEL", "remedy.dev/managed=true");
        let events = text("KUBERNETES_EVENTS", "true");
        Ok(Self {
            listen: listen.parse().with_context(|| format!("LISTEN_ADDR={listen:?}"))?,
            redis_url: text("REDIS_URL", "redis://redis:6379"),
            redis_prefix: text("REDIS_KEY_PREFIX", "remedy:gateway:"),
            datastorage_url: text("DATASTORAGE_URL", "http://datastorage:8080"),
            dedup,
            max_body_bytes: number("MAX_BODY_BYTES", "262144")? as usize,
            auth_cache: seconds("AUTH_CACHE_SECONDS", "10")?,
            replay_window: seconds("REPLAY_WINDOW_SECONDS", "300")?,
            cors_allowed_origins: origins(&text("CORS_ALLOWED_ORIGINS", "")),
            rate_limit: RateLimit { per_second, burst: u32::try_from(burst).context("RATE_LIMIT_BURST is too large")? },
            managed_label: managed
                .parse()
                .map_err(|e: String| anyhow::anyhow!(e))
                .with_context(|| format!("MANAGED_NAMESPACE_LABEL={managed:?}"))?,
            scope_cache: seconds("SCOPE_CACHE_SECONDS", "10")?,
            kubernetes_events: match events.as_str() {
                "true" => true,
                "false" => false,
                other => bail!("KUBERNETES_EVENTS={other:?}: expected true or false"),
            },
            event_max_age: seconds("EVENT_MAX_AGE_SECONDS", "300")?,
            audit_outbox_max: i64::try_from(number("AUDIT_OUTBOX_MAX", "10000")?)
                .context("AUDIT_OUTBOX_MAX is too large")?,
            audit_retry_max: seconds("AUDIT_RETRY_MAX_SECONDS", "30")?,
            shutdown_delay: seconds("SHUTDOWN_DELAY_SECONDS", "5")?,
            shutdown_timeout: seconds("SHUTDOWN_TIMEOUT_SECONDS", "20")?,
        })
    }
}

/// The origins of a comma-separated list, without blanks or trailing slashes.
fn origins(list: &str) -> Vec<String> {
    list.split(',').map(|o| o.trim().trim_end_matches('/')).filter(|o| !o.is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> anyhow::Result<Config> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.dedup, DedupWindow { default: 300, min: 1, max: 3600 });
        assert_eq!(c.replay_window, Duration::from_secs(300));
        assert_eq!(c.rate_limit, RateLimit { per_second: 10.0, burst: 100 });
        assert!(c.cors_allowed_origins.is_empty());
        assert_eq!(c.managed_label.to_string(), "remedy.dev/managed=true");
        assert!(c.kubernetes_events);
        assert_eq!(c.audit_outbox_max, 10_000);
    }

    #[test]
    fn windows_must_be_ordered() {
        let err = config(&[("DEDUP_WINDOW_SECONDS", "10"), ("DEDUP_WINDOW_MIN_SECONDS", "20")]).unwrap_err();
        assert!(err.to_string().contains("DEDUP_WINDOW_MIN_SECONDS (20)"), "{err}");
        assert!(config(&[("DEDUP_WINDOW_MIN_SECONDS", "0")]).is_err());
        let c = config(&[("DEDUP_WINDOW_SECONDS", "30"), ("DEDUP_WINDOW_MAX_SECONDS", "60")]).unwrap();
        assert_eq!(c.dedup, DedupWindow { default: 30, min: 1, max: 60 });
    }

    #[test]
    fn origins_are_trimmed_and_malformed_values_named() {
        let c = config(&[("CORS_ALLOWED_ORIGINS", " https://a.example/, ,http://b.example:8080")]).unwrap();
        assert_eq!(c.cors_allowed_origins, ["https://a.example", "http://b.example:8080"]);
        let err = config(&[("RATE_LIMIT_PER_SECOND", "fast")]).unwrap_err();
        assert!(err.to_string().contains("RATE_LIMIT_PER_SECOND"), "{err}");
        assert!(config(&[("RATE_LIMIT_PER_SECOND", "1"), ("RATE_LIMIT_BURST", "0")]).is_err());
        assert!(config(&[("RATE_LIMIT_PER_SECOND", "0"), ("RATE_LIMIT_BURST", "0")]).is_ok());
        assert!(config(&[("KUBERNETES_EVENTS", "yes")]).is_err());
        assert!(config(&[("MANAGED_NAMESPACE_LABEL", "novalue")]).is_err());
    }
}
