//! Deduplication of events: an event whose key (xxh3-128 of its `event_id`, which is the
//! client's id or else the hash of the event's canonical content) was stored within the
//! window is a duplicate and is not stored again.
//!
//! Keys are reserved when a write is prepared, so two concurrent copies of one event
//! cannot both be stored; a write that is dropped or refused before it reaches the WAL
//! gives its reservations back ([`Reservation`]). Memory is bounded: past `max_keys` the
//! oldest keys are forgotten first.
//!
//! Durability: the keys of every flushed event are written to a key file per checkpoint
//! (`events-state/dedup-<checkpoint>.keys`); on start the key files at or below the
//! manifest's checkpoint are loaded and the WAL replay adds the rest.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use xxhash_rust::xxh3::xxh3_128;

/// The dedup key of an event id.
pub(crate) fn key_of(event_id: &str) -> u128 {
    xxh3_128(event_id.as_bytes())
}

/// Keys seen within the window, oldest first.
#[derive(Debug)]
pub(crate) struct Dedup {
    window_nanos: i64,
    max_keys: usize,
    /// Key → ingest time of the stored copy.
    seen: HashMap<u128, i64>,
    /// (ingest time, key) in arrival order; entries whose key was since removed or
    /// re-inserted are skipped when they reach the front.
    order: VecDeque<(i64, u128)>,
}

impl Dedup {
    pub(crate) fn new(window_nanos: i64, max_keys: usize) -> Self {
        Self {
            window_nanos,
            max_keys,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.window_nanos > 0 && self.max_keys > 0
    }

    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether `key` was stored within the window before `now`; if not, remembers it.
    pub(crate) fn check_and_insert(&mut self, key: u128, now: i64) -> bool {
        self.evict(now);
        if let Some(&at) = self.seen.get(&key)
            && now - at < self.window_nanos
        {
            return true;
        }
        self.insert(key, now);
        false
    }

    /// Remembers a stored key (a reloaded or replayed event).
    pub(crate) fn insert(&mut self, key: u128, ingested_at: i64) {
        if !self.enabled() {
            return;
        }
        self.seen.insert(key, ingested_at);
        self.order.push_back((ingested_at, key));
        while self.seen.len() > self.max_keys {
            self.pop_oldest();
        }
    }

    /// Forgets a reservation of `key` made at `at`.
    pub(crate) fn release(&mut self, key: u128, at: i64) {
        if self.seen.get(&key) == Some(&at) {
            self.seen.remove(&key);
        }
    }

    /// Forgets keys older than the window.
    pub(crate) fn evict(&mut self, now: i64) {
        while let Some(&(at, _)) = self.order.front() {
            if now - at < self.window_nanos && self.order.len() <= 2 * self.max_keys.max(1) {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((at, key)) = self.order.pop_front()
            && self.seen.get(&key) == Some(&at)
        {
            self.seen.remove(&key);
        }
    }
}

/// Keys a prepared write reserved; given back when dropped unless the write was logged.
#[derive(Debug)]
pub(crate) struct Reservation {
    dedup: Arc<Mutex<Dedup>>,
    at: i64,
    keys: Vec<u128>,
    kept: bool,
}

impl Reservation {
    pub(crate) fn new(dedup: Arc<Mutex<Dedup>>, at: i64, keys: Vec<u128>) -> Self {
        Self {
            dedup,
            at,
            keys,
            kept: false,
        }
    }

    /// The write reached the WAL: the keys stay.
    pub(crate) fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.kept || self.keys.is_empty() {
            return;
        }
        let mut dedup = self.dedup.lock();
        for key in &self.keys {
            dedup.release(*key, self.at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000_000;

    #[test]
    fn duplicates_within_the_window_only() {
        let mut d = Dedup::new(15 * MIN, 100);
        assert!(!d.check_and_insert(1, 0));
        assert!(d.check_and_insert(1, 14 * MIN));
        assert!(
            !d.check_and_insert(1, 15 * MIN),
            "window passed: stored again"
        );
        assert!(d.check_and_insert(1, 16 * MIN));
    }

    #[test]
    fn memory_is_bounded_oldest_first() {
        let mut d = Dedup::new(15 * MIN, 3);
        for k in 0..5 {
            assert!(!d.check_and_insert(k, k as i64));
        }
        assert_eq!(d.len(), 3);
        assert!(!d.check_and_insert(0, 10), "oldest forgotten");
        assert!(d.check_and_insert(4, 10));
        assert!(d.order.len() <= 6);
    }

    #[test]
    fn dropped_reservations_are_given_back() {
        let dedup = Arc::new(Mutex::new(Dedup::new(15 * MIN, 100)));
        assert!(!dedup.lock().check_and_insert(7, 5));
        drop(Reservation::new(Arc::clone(&dedup), 5, vec![7]));
        assert!(!dedup.lock().check_and_insert(7, 6), "released");
        Reservation::new(Arc::clone(&dedup), 6, vec![7]).keep();
        assert!(dedup.lock().check_and_insert(7, 7), "kept");
    }

    #[test]
    fn disabled_remembers_nothing() {
        let mut d = Dedup::new(0, 100);
        assert!(!d.enabled());
        d.insert(1, 0);
        assert_eq!(d.len(), 0);
    }
}
