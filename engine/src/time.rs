use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Source of "now", injectable so tests need no sleeps.
pub trait TimeProvider: Send + Sync + 'static {
    /// Nanoseconds since the Unix epoch.
    fn now_nanos(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemTimeProvider;

impl TimeProvider for SystemTimeProvider {
    fn now_nanos(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct MockTimeProvider(AtomicI64);

impl MockTimeProvider {
    pub fn new(nanos: i64) -> Self {
        Self(AtomicI64::new(nanos))
    }

    pub fn set(&self, nanos: i64) {
        self.0.store(nanos, Ordering::SeqCst);
    }
}

impl TimeProvider for MockTimeProvider {
    fn now_nanos(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}
