//! The Bus seam: desired-state changes pushed to workers, each with its full document.

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::device_group::{DeviceGroupInfo, DeviceGroupName};
use crate::model::{App, AppName};

mod reports;

pub use reports::{MAX_BUFFERED_REPORTS, REPORT_PREFETCH, ReportBus};

/// A change, carrying everything a worker needs to apply it (no worker re-reads the store).
///
/// Each message says whom it is for ([`BusMessage::topics`]): a subscriber gets it once when
/// any of its topics matches any of them ([`BusMessage::is_for`]).
// Messages are built once and moved, so the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BusMessage {
    /// An app was created or changed.
    AppChanged {
        /// The new document.
        app: App,
        /// The device groups that list the app (filled in by the manager when it publishes),
        /// whose workers are told too. Absent from older envelopes, which reach the app's
        /// subscribers only.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        device_groups: Vec<DeviceGroupName>,
    },
    /// An app was deleted.
    AppDeleted {
        /// The app.
        app_name: AppName,
        /// The incarnation that was deleted (a later one is not affected).
        incarnation: u64,
        /// The device groups that listed the app, whose workers are told too.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        device_groups: Vec<DeviceGroupName>,
    },
    /// A device group was created or changed (membership, prune request, or a document of
    /// one of its apps or cron jobs): its whole state, as `/info` serves it.
    DeviceGroupChanged {
        /// The group.
        device_group: DeviceGroupName,
        /// The group's whole desired state: versions, apps and cron jobs with their documents.
        info: DeviceGroupInfo,
    },
    /// A device group was deleted.
    DeviceGroupDeleted {
        /// The group.
        device_group: DeviceGroupName,
        /// The incarnation that was deleted (a later one is not affected).
        incarnation: u64,
    },
}

impl BusMessage {
    /// An app change for the app's subscribers only.
    #[must_use]
    pub fn app_changed(app: App) -> Self {
        Self::AppChanged {
            app,
            device_groups: Vec::new(),
        }
    }

    /// The app the message is about, if it is about one.
    #[must_use]
    pub fn app_name(&self) -> Option<&AppName> {
        match self {
            Self::AppChanged { app, .. } => Some(&app.app_name),
            Self::AppDeleted { app_name, .. } => Some(app_name),
            Self::DeviceGroupChanged { .. } | Self::DeviceGroupDeleted { .. } => None,
        }
    }

    /// Whom the message is for, without repeats; the first is what it is about. An app
    /// message is for [`Topic::App`] of its app and [`Topic::DeviceGroup`] of each group that
    /// lists it; a group message for [`Topic::DeviceGroup`] of its group.
    #[must_use]
    pub fn topics(&self) -> Vec<Topic> {
        let (first, groups): (Topic, &[DeviceGroupName]) = match self {
            Self::AppChanged { app, device_groups } => {
                (Topic::App(app.app_name.clone()), device_groups)
            }
            Self::AppDeleted {
                app_name,
                device_groups,
                ..
            } => (Topic::App(app_name.clone()), device_groups),
            Self::DeviceGroupChanged { device_group, .. }
            | Self::DeviceGroupDeleted { device_group, .. } => {
                (Topic::DeviceGroup(device_group.clone()), &[])
            }
        };
        let mut topics = vec![first];
        for group in groups {
            let topic = Topic::DeviceGroup(group.clone());
            if !topics.contains(&topic) {
                topics.push(topic);
            }
        }
        topics
    }

    /// Whether a subscriber to `subscribed` gets the message: any of its topics matches any
    /// of the message's.
    #[must_use]
    pub fn is_for(&self, subscribed: &[Topic]) -> bool {
        let topics = self.topics();
        subscribed
            .iter()
            .any(|s| topics.iter().any(|t| s.matches(t)))
    }
}

/// What a subscriber wants to hear about, and whom a message is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Every app (not device group messages).
    AllApps,
    /// One app.
    App(AppName),
    /// One device group: its changes, and the changes of the apps it lists.
    DeviceGroup(DeviceGroupName),
}

impl Topic {
    /// Whether a subscription to this topic takes a message for `topic` (one of
    /// [`BusMessage::topics`]): the same topic, or any app for [`Topic::AllApps`].
    #[must_use]
    pub fn matches(&self, topic: &Topic) -> bool {
        match (self, topic) {
            (Self::AllApps, Self::AllApps | Self::App(_)) => true,
            (subscribed, topic) => subscribed == topic,
        }
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AllApps => f.write_str("every app"),
            Self::App(name) => write!(f, "app {name}"),
            Self::DeviceGroup(name) => write!(f, "device group {name}"),
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
/// - Every subscriber for which a message [is](BusMessage::is_for) gets every such message
///   published after it subscribed, once, in publish order.
/// - A subscriber never gets messages of topics it did not ask for: a device group's
///   subscriber hears its group and the apps the messages say the group lists, nothing of
///   other groups; a [`Topic::AllApps`] subscriber hears no group message.
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
                .filter(|(topics, _)| message.is_for(topics))
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
