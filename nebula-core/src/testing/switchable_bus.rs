//! A [`Bus`] that can be told to refuse publishes, like a broker that is down or refuses the
//! manager's user, and to take them again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;

use crate::bus::{Bus, BusError, BusMessage, InProcessBus, Subscription, Topic};

/// An [`InProcessBus`] whose publishes can be refused: while [`refuse`](Self::refuse)d, every
/// publish fails with [`BusError::Unavailable`] and reaches nobody. Clones share the switch,
/// the subscribers and the counts.
#[derive(Clone, Debug, Default)]
pub struct SwitchableBus {
    inner: InProcessBus,
    refusing: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
    published: Arc<AtomicUsize>,
}

impl SwitchableBus {
    /// A bus that takes publishes.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Refuses every publish from now on (`true`), or takes them again (`false`).
    pub fn refuse(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    /// How many publishes were refused so far.
    #[must_use]
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    /// How many publishes were taken so far.
    #[must_use]
    pub fn published(&self) -> usize {
        self.published.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Bus for SwitchableBus {
    async fn publish(&self, message: &BusMessage) -> Result<(), BusError> {
        if self.refusing.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(BusError::Unavailable(
                "the switchable bus refuses publishes".to_owned(),
            ));
        }
        self.published.fetch_add(1, Ordering::SeqCst);
        self.inner.publish(message).await
    }

    async fn subscribe(&self, topics: &[Topic]) -> Result<Subscription, BusError> {
        self.inner.subscribe(topics).await
    }
}
