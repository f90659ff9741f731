//! A bounded map whose entries expire: the token, access and namespace caches.

use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

/// Entries live for the time they were inserted with; at `capacity` the expired ones, then
/// the one closest to expiry, make room.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    entries: HashMap<K, (V, Instant)>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// An empty cache of at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        Self { entries: HashMap::new(), capacity: capacity.max(1) }
    }

    /// The value of `key`, unless absent or expired at `now`.
    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        self.entries.get(key).filter(|(_, expires)| *expires > now).map(|(v, _)| v.clone())
    }

    /// Stores `value` until `now + ttl`.
    pub fn insert(&mut self, key: K, value: V, ttl: Duration, now: Instant) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (_, expires)| *expires > now);
            if self.entries.len() >= self.capacity
                && let Some(soonest) = self.entries.iter().min_by_key(|(_, (_, e))| *e).map(|(k, _)| k.clone())
            {
                self.entries.remove(&soonest);
            }
        }
        self.entries.insert(key, (value, now + ttl));
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Entries held, expired ones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_their_ttl() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(8);
        c.insert("a", 1, Duration::from_secs(10), t0);
        assert_eq!(c.get(&"a", t0 + Duration::from_secs(9)), Some(1));
        assert_eq!(c.get(&"a", t0 + Duration::from_secs(10)), None);
        assert_eq!(c.get(&"b", t0), None);
        c.remove(&"a");
        assert!(c.is_empty());
    }

    #[test]
    fn a_full_cache_drops_expired_entries_then_the_soonest_to_expire() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(2);
        c.insert("short", 1, Duration::from_secs(1), t0);
        c.insert("long", 2, Duration::from_secs(100), t0);
        c.insert("new", 3, Duration::from_secs(100), t0 + Duration::from_secs(2));
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&"long", t0 + Duration::from_secs(2)), Some(2));
        c.insert("newer", 4, Duration::from_secs(200), t0 + Duration::from_secs(3));
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&"newer", t0 + Duration::from_secs(3)), Some(4));
        assert_eq!(c.get(&"new", t0 + Duration::from_secs(3)), Some(3));
        assert_eq!(c.get(&"long", t0 + Duration::from_secs(3)), None, "long expired first, so it made room");
    }
}
