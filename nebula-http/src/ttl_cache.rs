//! A small in-process cache: entries expire a fixed time after they are stored, the least
//! recently used goes first when it is full, and a generation counter keeps a value read
//! before an invalidation from being stored after it. Serves the `/info` cache and the
//! authenticator's remembered verifications.
//!
//! Time is `tokio::time::Instant`, so tests drive expiry with paused time.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
struct Slot<V> {
    value: V,
    expires: Instant,
    /// When it was last used (a value of [`Inner::tick`]).
    tick: u64,
}

#[derive(Debug)]
struct Inner<K, V> {
    slots: HashMap<K, Slot<V>>,
    /// Last use -> key, oldest first.
    order: BTreeMap<u64, K>,
    tick: u64,
    /// Bumped by every invalidation: a value read before it is not stored after it.
    generation: u64,
}

impl<K: Eq + Hash + Clone, V> Inner<K, V> {
    fn remove(&mut self, key: &K) {
        if let Some(slot) = self.slots.remove(key) {
            self.order.remove(&slot.tick);
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }
}

/// A TTL + LRU cache of `K -> V` (values are cloned out: keep them cheap, e.g. `Arc`).
/// A zero TTL or capacity turns it off: nothing is stored.
#[derive(Debug)]
pub(crate) struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    inner: Mutex<Inner<K, V>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// A cache keeping each entry for `ttl`, at most `capacity` of them.
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            inner: Mutex::new(Inner {
                slots: HashMap::new(),
                order: BTreeMap::new(),
                tick: 0,
                generation: 0,
            }),
        }
    }

    fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.capacity > 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fresh value of `key` (now the most recently used), or the generation to store a new
    /// one under with [`Self::insert_at`].
    pub(crate) fn lookup(&self, key: &K) -> Result<V, u64> {
        let mut inner = self.lock();
        let now = Instant::now();
        let tick = inner.next_tick();
        let Some(slot) = inner.slots.get_mut(key) else {
            return Err(inner.generation);
        };
        if slot.expires <= now {
            inner.remove(key);
            return Err(inner.generation);
        }
        let old = std::mem::replace(&mut slot.tick, tick);
        let value = slot.value.clone();
        inner.order.remove(&old);
        inner.order.insert(tick, key.clone());
        Ok(value)
    }

    /// The fresh value of `key`, if any.
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.lookup(key).ok()
    }

    /// Stores `value` for `key`, the least recently used entry making room.
    pub(crate) fn insert(&self, key: K, value: V) {
        let mut inner = self.lock();
        self.store(&mut inner, key, value);
    }

    /// Stores a value read at `generation` (from [`Self::lookup`]), unless something was
    /// invalidated since. Returns whether it was stored.
    pub(crate) fn insert_at(&self, key: K, value: V, generation: u64) -> bool {
        let mut inner = self.lock();
        if inner.generation != generation {
            return false;
        }
        self.store(&mut inner, key, value)
    }

    fn store(&self, inner: &mut Inner<K, V>, key: K, value: V) -> bool {
        if !self.enabled() {
            return false;
        }
        inner.remove(&key);
        while inner.slots.len() >= self.capacity {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            inner.slots.remove(&oldest);
        }
        let tick = inner.next_tick();
        inner.order.insert(tick, key.clone());
        inner.slots.insert(
            key,
            Slot {
                value,
                expires: Instant::now() + self.ttl,
                tick,
            },
        );
        true
    }

    /// Forgets the entries of `keys`.
    pub(crate) fn invalidate<'k>(&self, keys: impl IntoIterator<Item = &'k K>)
    where
        K: 'k,
    {
        let mut inner = self.lock();
        inner.generation += 1;
        for key in keys {
            inner.remove(key);
        }
    }

    /// Forgets every entry for which `keep` is false.
    pub(crate) fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        let mut inner = self.lock();
        inner.generation += 1;
        let gone: Vec<K> = inner
            .slots
            .iter()
            .filter(|(k, slot)| !keep(k, &slot.value))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &gone {
            inner.remove(key);
        }
    }

    /// Forgets every entry.
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.slots.clear();
        inner.order.clear();
    }

    /// How many entries are held (expired ones included until they are looked up or evicted).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let inner = self.lock();
        assert_eq!(
            inner.slots.len(),
            inner.order.len(),
            "one order entry a slot"
        );
        inner.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_the_ttl() {
        let cache = TtlCache::new(Duration::from_secs(10), 4);
        cache.insert("a", 1);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(cache.get(&"a"), Some(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(cache.get(&"a"), None);
        assert_eq!(cache.len(), 0, "an expired entry is dropped when looked up");
    }

    #[test]
    fn the_least_recently_used_goes_first() {
        let cache = TtlCache::new(Duration::from_secs(60), 2);
        cache.insert("a", 1);
        cache.insert("b", 2);
        assert_eq!(cache.get(&"a"), Some(1), "a used last");
        cache.insert("c", 3);
        assert_eq!(cache.get(&"b"), None, "b was the oldest");
        assert_eq!((cache.get(&"a"), cache.get(&"c")), (Some(1), Some(3)));
        cache.insert("c", 4);
        assert_eq!(cache.len(), 2, "replacing keeps one entry");
        assert_eq!(cache.get(&"c"), Some(4));
    }

    #[test]
    fn a_value_read_before_an_invalidation_is_not_stored() {
        let cache = TtlCache::new(Duration::from_secs(60), 8);
        let generation = cache.lookup(&"a").unwrap_err();
        cache.invalidate(&["a"]);
        assert!(!cache.insert_at("a", 1, generation));
        assert_eq!(cache.get(&"a"), None);
        let generation = cache.lookup(&"a").unwrap_err();
        assert!(cache.insert_at("a", 2, generation));
        assert_eq!(cache.get(&"a"), Some(2));
    }

    #[test]
    fn invalidate_retain_and_clear_forget_what_they_name() {
        let cache = TtlCache::new(Duration::from_secs(60), 8);
        for (k, v) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
            cache.insert(k, v);
        }
        cache.invalidate(&["a"]);
        assert_eq!(cache.get(&"a"), None);
        cache.retain(|_, v| *v != 2);
        assert_eq!((cache.get(&"b"), cache.get(&"c")), (None, Some(3)));
        assert_eq!(cache.len(), 2);
        cache.clear();
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_zero_ttl_or_capacity_stores_nothing() {
        for cache in [
            TtlCache::new(Duration::ZERO, 8),
            TtlCache::new(Duration::from_secs(1), 0),
        ] {
            cache.insert("a", 1);
            let generation = cache.lookup(&"a").unwrap_err();
            assert!(!cache.insert_at("a", 1, generation));
            assert_eq!(cache.get(&"a"), None);
        }
    }
}
