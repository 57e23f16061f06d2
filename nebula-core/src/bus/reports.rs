//! Worker reports on the bus: the [`ReportBus`] seam, and the in-process bus's side of it.
//!
//! Workers publish; managers subscribe as competing consumers: each report goes to one of the
//! subscribed managers, which acknowledges it once stored. A report published while no
//! manager subscribes waits for one, and a report whose subscription ended before the ack is
//! delivered again, so a manager restart or a store outage loses none.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{Acker, BusError, Delivery, InProcessBus, Subscription};
use crate::report::WorkerReport;

/// How many unacknowledged reports the in-process bus hands one subscriber ahead.
pub const REPORT_PREFETCH: usize = 8;

/// The most reports the in-process bus keeps waiting for a subscriber; beyond it the oldest
/// waiting report is dropped (a later report of the same host says more).
pub const MAX_BUFFERED_REPORTS: usize = 10_000;

/// Carries worker reports to the managers.
///
/// # Guarantees (checked by `testing::contract::report_bus`)
/// - [`publish_report`](Self::publish_report) returns once the bus holds the report; a report
///   published while no manager subscribes waits until one does.
/// - Competing consumers: each report is delivered to one subscriber, not to every one, and
///   several subscribers share the reports.
/// - A report is done once its delivery is acknowledged ([`Delivery::ack`]), which the manager
///   does after storing it. A delivery not acknowledged when its subscription ends is
///   delivered again; an acknowledged one is not. (Delivery is at least once: a report whose
///   ack is lost comes twice.)
/// - A subscription that loses its connection ends (`next` gives `None`); the manager
///   subscribes again.
#[async_trait]
pub trait ReportBus: Send + Sync + 'static {
    /// Publishes a worker's report; returns once the bus holds it (persistent and confirmed on
    /// a broker).
    async fn publish_report(&self, report: &WorkerReport) -> Result<(), BusError>;
    /// Subscribes as one of the managers sharing the reports.
    async fn subscribe_reports(&self) -> Result<Subscription<WorkerReport>, BusError>;
}

/// The in-process bus's report queue: reports waiting, reports delivered and not yet
/// acknowledged, and the subscribers served in turn.
#[derive(Debug, Default)]
pub(super) struct ReportQueue {
    /// Waiting reports by delivery tag (tags rise with publish order, so a report taken back
    /// from an ended subscription returns to its place).
    ready: BTreeMap<u64, WorkerReport>,
    /// Delivered, not yet acknowledged: tag -> (subscriber id, report).
    unacked: BTreeMap<u64, (u64, WorkerReport)>,
    consumers: Vec<Consumer>,
    /// The index in `consumers` served next.
    turn: usize,
    next_tag: u64,
    next_consumer: u64,
}

#[derive(Debug)]
struct Consumer {
    id: u64,
    tx: mpsc::Sender<Delivery<WorkerReport>>,
    /// Delivered and not yet acknowledged; at most [`REPORT_PREFETCH`].
    in_flight: usize,
}

type Shared = Arc<Mutex<ReportQueue>>;

/// The queue, even if a panic elsewhere poisoned its lock (every change to it is completed
/// before anything can panic).
fn lock(queue: &Mutex<ReportQueue>) -> MutexGuard<'_, ReportQueue> {
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ReportQueue {
    /// Hands waiting reports to subscribers in turn, each up to its prefetch.
    fn dispatch(&mut self, shared: &Shared) {
        while !self.ready.is_empty() && !self.consumers.is_empty() {
            let n = self.consumers.len();
            let Some(i) = (0..n)
                .map(|k| (self.turn + k) % n)
                .find(|&i| self.consumers[i].in_flight < REPORT_PREFETCH)
            else {
                return;
            };
            let Some((tag, report)) = self.ready.pop_first() else {
                return;
            };
            let acker: Box<dyn Acker> = Box::new(InProcessAcker {
                queue: Arc::downgrade(shared),
                tag,
            });
            let consumer = &mut self.consumers[i];
            match consumer
                .tx
                .try_send(Delivery::new(report.clone(), Some(acker)))
            {
                Ok(()) => {
                    consumer.in_flight += 1;
                    self.unacked.insert(tag, (consumer.id, report));
                    self.turn = i + 1;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    // Its subscription is being dropped: take back what it held.
                    self.ready.insert(tag, report);
                    let id = consumer.id;
                    self.end(id);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // Cannot happen (the channel holds the prefetch); wait for an ack.
                    self.ready.insert(tag, report);
                    return;
                }
            }
        }
    }

    /// Ends subscriber `id`: its unacknowledged reports wait again, in their places.
    fn end(&mut self, id: u64) {
        if let Some(i) = self.consumers.iter().position(|c| c.id == id) {
            self.consumers.remove(i);
            if self.turn > i {
                self.turn -= 1;
            }
        }
        let taken: Vec<u64> = self
            .unacked
            .iter()
            .filter(|(_, (owner, _))| *owner == id)
            .map(|(tag, _)| *tag)
            .collect();
        for tag in taken {
            if let Some((_, report)) = self.unacked.remove(&tag) {
                self.ready.insert(tag, report);
            }
        }
    }
}

