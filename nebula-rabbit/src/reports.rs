//! [`ReportBus`] on RabbitMQ: workers publish their reports to one durable queue that every
//! API manager takes from.
//!
//! ```text
//!  worker ── publish, confirm ──> exchange "nebula.reports" (direct, durable)
//!            key "report"                │
//!                                        └── report ──> queue "nebula.reports" (quorum, durable,
//!                                                        x-max-length, drop-head)
//!                                                          ├──> API manager 1 ─ store, then ack
//!                                                          └──> API manager 2 ─ store, then ack
//! ```
//!
//! - Publishers and consumers declare the same topology (exchange, queue, binding) on the
//!   channel they open, so a report published before any manager ever ran waits in the queue.
//! - One queue for the whole fleet, consumed by every API manager: competing consumers, each
//!   report stored once by one of them. It is a quorum queue (replicated on a cluster, and
//!   written to disk), since it holds reports no manager has stored yet; it is the fleet's one
//!   queue of the kind, not one per host.
//! - `x-max-length` ([`RabbitConfig::max_report_queue_length`](crate::RabbitConfig), overflow
//!   `drop-head`) bounds what a fleet can pile up while no manager takes reports; the newest
//!   reports are kept.
//! - Publishing is persistent, `mandatory` and confirmed: [`ReportBus::publish_report`]
//!   returns once the broker holds the report in the queue. A report the broker returns
//!   unroutable (the queue was deleted) is published again after declaring the topology anew.
//! - Consumers use manual acks and the prefetch of [`RabbitConfig`](crate::RabbitConfig); the
//!   manager acks after the store. A delivery not acked when its subscription or connection
//!   ends goes back to the queue and comes again.
//! - Bodies are never logged (a report lists the host's containers and images); an
//!   undecodable body is acked, logged by its size, and skipped.

use async_trait::async_trait;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};
use nebula_core::bus::{BusError, ReportBus, Subscription};
use nebula_core::report::WorkerReport;
use tokio::sync::mpsc;

use crate::bus::{RabbitBus, describe, pump, queue_args, short};
use crate::config::RabbitConfig;
use crate::wire;

/// AMQP `delivery_mode` of a persistent message.
const PERSISTENT: u8 = 2;

enum PublishError {
    Transport(lapin::Error),
    Nack,
    Unroutable,
    NotConfirmed,
}

