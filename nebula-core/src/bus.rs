//! The Bus seam: desired-state changes pushed to workers, each with its full document.

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::model::{App, AppName};

mod reports;

pub use reports::{MAX_BUFFERED_REPORTS, REPORT_PREFETCH, ReportBus};

/// A change, carrying everything a worker needs to apply it (no worker re-reads the store).
// Messages are built once and moved, so the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BusMessage {
    /// An app was created or changed.
    AppChanged {
        /// The new document.
        app: App,
    },
    /// An app was deleted.
    AppDeleted {
        /// The app.
        app_name: AppName,
        /// The incarnation that was deleted (a later one is not affected).
        incarnation: u64,
    },
}

impl BusMessage {
    /// The app the message is about.
    #[must_use]
    pub fn app_name(&self) -> &AppName {
        match self {
            Self::AppChanged { app } => &app.app_name,
            Self::AppDeleted { app_name, .. } => app_name,
        }
    }
}

/// What a subscriber wants to hear about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Every app.
    AllApps,
    /// One app.
    App(AppName),
}

impl Topic {
    /// Whether a message about `app` matches.
    #[must_use]
    pub fn matches(&self, app: &AppName) -> bool {
        match self {
            Self::AllApps => true,
            Self::App(name) => name == app,
        }
    }
}

/// Acknowledges a delivery once its effect is done.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Tells the broker the message is handled.
    async fn ack(self: Box<Self>) -> Result<(), BusError>;
}

/// One message received: a [`BusMessage`] on the [`Bus`], a worker report on the
/// [`ReportBus`].
pub struct Delivery<M = BusMessage> {
    /// The message.
    pub message: M,
    acker: Option<Box<dyn Acker>>,
}

impl<M: std::fmt::Debug> std::fmt::Debug for Delivery<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

impl<M> Delivery<M> {
    /// A delivery acknowledged by `acker` (or needing no ack).
    #[must_use]
    pub fn new(message: M, acker: Option<Box<dyn Acker>>) -> Self {
        Self { message, acker }
    }

    /// Acknowledges the delivery; call only after its effect is done.
    ///
    /// # Errors
    /// The broker's, when the ack could not be sent (the message will be delivered again).
    pub async fn ack(self) -> Result<(), BusError> {
        match self.acker {
            Some(a) => a.ack().await,
            None => Ok(()),
        }
    }
}

/// A stream of deliveries; `None` from [`Subscription::next`] means the connection was lost
/// and the subscriber should resync and subscribe again. Dropping it ends the subscription:
/// the deliveries it did not acknowledge are delivered again.
pub struct Subscription<M = BusMessage> {
    rx: mpsc::Receiver<Delivery<M>>,
    /// Dropped with the subscription, after `rx`: a backend's hook to take back what was not
    /// acknowledged.
    _on_end: Option<Box<dyn Send + Sync>>,
}

impl<M> std::fmt::Debug for Subscription<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl<M> Subscription<M> {
    /// Wraps the receiving end a backend feeds.
    #[must_use]
    pub fn new(rx: mpsc::Receiver<Delivery<M>>) -> Self {
        Self { rx, _on_end: None }
    }

    /// Wraps the receiving end a backend feeds, and `on_end`, dropped when the subscription
    /// is (after its receiver).
    #[must_use]
    pub fn with_end_hook(
        rx: mpsc::Receiver<Delivery<M>>,
        on_end: impl Send + Sync + 'static,
    ) -> Self {
        Self {
            rx,
            _on_end: Some(Box::new(on_end)),
        }
    }

    /// The next delivery, or `None` when the subscription ended.
    pub async fn next(&mut self) -> Option<Delivery<M>> {
        self.rx.recv().await
    }
}

/// Why a bus call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The broker cannot be reached now; workers still converge by polling.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
}

/// Publishes changes and delivers them to subscribers.
///
/// # Guarantees (checked by `testing::contract::bus`)
/// - Every subscriber whose topics match gets every message published after it subscribed,
///   in publish order.
/// - A subscriber never gets messages of topics it did not ask for.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes a message; returns once the broker has it.
    async fn publish(&self, message: &BusMessage) -> Result<(), BusError>;
    /// Subscribes to the given topics.
    async fn subscribe(&self, topics: &[Topic]) -> Result<Subscription, BusError>;
}

type Subscriber = (Vec<Topic>, mpsc::Sender<Delivery>);

/// The in-process bus of the single-process mode: tokio channels. App changes reach the
/// subscribers of the moment; reports wait in memory (at most [`MAX_BUFFERED_REPORTS`]) until
/// a manager subscribes. Nothing outlives the process.
#[derive(Clone, Debug, Default)]
pub struct InProcessBus {
    subscribers: std::sync::Arc<std::sync::Mutex<Vec<Subscriber>>>,
    reports: std::sync::Arc<std::sync::Mutex<reports::ReportQueue>>,
}

impl InProcessBus {
    /// A bus with no subscribers.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Bus for InProcessBus {
    async fn publish(&self, message: &BusMessage) -> Result<(), BusError> {
        let targets: Vec<mpsc::Sender<Delivery>> = {
            let mut subs = self
                .subscribers
                .lock()
                .map_err(|e| BusError::Unavailable(e.to_string()))?;
            subs.retain(|(_, tx)| !tx.is_closed());
            subs.iter()
                .filter(|(topics, _)| topics.iter().any(|t| t.matches(message.app_name())))
                .map(|(_, tx)| tx.clone())
                .collect()
        };
        for tx in targets {
            // A subscriber that went away is not an error of the publisher.
            let _ = tx.send(Delivery::new(message.clone(), None)).await;
        }
        Ok(())
    }

    async fn subscribe(&self, topics: &[Topic]) -> Result<Subscription, BusError> {
        let (tx, rx) = mpsc::channel(1024);
        self.subscribers
            .lock()
            .map_err(|e| BusError::Unavailable(e.to_string()))?
            .push((topics.to_vec(), tx));
        Ok(Subscription::new(rx))
    }
}