/// Acknowledges one in-process report delivery.
struct InProcessAcker {
    queue: Weak<Mutex<ReportQueue>>,
    tag: u64,
}

#[async_trait]
impl Acker for InProcessAcker {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        let ended = || {
            BusError::Unavailable(
                "the report's subscription ended before the ack; it will be delivered again"
                    .to_owned(),
            )
        };
        let shared = self.queue.upgrade().ok_or_else(ended)?;
        let mut queue = lock(&shared);
        let (id, _) = queue.unacked.remove(&self.tag).ok_or_else(ended)?;
        if let Some(c) = queue.consumers.iter_mut().find(|c| c.id == id) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
        queue.dispatch(&shared);
        Ok(())
    }
}

/// Ends its subscriber when the subscription is dropped.
struct EndHook {
    queue: Weak<Mutex<ReportQueue>>,
    id: u64,
}

impl Drop for EndHook {
    fn drop(&mut self) {
        if let Some(shared) = self.queue.upgrade() {
            let mut queue = lock(&shared);
            queue.end(self.id);
            queue.dispatch(&shared);
        }
    }
}

impl InProcessBus {
    /// Reports published and not yet acknowledged (waiting, or delivered and unacknowledged).
    #[must_use]
    pub fn report_backlog(&self) -> usize {
        let queue = lock(&self.reports);
        queue.ready.len() + queue.unacked.len()
    }
}

#[async_trait]
impl ReportBus for InProcessBus {
    async fn publish_report(&self, report: &WorkerReport) -> Result<(), BusError> {
        let mut queue = lock(&self.reports);
        let tag = queue.next_tag;
        queue.next_tag += 1;
        queue.ready.insert(tag, report.clone());
        if queue.ready.len() > MAX_BUFFERED_REPORTS {
            queue.ready.pop_first();
            tracing::warn!(
                max = MAX_BUFFERED_REPORTS,
                "no manager takes reports: the oldest waiting report was dropped"
            );
        }
        queue.dispatch(&self.reports);
        Ok(())
    }

    async fn subscribe_reports(&self) -> Result<Subscription<WorkerReport>, BusError> {
        let (tx, rx) = mpsc::channel(REPORT_PREFETCH);
        let mut queue = lock(&self.reports);
        let id = queue.next_consumer;
        queue.next_consumer += 1;
        queue.consumers.push(Consumer {
            id,
            tx,
            in_flight: 0,
        });
        queue.dispatch(&self.reports);
        Ok(Subscription::with_end_hook(
            rx,
            EndHook {
                queue: Arc::downgrade(&self.reports),
                id,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(host: &str) -> WorkerReport {
        WorkerReport {
            hostname: host.to_owned(),
            ..WorkerReport::default()
        }
    }

    #[tokio::test]
    async fn a_subscriber_gets_at_most_the_prefetch_ahead() {
        let bus = InProcessBus::new();
        for i in 0..REPORT_PREFETCH + 2 {
            bus.publish_report(&report(&format!("h{i}"))).await.unwrap();
        }
        let mut sub = bus.subscribe_reports().await.unwrap();
        let mut held = Vec::new();
        for i in 0..REPORT_PREFETCH {
            let d = sub.next().await.unwrap();
            assert_eq!(d.message.hostname, format!("h{i}"), "in publish order");
            held.push(d);
        }
        let early = tokio::time::timeout(std::time::Duration::from_millis(50), sub.next()).await;
        assert!(early.is_err(), "nothing beyond the prefetch before an ack");
        held.remove(0).ack().await.unwrap();
        assert_eq!(
            sub.next().await.unwrap().message.hostname,
            format!("h{REPORT_PREFETCH}")
        );
        assert_eq!(bus.report_backlog(), REPORT_PREFETCH + 1);
    }

    #[tokio::test]
    async fn the_buffer_keeps_the_newest_reports() {
        let bus = InProcessBus::new();
        for i in 0..=MAX_BUFFERED_REPORTS {
            bus.publish_report(&report(&format!("h{i}"))).await.unwrap();
        }
        assert_eq!(bus.report_backlog(), MAX_BUFFERED_REPORTS);
        let mut sub = bus.subscribe_reports().await.unwrap();
        assert_eq!(sub.next().await.unwrap().message.hostname, "h1");
    }

    #[tokio::test]
    async fn an_ack_after_the_subscription_ended_is_refused() {
        let bus = InProcessBus::new();
        bus.publish_report(&report("h")).await.unwrap();
        let mut sub = bus.subscribe_reports().await.unwrap();
        let d = sub.next().await.unwrap();
        drop(sub);
        assert!(d.ack().await.is_err(), "the report waits again instead");
        let mut again = bus.subscribe_reports().await.unwrap();
        let d = again.next().await.unwrap();
        assert_eq!(d.message.hostname, "h");
        d.ack().await.unwrap();
        assert_eq!(bus.report_backlog(), 0);
    }
}