/// Declares the report exchange, the shared queue and the binding between them.
async fn declare(channel: &Channel, c: &RabbitConfig) -> lapin::Result<()> {
    channel
        .exchange_declare(
            short(&c.report_exchange)?,
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let args = queue_args("quorum", c.max_report_queue_length);
    channel
        .queue_declare(
            short(&c.report_queue)?,
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await?;
    channel
        .queue_bind(
            short(&c.report_queue)?,
            short(&c.report_exchange)?,
            ShortString::from(wire::REPORT_ROUTING_KEY),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

impl RabbitBus {
    /// The report publisher channel, opening it (and the connection) when there is none.
    async fn report_publisher(&self) -> Result<Channel, BusError> {
        let mut slot = self.reports.publisher.lock().await;
        if let Some(channel) = slot.as_ref()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        *slot = None;
        let conn = self.connection().await?;
        let config = self.config();
        let opened = async {
            let channel = conn.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            declare(&channel, config).await?;
            Ok::<_, lapin::Error>(channel)
        };
        let channel = tokio::time::timeout(config.publish_timeout, opened)
            .await
            .map_err(|_| {
                self.unavailable(format_args!(
                    "no answer while declaring the report queue {} within {:?}",
                    config.report_queue, config.publish_timeout
                ))
            })?
            .map_err(|e| {
                self.unavailable(format_args!(
                    "declaring the report queue {}: {}",
                    config.report_queue,
                    describe(&e)
                ))
            })?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// Drops the report publisher channel after it failed, so the next report opens a fresh
    /// one and declares the topology again.
    async fn forget_report_publisher(&self) {
        *self.reports.publisher.lock().await = None;
    }

    /// One publish of a report on `channel`, waiting for the broker's confirm.
    async fn publish_report_on(
        &self,
        channel: &Channel,
        report: &WorkerReport,
        body: &[u8],
    ) -> Result<(), PublishError> {
        let c = self.config();
        let properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type(ShortString::from("application/json"))
            .with_type(ShortString::from(wire::REPORT_KIND))
            .with_message_id(short(&wire::report_id(report)).map_err(PublishError::Transport)?)
            .with_app_id(ShortString::from("nebula"))
            .with_timestamp(report.report_creation_time);
        let confirm = channel
            .basic_publish(
                short(&c.report_exchange).map_err(PublishError::Transport)?,
                ShortString::from(wire::REPORT_ROUTING_KEY),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                properties,
            )
            .await
            .map_err(PublishError::Transport)?;
        let confirmation = confirm.await.map_err(PublishError::Transport)?;
        if confirmation.is_nack() {
            Err(PublishError::Nack)
        } else if !confirmation.is_ack() {
            Err(PublishError::NotConfirmed)
        } else if confirmation.take_message().is_some() {
            Err(PublishError::Unroutable)
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl ReportBus for RabbitBus {
    async fn publish_report(&self, report: &WorkerReport) -> Result<(), BusError> {
        let body = wire::encode_report(report)
            .map_err(|e| self.unavailable(format_args!("cannot encode the report: {e}")))?;
        let timeout = self.config().publish_timeout;
        // One retry on a fresh channel: the first failure is often a connection that died
        // since the last report, or a report queue deleted since it was declared.
        let mut failure = String::new();
        for _ in 0..2 {
            let channel = self.report_publisher().await?;
            match tokio::time::timeout(timeout, self.publish_report_on(&channel, report, &body))
                .await
            {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(PublishError::Nack)) => {
                    return Err(self.unavailable("the broker refused the report (nack)"));
                }
                Ok(Err(PublishError::NotConfirmed)) => {
                    self.forget_report_publisher().await;
                    return Err(self.unavailable("the report channel is not in confirm mode"));
                }
                Ok(Err(PublishError::Unroutable)) => {
                    failure = format!(
                        "the report exchange {} routes to no queue",
                        self.config().report_exchange
                    );
                    tracing::debug!(error = %failure, "report returned; declaring the report queue again");
                    self.forget_report_publisher().await;
                }
                Ok(Err(PublishError::Transport(e))) => {
                    failure = describe(&e);
                    tracing::debug!(error = %failure, "report publish failed; retrying on a fresh channel");
                    self.forget_report_publisher().await;
                }
                Err(_) => {
                    self.forget_report_publisher().await;
                    return Err(self
                        .unavailable(format_args!("no confirm of the report within {timeout:?}")));
                }
            }
        }
        Err(self.unavailable(format_args!("report not published: {failure}")))
    }

    async fn subscribe_reports(&self) -> Result<Subscription<WorkerReport>, BusError> {
        let conn = self.connection().await?;
        let c = self.config();
        let setup = async {
            let channel = conn.create_channel().await?;
            channel
                .basic_qos(c.prefetch, BasicQosOptions::default())
                .await?;
            declare(&channel, c).await?;
            let consumer = channel
                .basic_consume(
                    short(&c.report_queue)?,
                    ShortString::from(""),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>((channel, consumer))
        };
        let (channel, consumer) = tokio::time::timeout(c.publish_timeout, setup)
            .await
            .map_err(|_| {
                self.unavailable(format_args!(
                    "no answer while subscribing to the report queue {} within {:?}",
                    c.report_queue, c.publish_timeout
                ))
            })?
            .map_err(|e| {
                self.unavailable(format_args!(
                    "subscribing to the report queue {}: {}",
                    c.report_queue,
                    describe(&e)
                ))
            })?;
        tracing::debug!(queue = %c.report_queue, "subscribed to reports");
        let (tx, rx) = mpsc::channel(usize::from(c.prefetch));
        let queue = c.report_queue.clone();
        tokio::spawn(pump(
            conn,
            channel,
            consumer,
            tx,
            queue.clone(),
            "report",
            move |d| {
                // A report lists the host's containers and images: never log the body, only its size.
                wire::decode_report(&d.data)
                .inspect_err(|e| {
                    tracing::warn!(%queue, bytes = d.data.len(), error = %e, "skipping an undecodable report");
                })
                .ok()
            },
        ));
        Ok(Subscription::new(rx))
    }
}
