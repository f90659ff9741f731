//! Scope: the gateway acts only in namespaces carrying its label (`MANAGED_NAMESPACE_LABEL`,
//! `remedy.dev/managed=true` by default). A managed namespace is remembered briefly; any other
//! answer is looked up again for webhook requests, so a namespace labelled a moment ago is in
//! scope at once.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{cache::TtlCache, store::RrStore};

/// The label that puts a namespace in scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedLabel {
    /// Label key.
    pub key: String,
    /// Required value.
    pub value: String,
}

impl std::str::FromStr for ManagedLabel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() && !value.trim().is_empty() => {
                Ok(Self { key: key.trim().to_owned(), value: value.trim().to_owned() })
            }
            _ => Err(format!("{s:?} is not key=value")),
        }
    }
}

impl std::fmt::Display for ManagedLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// Where a namespace stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InScope {
    /// It exists and carries the label.
    Managed,
    /// It exists without the label.
    Unmanaged,
    /// It does not exist.
    Missing,
}

/// The decision for a namespace with `labels` (`None`: it does not exist).
pub fn decide(labels: Option<&BTreeMap<String, String>>, label: &ManagedLabel) -> InScope {
    match labels {
        None => InScope::Missing,
        Some(l) if l.get(&label.key) == Some(&label.value) => InScope::Managed,
        Some(_) => InScope::Unmanaged,
    }
}

/// Namespace lookups with a short memory.
#[derive(Clone)]
pub struct Scope<S> {
    store: S,
    label: ManagedLabel,
    ttl: Duration,
    cache: Arc<Mutex<TtlCache<String, InScope>>>,
}

impl<S: RrStore> Scope<S> {
    /// Looks namespaces up through `store`, remembering answers for `ttl`.
    pub fn new(store: S, label: ManagedLabel, ttl: Duration) -> Self {
        Self { store, label, ttl, cache: Arc::new(Mutex::new(TtlCache::new(4096))) }
    }

    /// The label that puts a namespace in scope.
    pub fn label(&self) -> &ManagedLabel {
        &self.label
    }

    /// Where `namespace` stands. `Managed` answers are reused for the ttl; others only when
    /// `reuse_negative` (the events path, where a namespace's every Warning would otherwise
    /// cost a lookup).
    pub async fn check(&self, namespace: &str, reuse_negative: bool, now: Instant) -> anyhow::Result<InScope> {
        let cached = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&namespace.to_owned(), now);
        match cached {
            Some(InScope::Managed) => return Ok(InScope::Managed),
            Some(other) if reuse_negative => return Ok(other),
            _ => {}
        }
        let verdict = decide(self.store.namespace_labels(namespace).await?.as_ref(), &self.label);
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(namespace.to_owned(), verdict, self.ttl, now);
        Ok(verdict)
    }

    /// Why a namespace that is not managed is out of scope, for answers and logs.
    pub fn reason(&self, namespace: &str) -> String {
        format!("namespace {namespace:?} is not managed by this gateway: it lacks the label {}", self.label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_label_value_is_managed() {
        let label: ManagedLabel = "remedy.dev/managed=true".parse().unwrap();
        let with = |v: &str| BTreeMap::from([("remedy.dev/managed".to_owned(), v.to_owned())]);
        assert_eq!(decide(Some(&with("true")), &label), InScope::Managed);
        assert_eq!(decide(Some(&with("false")), &label), InScope::Unmanaged);
        assert_eq!(decide(Some(&BTreeMap::new()), &label), InScope::Unmanaged);
        assert_eq!(decide(None, &label), InScope::Missing);
    }

    #[test]
    fn the_label_is_key_equals_value() {
        assert_eq!(" a/b = c ".parse::<ManagedLabel>(), Ok(ManagedLabel { key: "a/b".into(), value: "c".into() }));
        assert!("a/b".parse::<ManagedLabel>().is_err());
        assert!("=c".parse::<ManagedLabel>().is_err());
        assert!("a=".parse::<ManagedLabel>().is_err());
    }
}
